#!/usr/bin/env bash
# The AMQP 0-9-1 rows of docs/PERFORMANCE.md: starts a release `ferry` (AMQP only) on a fresh
# data dir and a throwaway RabbitMQ node (scripts/rabbitmq-peer.sh), then runs
# `ferry-perf compare` (Ferry first, as the baseline) scenario by scenario, interleaved rounds.
#
#   scripts/compare-amqp.sh [OUT_DIR]     # JSON per scenario lands in OUT_DIR (default: a temp dir)
#
# Environment: SHARDS (2), REPEAT (3), FERRY_PORT (5673), RABBITMQ_PORT (5692), PREFETCH (1000),
# SCENARIOS ("ack1 ack4"), SCALE (1: multiplies every message count), PEER_SCALE (1: multiplies
# RabbitMQ's counts only; 10 gives it the same workload as Ferry, a backlog as deep).
# Both brokers are stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${1:-$(mktemp -d /tmp/ferry-compare-amqp.XXXXXX)}
SHARDS=${SHARDS:-2}
REPEAT=${REPEAT:-3}
FERRY_PORT=${FERRY_PORT:-5673}
RABBITMQ_PORT=${RABBITMQ_PORT:-5692}
PREFETCH=${PREFETCH:-1000}
SCENARIOS=${SCENARIOS:-"ack1 ack4"}
SCALE=${SCALE:-1}
PEER_SCALE=${PEER_SCALE:-1}
mkdir -p "$OUT"

cargo build --release -q -p ferry-perf -p ferry-engine
PERF=target/release/ferry-perf

DATA=$(mktemp -d /tmp/ferry-compare-data.XXXXXX)
target/release/ferry --shards "$SHARDS" --data-dir "$DATA" --listen "amqp=127.0.0.1:$FERRY_PORT" \
    >"$OUT/ferry.log" 2>&1 &
FERRY_PID=$!
RABBIT_PID=""
RABBIT_DIR=""
cleanup() {
    kill "$FERRY_PID" 2>/dev/null || true
    wait "$FERRY_PID" 2>/dev/null || true
    rm -rf "$DATA"
    if [ -n "$RABBIT_PID" ]; then
        kill "$RABBIT_PID" 2>/dev/null || true
        while kill -0 "$RABBIT_PID" 2>/dev/null; do sleep 0.2; done
        cp "$RABBIT_DIR/server.log" "$OUT/rabbitmq.log" 2>/dev/null || true
        rm -rf "$RABBIT_DIR"
    fi
}
trap cleanup EXIT
read -r RABBIT_PID RABBIT_DIR < <(scripts/rabbitmq-peer.sh "$RABBITMQ_PORT")

run() {
    local name=$1 ferry_msgs=$2 peer_msgs=$3
    shift 3
    echo "== $name (AMQP 0-9-1)" | tee -a "$OUT/summary.txt"
    $PERF compare \
        --broker "ferry=amqp://127.0.0.1:$FERRY_PORT,pid=$FERRY_PID,messages=$((ferry_msgs * SCALE))" \
        --broker "rabbitmq=amqp://127.0.0.1:$RABBITMQ_PORT,pid=$RABBIT_PID,messages=$((peer_msgs * SCALE * PEER_SCALE))" \
        --repeat "$REPEAT" --login guest --passcode guest --prefetch "$PREFETCH" \
        --size 16 --timeout-s 120 --json "$OUT/$name.json" "$@" 2>>"$OUT/runs.log" | tee -a "$OUT/summary.txt" || true
}

for s in $SCENARIOS; do
    case $s in
    ack1) run ack1 1000000 100000 --producers 1 --queues 1 --consumers 1 --ack client-individual ;;
    ack4) run ack4 250000 25000 --producers 4 --queues 4 --consumers 4 --ack client-individual ;;
    auto1) run auto1 1000000 150000 --producers 1 --queues 1 --consumers 1 --ack auto ;;
    durable1)
        run durable1 500000 10000 --producers 1 --queues 1 --consumers 1 --ack client-individual \
            --persistent --receipts
        ;;
    *) echo "compare-amqp.sh: unknown scenario $s" >&2 ;;
    esac
done
echo "results in $OUT (summary.txt, one JSON per scenario, runs.log, ferry.log, rabbitmq.log)"
