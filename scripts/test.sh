#!/usr/bin/env bash
# One command for a fresh machine: build the broker, run the Rust tests, then the
# Python interop suite (real stomp.py client against the real `ferry` binary).
# Runnable from any directory; safe to run repeatedly.
#   extra pytest args:  scripts/test.sh -k queue -x
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

VENV="$ROOT/.venv"
REQ="$ROOT/tests/interop/requirements.txt"

log() { printf '==> %s\n' "$*" >&2; }

# --- Python virtualenv -------------------------------------------------------------
if [[ ! -x "$VENV/bin/python" ]]; then
    if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
        if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
            log "installing python3-venv with apt-get"
            apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
        else
            echo "error: 'python3 -m venv' is unavailable; install python3-venv" >&2
            exit 1
        fi
    fi
    log "creating $VENV"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
fi

# libfuse2 for fusepy: test_group_commit.py mounts scripts/slow-sync-fs.py (a file system
# whose sync is slow, like network storage). Without it (not root, no apt) that test skips.
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"
ensure_libfuse2

# Reinstall only when requirements.txt changed since the last successful install.
STAMP="$VENV/.ferry-requirements.sha256"
want="$(sha256sum "$REQ" | cut -d' ' -f1)"
if [[ ! -f "$STAMP" || "$(cat "$STAMP")" != "$want" ]]; then
    log "installing Python test requirements"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$REQ"
    echo "$want" > "$STAMP"
fi

# --- Rust ------------------------------------------------------------------------
log "cargo fmt --check, cargo clippy -D warnings"
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings

log "cargo build -p ferry-engine --bin ferry; cargo build -p ferry-perf"
cargo build -p ferry-engine --bin ferry
cargo build -p ferry-perf

log "cargo test --workspace"
cargo test --workspace

FERRY_BIN="${FERRY_BIN:-$ROOT/target/debug/ferry}"
export FERRY_BIN

# --- Crash: kill -9 under confirmed load, restart, count lost/resurrected/duplicated ------
log "crash test (${CRASH_RUNS:-3} runs; CRASH_RUNS=50 for the full figure)"
"$VENV/bin/python" "$ROOT/tests/crash/crash_run.py" --runs "${CRASH_RUNS:-3}" --bin "$FERRY_BIN"
log "AMQP crash test (${CRASH_RUNS:-3} runs: confirms, transactional acks)"
"$VENV/bin/python" "$ROOT/tests/crash/crash_amqp.py" --runs "${CRASH_RUNS:-3}" --bin "$FERRY_BIN"
log "AMQP transaction crash test (${CRASH_RUNS:-3} runs: moves between queues, batches)"
"$VENV/bin/python" "$ROOT/tests/crash/crash_tx.py" --runs "${CRASH_RUNS:-3}" --bin "$FERRY_BIN"

# --- Interop ---------------------------------------------------------------------
log "pytest tests/interop (FERRY_BIN=$FERRY_BIN)"
"$VENV/bin/python" -m pytest "$ROOT/tests/interop" -q -p no:cacheprovider "$@"
