#!/usr/bin/env bash
# Issue 3's durable-confirm bar, A/B: 16 producers, window 1, persistent messages with
# receipts (STOMP) or publisher confirms (AMQP), against two or more `ferry` binaries and the
# raw pwrite + fdatasync loop (`ferry-perf raw-sync`) in the same run. Rounds are interleaved
# (raw, bin1, raw at bin1's batch, bin2, ...) so the machine's noise hits all alike; each
# broker run gets a fresh data dir (same disk as raw-sync: /tmp).
#
# Two raw baselines per round:
#   - batch = PRODUCERS: every group commit carrying one message of every producer, the
#     best batching 16 producers at window 1 allow;
#   - batch = the binary's own mean group commit in that round (receipts released per log
#     sync, from `/metrics` `ferry_log_sync_released_total / ferry_log_syncs_total`): "the
#     same batch sizes" of the issue. A binary without those metrics gets none.
# Each broker run also prints its syncs' mean wall time (`ferry_log_sync_duration_seconds`),
# to set beside raw-sync's p50.
# CEILING=1 adds, per round, the first binary under the same load with non-persistent messages
# (receipts and confirms then wait for no sync): what the same producers, sockets and broker
# reach without the log, the most any durable path could reach on this host.
# Prints one line per run, the medians, and each binary's median against both.
#
#   scripts/durable-ab.sh BIN [BIN...]
#
# A BIN may carry its own arguments, quoted as one word: "target/release/ferry --shards 1".
#
# Environment: ROUNDS (3), CEILING (0), URL_KIND (stomp|amqp, stomp), MESSAGES (3000 per producer),
# PRODUCERS (16), WINDOW (1), SHARDS (2), PORT (62613), ADMIN_PORT (62161), PERF_ARGS (more
# `ferry-perf throughput` options; default "--producer-threads 1", PERF_ARGS= for the threaded
# producers), DIR (where the data dirs and raw-sync's file go, /tmp: one disk for all; a
# network-like disk: scripts/slow-sync-fs.sh), SETTLE_S (seconds between the broker listening
# and the load, 0: a slow file system may still be making the first spare segment). Needs
# python3 (for JSON and the admin endpoint), nothing else beside the binaries, so it runs on a
# bare host. Stops every ferry it started.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
URL_KIND=${URL_KIND:-stomp}
MESSAGES=${MESSAGES:-3000}
PRODUCERS=${PRODUCERS:-16}
SHARDS=${SHARDS:-2}
PORT=${PORT:-62613}
ADMIN_PORT=${ADMIN_PORT:-62161}
WINDOW=${WINDOW:-1}
SETTLE_S=${SETTLE_S:-0}
CEILING=${CEILING:-0}
PERSISTENT=--persistent # cleared for the ceiling runs, which send 3x MESSAGES (they are quicker)
RUN_MESSAGES=$MESSAGES
# Polled producers by default: the threaded tool's two threads per producer cost this 2-core
# host about 32 CPU-us per message against about 20 (docs/PERFORMANCE.md, session 8).
read -r -a PERF_ARGS <<<"${PERF_ARGS-"--producer-threads 1"}"
PERF=target/release/ferry-perf
OUT=$(mktemp -d "${DIR:-/tmp}/durable-ab.XXXXXX")
FERRY_PID=
trap '[ -n "$FERRY_PID" ] && kill "$FERRY_PID" 2>/dev/null; rm -rf "$OUT"/data-*' EXIT

# shellcheck source=scripts/lib.sh
source scripts/lib.sh

run_ferry() { # "BIN [ARGS]" TAG ROUND
    local data="$OUT/data-$2-$3" cmd
    mkdir -p "$data"
    read -r -a cmd <<<"$1"
    case " $1 " in *" --shards "*) ;; *) cmd+=(--shards "$SHARDS") ;; esac
    "${cmd[@]}" --data-dir "$data" --listen "$URL_KIND=127.0.0.1:$PORT" --listen "admin=127.0.0.1:$ADMIN_PORT" \
        >"$OUT/$2-$3.log" 2>&1 &
    FERRY_PID=$!
    wait_listening "$PORT" || true
    sleep "$SETTLE_S"
    local syncs0 syncs1 released0 waits0 waited sum0 count0 sync_mean
    syncs0=$(metric ferry_log_syncs_total)
    released0=$(metric ferry_log_sync_released_total)
    waits0=$(metric ferry_log_sync_waits_total)
    sum0=$(metric ferry_log_sync_duration_seconds_sum)
    count0=$(metric ferry_log_sync_duration_seconds_count)
    timeout 180 "$PERF" throughput --url "$URL_KIND://127.0.0.1:$PORT" --producers "$PRODUCERS" --consumers 1 \
        --messages "$RUN_MESSAGES" --size 16 ${PERSISTENT:+"$PERSISTENT"} --receipts --receipt-window "$WINDOW" --broker-pid "$FERRY_PID" \
        ${PERF_ARGS[@]+"${PERF_ARGS[@]}"} --json "$OUT/$2-$3.json" >/dev/null 2>&1 || true
    syncs1=$(metric ferry_log_syncs_total)
    BATCH=$(awk -v s0="$syncs0" -v r0="$released0" -v s1="$syncs1" \
        -v r1="$(metric ferry_log_sync_released_total)" \
        'BEGIN { if (s0 == "" || s1 == "" || s1 <= s0) print 0; else { b = (r1 - r0) / (s1 - s0); print (b < 1) ? 1 : int(b + 0.5) } }')
    # Syncs that waited for their producers (group_commit_wait_us), as "W of S syncs".
    waited=$(awk -v w0="$waits0" -v w1="$(metric ferry_log_sync_waits_total)" -v s0="$syncs0" \
        -v s1="$syncs1" 'BEGIN { if (w0 != "" && w1 != "") print ", waited in " w1 - w0 " of " s1 - s0 " syncs" }')
    # The mean wall time of its syncs (`ferry_log_sync_duration_seconds`), beside raw-sync's p50.
    sync_mean=$(awk -v a0="$sum0" -v a1="$(metric ferry_log_sync_duration_seconds_sum)" -v c0="$count0" \
        -v c1="$(metric ferry_log_sync_duration_seconds_count)" \
        'BEGIN { if (a0 != "" && a1 != "" && c1 > c0) printf ", mean sync %.0fµs", (a1 - a0) / (c1 - c0) * 1e6 }')
    kill "$FERRY_PID"
    wait "$FERRY_PID" 2>/dev/null || true
    FERRY_PID=
    rm -rf "$data"
    local rate cpu tool ok log_cpu roles
    read -r rate cpu tool ok log_cpu roles < <(json_summary "$OUT/$2-$3.json")
    # The log threads' CPU per sync, beside raw-sync's "cpu µs/sync".
    local log_per_sync
    log_per_sync=$(awk -v c="$log_cpu" -v s0="$syncs0" -v s1="$syncs1" \
        'BEGIN { if (s0 != "" && s1 != "" && s1 > s0 && c > 0) printf ", log thread %.0fµs CPU/sync", c * 1e6 / (s1 - s0) }')
    # A non-persistent (ceiling) run syncs only its queue declaration: no group-commit figures.
    local commits=", non-persistent"
    [ -n "$PERSISTENT" ] && commits=", mean group commit $BATCH$waited$sync_mean$log_per_sync"
    echo "$2 round $3: $rate msg/s, broker $cpu CPU-s/1M${roles:+ ($roles)}, ferry-perf $tool CPU-s/1M, clean=$ok$commits"
    echo "$rate" >>"$OUT/$2.rates"
}

# The admin endpoint's counter NAME (empty when the binary has none).
metric() {
    python3 - "$1" "$ADMIN_PORT" <<'PY' 2>/dev/null || true
import base64, sys, urllib.request
req = urllib.request.Request(f"http://127.0.0.1:{sys.argv[2]}/metrics")
req.add_header("Authorization", "Basic " + base64.b64encode(b"guest:guest").decode())
for line in urllib.request.urlopen(req, timeout=2).read().decode().splitlines():
    parts = line.split()
    if len(parts) == 2 and parts[0] == sys.argv[1]:
        print(parts[1])
PY
}

# "rate broker-cpu tool-cpu clean log-cpu-s roles" from a `ferry-perf throughput --json` file
# ("0 0 0 false 0" when the run wrote none); log-cpu-s is the CPU seconds of the shards' sync
# threads (`ferry-log-N`), roles the broker's CPU per thread role, "shard 28.5, log 9.0"
# (CPU-s/1M: the shards' event loops, their sync threads); 0 and empty from an older ferry-perf.
json_summary() {
    python3 - "$1" <<'PY' 2>/dev/null || echo "0 0 0 false 0"
import json, sys
r = json.load(open(sys.argv[1]))
clean = r["verdict"]["lost"] == 0 and r["verdict"]["duplicated"] == 0 and r["receipted"] == r["send"]["messages"]
roles = ", ".join(f'{t["role"].removeprefix("ferry-")} {t["cpu_s_per_million_msgs"]:.1f}'
                  for t in r.get("broker_threads", []) if t["role"] in ("ferry-shard", "ferry-log"))
log_cpu = sum(t["cpu_s"] for t in r.get("broker_threads", []) if t["role"] == "ferry-log")
print(int(r["send"]["msg_per_s"]), int(r["broker"]["cpu_s_per_million_msgs"]),
      int(r["tool"]["cpu_s_per_million_msgs"]), str(clean).lower(), log_cpu, roles)
PY
}

run_raw() { # BATCH TAG ROUND
    mkdir -p "$OUT/raw"
    local line
    line=$("$PERF" raw-sync --dir "$OUT/raw" --batch "$1" --size 16 --seconds 3)
    rm -rf "$OUT/raw"
    echo "raw-sync ($2) round $3: $line"
    echo "$line" | sed -n 's/.*: \([0-9]*\) records\/s.*/\1/p' >>"$OUT/$2.rates"
}

for round in $(seq "$ROUNDS"); do
    run_raw "$PRODUCERS" raw "$round"
    i=0
    for bin in "$@"; do
        i=$((i + 1))
        run_ferry "$bin" "bin$i" "$round"
        [ "$BATCH" -gt 0 ] && run_raw "$BATCH" "raw-bin$i" "$round"
    done
    if [ "$CEILING" = 1 ]; then
        PERSISTENT= RUN_MESSAGES=$((MESSAGES * 3))
        run_ferry "$1" ceiling "$round"
        PERSISTENT=--persistent RUN_MESSAGES=$MESSAGES
    fi
done
raw=$(median <"$OUT/raw.rates")
echo "median raw-sync (batch $PRODUCERS): $raw records/s"
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
i=0
for bin in "$@"; do
    i=$((i + 1))
    m=$(median <"$OUT/bin$i.rates")
    line="median bin$i ($bin): $m msg/s = $(ratio "$m" "$raw") of raw-sync at batch $PRODUCERS"
    if [ -s "$OUT/raw-bin$i.rates" ]; then
        matched=$(median <"$OUT/raw-bin$i.rates")
        line+=", $(ratio "$m" "$matched") of raw-sync at its own batch ($matched records/s)"
    fi
    echo "$line"
done
if [ "$CEILING" = 1 ]; then
    c=$(median <"$OUT/ceiling.rates")
    echo "median ceiling ($1, non-persistent): $c msg/s = $(ratio "$c" "$raw") of raw-sync at batch $PRODUCERS;" \
        "bin1 durable = $(ratio "$(median <"$OUT/bin1.rates")" "$c") of it"
fi
