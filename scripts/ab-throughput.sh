#!/usr/bin/env bash
# A/B two or more `ferry` binaries on one throughput scenario: each round starts each binary on
# a fresh data dir, runs `ferry-perf throughput` against it (1M messages of 16 B by default,
# client-individual acks, prefetch 1000) and stops it; rounds are interleaved (A B A B ...)
# so the machine's noise hits every binary alike. Prints one line per run, then per binary
# the sorted msg/s and broker CPU-s per million and their medians. This is how session 6's
# per-message changes were measured (docs/PERFORMANCE.md).
#
#   scripts/ab-throughput.sh BIN [BIN...]
#
# Environment: ROUNDS (8), PROTO (amqp|stomp, amqp), P (producers = queues = consumers, 1),
# N (messages per producer, 1000000 / P), SHARDS (2), PORT (62690), PERF_ARGS (more
# `ferry-perf throughput` options, e.g. "--persistent --receipts"). Needs: jq.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-8}
PROTO=${PROTO:-amqp}
P=${P:-1}
N=${N:-$((1000000 / P))}
SHARDS=${SHARDS:-2}
PORT=${PORT:-62690}
PERF=target/release/ferry-perf
read -r -a PERF_ARGS <<<"${PERF_ARGS:-}"
OUT=$(mktemp -d /tmp/ab-throughput.XXXXXX)
BROKER=
trap '[ -n "$BROKER" ] && kill "$BROKER" 2>/dev/null; rm -rf "$OUT"' EXIT
[ $# -ge 1 ] || { echo "usage: $0 BIN [BIN...]" >&2; exit 2; }

# shellcheck source=scripts/lib.sh
source scripts/lib.sh

for round in $(seq "$ROUNDS"); do
    for i in $(seq $#); do
        bin=${!i}
        rm -rf "$OUT/data" && mkdir "$OUT/data"
        "$bin" --shards "$SHARDS" --data-dir "$OUT/data" --listen "$PROTO=127.0.0.1:$PORT" >"$OUT/broker.log" 2>&1 &
        BROKER=$!
        wait_listening "$PORT" || true
        timeout 120 "$PERF" throughput --url "$PROTO://127.0.0.1:$PORT" --login guest --passcode guest \
            --producers "$P" --queues "$P" --consumers "$P" --messages "$N" --size 16 \
            --ack client-individual --prefetch 1000 --broker-pid "$BROKER" ${PERF_ARGS[@]+"${PERF_ARGS[@]}"} \
            --json "$OUT/run.json" >/dev/null 2>&1 || true
        kill "$BROKER" && wait "$BROKER" 2>/dev/null || true
        BROKER=
        rate=$(jq -r 'if .verdict.lost == 0 and .verdict.duplicated == 0 then .receive.msg_per_s | floor else 0 end' "$OUT/run.json" 2>/dev/null || echo 0)
        cpu=$(jq -r '.broker.cpu_s_per_million_msgs * 100 | round / 100' "$OUT/run.json" 2>/dev/null || echo 0)
        rm -f "$OUT/run.json"
        echo "round $round bin$i: $rate msg/s, broker $cpu CPU-s/1M"
        echo "$rate $cpu" >>"$OUT/bin$i"
    done
done
for i in $(seq $#); do
    echo "bin$i (${!i}): msg/s $(cut -d' ' -f1 "$OUT/bin$i" | sort -g | tr '\n' ' ')median $(cut -d' ' -f1 "$OUT/bin$i" | median)"
    echo "      CPU-s/1M $(cut -d' ' -f2 "$OUT/bin$i" | sort -g | tr '\n' ' ')median $(cut -d' ' -f2 "$OUT/bin$i" | median)"
done
