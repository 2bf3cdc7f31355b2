# Helpers shared by the A/B scripts (`source "$(dirname "$0")/lib.sh"`).

# True while something listens on 127.0.0.1:PORT (IPv4 LISTEN sockets in /proc/net/tcp).
listening() { grep -q "$(printf ':%04X 00000000:0000 0A' "$1")" /proc/net/tcp 2>/dev/null; }

# Waits up to 10 s for a listener on PORT.
wait_listening() { for _ in $(seq 100); do listening "$1" && return 0; sleep 0.1; done; return 1; }

# The median of the numbers on stdin, one per line (the mean of the middle two for an even count).
median() { sort -g | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
