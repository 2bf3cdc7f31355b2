#!/usr/bin/env bash
# Mounts scripts/slow-sync-fs.py at MOUNT: a pass-through FUSE file system (backed by
# MOUNT.backing) whose fsync waits DELAY_MS first, like storage in another zone, and whose
# lookups of names that do not exist wait LOOKUP_DELAY_MS (default 0), like NFS mounted with
# `lookupcache=positive` (the lease fence looks one up after every sync). Installs
# what it needs: Debian's libfuse2 when run as root, and the pinned fusepy of
# tests/interop/requirements.txt in the project's .venv. Unmount with `umount MOUNT`.
#
#   scripts/slow-sync-fs.sh /tmp/slow 1        # or: /tmp/slow 1 1
set -euo pipefail
cd "$(dirname "$0")/.."
MOUNT=${1:?usage: slow-sync-fs.sh MOUNT DELAY_MS [LOOKUP_DELAY_MS]}
DELAY_MS=${2:?usage: slow-sync-fs.sh MOUNT DELAY_MS [LOOKUP_DELAY_MS]}
LOOKUP_DELAY_MS=${3:-0}
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
ensure_libfuse2
[ -x .venv/bin/python ] || python3 -m venv .venv
if ! .venv/bin/python -c 'import fuse' 2>/dev/null; then
    .venv/bin/pip install -q --disable-pip-version-check "$(grep '^fusepy==' tests/interop/requirements.txt)"
fi
mkdir -p "$MOUNT" "$MOUNT.backing"
setsid nohup .venv/bin/python scripts/slow-sync-fs.py "$MOUNT.backing" "$MOUNT" "$DELAY_MS" "$LOOKUP_DELAY_MS" \
    >"$MOUNT.log" 2>&1 </dev/null &
for _ in $(seq 50); do
    grep -q " $MOUNT fuse" /proc/mounts && { echo "mounted $MOUNT (fsync +${DELAY_MS} ms, missing-name lookup +${LOOKUP_DELAY_MS} ms), log $MOUNT.log"; exit 0; }
    sleep 0.1
done
echo "error: $MOUNT did not mount; see $MOUNT.log" >&2
exit 1
