#!/usr/bin/env bash
# Issue 3's durable-confirm bar, A/B: 16 producers, window 1, persistent messages with
# receipts (STOMP) or publisher confirms (AMQP), against two or more `ferry` binaries and the
# raw pwrite + fdatasync loop (`ferry-perf raw-sync --batch 16`) in the same run. Rounds are
# interleaved (raw, bin1, bin2, ..., raw, bin1, ...) so the machine's noise hits all alike;
# each broker run gets a fresh data dir (same disk as raw-sync: /tmp). Prints one line per run
# and the medians, and each binary's median as a fraction of raw-sync's median.
#
#   scripts/durable-ab.sh BIN [BIN...]
#
# A BIN may carry its own arguments, quoted as one word: "target/release/ferry --shards 1".
#
# Environment: ROUNDS (3), URL_KIND (stomp|amqp, stomp), MESSAGES (3000 per producer),
# PRODUCERS (16), SHARDS (2), PORT (62613). Needs: jq. Stops every ferry it started.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
URL_KIND=${URL_KIND:-stomp}
MESSAGES=${MESSAGES:-3000}
PRODUCERS=${PRODUCERS:-16}
SHARDS=${SHARDS:-2}
PORT=${PORT:-62613}
PERF=target/release/ferry-perf
OUT=$(mktemp -d /tmp/durable-ab.XXXXXX)
FERRY_PID=
trap '[ -n "$FERRY_PID" ] && kill "$FERRY_PID" 2>/dev/null; rm -rf "$OUT"/data-*' EXIT

# shellcheck source=scripts/lib.sh
source scripts/lib.sh

run_ferry() { # "BIN [ARGS]" TAG ROUND
    local data="$OUT/data-$2-$3" cmd
    mkdir -p "$data"
    read -r -a cmd <<<"$1"
    case " $1 " in *" --shards "*) ;; *) cmd+=(--shards "$SHARDS") ;; esac
    "${cmd[@]}" --data-dir "$data" --listen "$URL_KIND=127.0.0.1:$PORT" >"$OUT/$2-$3.log" 2>&1 &
    FERRY_PID=$!
    wait_listening "$PORT" || true
    local extra=()
    [ "$URL_KIND" = stomp ] && extra=(--receipt-window 1)
    [ "$URL_KIND" = amqp ] && extra=(--receipt-window 1)
    timeout 180 "$PERF" throughput --url "$URL_KIND://127.0.0.1:$PORT" --producers "$PRODUCERS" --consumers 1 \
        --messages "$MESSAGES" --size 16 --persistent --receipts "${extra[@]}" --broker-pid "$FERRY_PID" \
        --json "$OUT/$2-$3.json" >/dev/null 2>&1 || true
    kill "$FERRY_PID"
    wait "$FERRY_PID" 2>/dev/null || true
    FERRY_PID=
    rm -rf "$data"
    local rate cpu tool ok
    rate=$(jq -r '.send.msg_per_s | floor' "$OUT/$2-$3.json" 2>/dev/null || echo 0)
    cpu=$(jq -r '.broker.cpu_s_per_million_msgs | floor' "$OUT/$2-$3.json" 2>/dev/null || echo 0)
    tool=$(jq -r '.tool.cpu_s_per_million_msgs | floor' "$OUT/$2-$3.json" 2>/dev/null || echo 0)
    ok=$(jq -r '(.verdict.lost == 0 and .verdict.duplicated == 0 and .receipted == .send.messages)' \
        "$OUT/$2-$3.json" 2>/dev/null || echo false)
    echo "$2 round $3: $rate msg/s, broker $cpu CPU-s/1M, ferry-perf $tool CPU-s/1M, clean=$ok"
    echo "$rate" >>"$OUT/$2.rates"
}

run_raw() { # ROUND
    mkdir -p "$OUT/raw"
    local line
    line=$("$PERF" raw-sync --dir "$OUT/raw" --batch "$PRODUCERS" --size 16 --seconds 3)
    rm -rf "$OUT/raw"
    echo "raw-sync round $1: $line"
    echo "$line" | sed -n 's/.*: \([0-9]*\) records\/s.*/\1/p' >>"$OUT/raw.rates"
}

for round in $(seq "$ROUNDS"); do
    run_raw "$round"
    i=0
    for bin in "$@"; do
        i=$((i + 1))
        run_ferry "$bin" "bin$i" "$round"
    done
done
raw=$(median <"$OUT/raw.rates")
echo "median raw-sync: $raw records/s"
i=0
for bin in "$@"; do
    i=$((i + 1))
    m=$(median <"$OUT/bin$i.rates")
    echo "median bin$i ($bin): $m msg/s = $(awk -v a="$m" -v b="$raw" 'BEGIN {printf "%.2f", a / b}') of raw-sync"
done
