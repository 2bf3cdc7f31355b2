# Helpers shared by the A/B scripts (`source "$(dirname "$0")/lib.sh"`).

# True while something listens on 127.0.0.1:PORT (IPv4 LISTEN sockets in /proc/net/tcp).
listening() { grep -q "$(printf ':%04X 00000000:0000 0A' "$1")" /proc/net/tcp 2>/dev/null; }

# Waits up to 10 s for a listener on PORT.
wait_listening() { for _ in $(seq 100); do listening "$1" && return 0; sleep 0.1; done; return 1; }

# The median of the numbers on stdin, one per line (the mean of the middle two for an even count).
median() { sort -g | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }

# Installs Debian's libfuse2 (for fusepy: scripts/slow-sync-fs.py) when it is missing and this
# is root with apt-get; otherwise leaves it to the caller to notice. Used by scripts/test.sh
# and scripts/slow-sync-fs.sh.
ensure_libfuse2() {
    ldconfig -p 2>/dev/null | grep -q 'libfuse\.so\.2' && return 0
    [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1 || return 0
    echo "==> installing libfuse2 with apt-get" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libfuse2 >/dev/null 2>&1 || {
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libfuse2 >/dev/null
    }
}
