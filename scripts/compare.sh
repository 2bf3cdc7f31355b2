#!/usr/bin/env bash
# The docs/PERFORMANCE.md scenario matrix: starts a release `ferry` on a fresh data dir and
# runs `ferry-perf compare` (Ferry first, as the baseline) against the peer brokers that are
# listening on their docs/PEERS.md ports, one scenario after another, interleaved rounds.
#
#   scripts/compare.sh [OUT_DIR]          # JSON per scenario lands in OUT_DIR (default: a temp dir)
#
# Environment: SHARDS (2), REPEAT (3), FERRY_PORT (61613), RABBITMQ_PORT (61623),
# ACTIVEMQ_PORT (61633), SCENARIOS ("ack1 auto1 ack4 durable1"), FERRY_CONFIG (a TOML file),
# SCALE (1: multiplies every message count). Peers that are not listening are left out.
# Ferry's message counts keep every queue under its default queue_message_count_max (1,000,000):
# a fire-and-forget SEND to a full queue is dropped without an ERROR (see docs/PERFORMANCE.md).
# Needs: cargo, ss (iproute2). Stops the ferry it started on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${1:-$(mktemp -d /tmp/ferry-compare.XXXXXX)}
SHARDS=${SHARDS:-2}
REPEAT=${REPEAT:-3}
FERRY_PORT=${FERRY_PORT:-61613}
RABBITMQ_PORT=${RABBITMQ_PORT:-61623}
ACTIVEMQ_PORT=${ACTIVEMQ_PORT:-61633}
SCENARIOS=${SCENARIOS:-"ack1 auto1 ack4 durable1"}
SCALE=${SCALE:-1}
mkdir -p "$OUT"

cargo build --release -q -p ferry-perf -p ferry-engine
PERF=target/release/ferry-perf

# pid of the process listening on 127.0.0.1:PORT, or nothing.
pid_on_port() {
    ss -ltnpH "sport = :$1" 2>/dev/null | sed -n 's/.*pid=\([0-9]*\).*/\1/p' | head -1
}

if [ -n "$(pid_on_port "$FERRY_PORT")" ]; then
    echo "compare.sh: port $FERRY_PORT is taken; stop that process or set FERRY_PORT" >&2
    exit 1
fi
DATA=$(mktemp -d /tmp/ferry-compare-data.XXXXXX)
CONFIG_ARGS=()
if [ -n "${FERRY_CONFIG:-}" ]; then CONFIG_ARGS=(--config "$FERRY_CONFIG"); fi
target/release/ferry "${CONFIG_ARGS[@]}" --shards "$SHARDS" --data-dir "$DATA" \
    --listen "stomp=127.0.0.1:$FERRY_PORT" >"$OUT/ferry.log" 2>&1 &
FERRY_PID=$!
trap 'kill "$FERRY_PID" 2>/dev/null; wait "$FERRY_PID" 2>/dev/null; rm -rf "$DATA"' EXIT
for _ in $(seq 100); do
    [ -n "$(pid_on_port "$FERRY_PORT")" ] && break
    sleep 0.1
done

# brokers MESSAGES_FERRY MESSAGES_PEER: the --broker arguments, Ferry first.
brokers() {
    echo "--broker ferry=stomp://127.0.0.1:$FERRY_PORT,pid=$FERRY_PID,messages=$(($1 * SCALE))"
    local pid
    pid=$(pid_on_port "$RABBITMQ_PORT")
    [ -n "$pid" ] && echo "--broker rabbitmq=stomp://127.0.0.1:$RABBITMQ_PORT,pid=$pid,messages=$(($2 * SCALE))"
    pid=$(pid_on_port "$ACTIVEMQ_PORT")
    [ -n "$pid" ] && echo "--broker activemq=stomp://127.0.0.1:$ACTIVEMQ_PORT,pid=$pid,messages=$(($2 * SCALE))"
    return 0
}

run() {
    local name=$1 ferry_msgs=$2 peer_msgs=$3
    shift 3
    echo "== $name" | tee -a "$OUT/summary.txt"
    # shellcheck disable=SC2046 # word splitting of the --broker list is intended
    $PERF compare $(brokers "$ferry_msgs" "$peer_msgs") --repeat "$REPEAT" --login guest --passcode guest \
        --size 16 --timeout-s 120 --json "$OUT/$name.json" "$@" 2>>"$OUT/runs.log" | tee -a "$OUT/summary.txt" || true
}

for s in $SCENARIOS; do
    case $s in
    ack1) run ack1 1000000 100000 --producers 1 --queues 1 --consumers 1 --ack client-individual ;;
    auto1) run auto1 1000000 150000 --producers 1 --queues 1 --consumers 1 --ack auto ;;
    ack4) run ack4 250000 25000 --producers 4 --queues 4 --consumers 4 --ack client-individual ;;
    durable1)
        run durable1 500000 10000 --producers 1 --queues 1 --consumers 1 --ack client-individual \
            --persistent --receipts
        ;;
    *) echo "compare.sh: unknown scenario $s" >&2 ;;
    esac
done
echo "results in $OUT (summary.txt, one JSON per scenario, runs.log, ferry.log)"
