#!/usr/bin/env bash
# The MQTT rows of docs/PERFORMANCE.md (issue 6's bar): Ferry next to Mosquitto, interleaved
# (Ferry, Mosquitto, Ferry, ...), a fresh broker of each for every run:
#   - QoS 1 throughput, 16 B, 1 → 1 and 1 → 8 (`ferry-perf mqtt`);
#   - RSS growth per idle connection with CONNECTIONS held (`ferry-perf mqtt-idle`), Ferry
#     given 6 s to settle first (its log segments are mapped and touched at start).
#
#   scripts/compare-mqtt.sh [FERRY_BIN]      # default: target/release/ferry (built)
#
# Environment: ROUNDS (3), CONNECTIONS (10000), SHARDS (2), SKIP ("throughput" or "idle"),
# MOSQUITTO (/usr/sbin/mosquitto). Ports 18860 (Ferry), 18861 (Mosquitto), 18869 (admin).
# Prints one line per run, then the medians and ratios.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-10000}
SHARDS=${SHARDS:-2}
SKIP=${SKIP:-}
MOSQUITTO=${MOSQUITTO:-/usr/sbin/mosquitto}
if [ -z "${1:-}" ]; then
    cargo build --release -q -p ferry-perf -p ferry-engine
fi
FERRY=${1:-target/release/ferry}
cargo build --release -q -p ferry-perf
PERF=target/release/ferry-perf
ulimit -n $((CONNECTIONS * 2 + 1000)) 2>/dev/null || true

WORK=$(mktemp -d /tmp/ferry-compare-mqtt.XXXXXX)
printf 'listener 18861 127.0.0.1\nallow_anonymous true\nmax_connections -1\npersistence false\n' >"$WORK/mosquitto.conf"
BROKER=
trap '[ -n "$BROKER" ] && kill "$BROKER" 2>/dev/null; rm -rf "$WORK"' EXIT

start() { # ferry|mosquitto -> sets BROKER, PORT
    if [ "$1" = ferry ]; then
        rm -rf "$WORK/data"
        "$FERRY" --data-dir "$WORK/data" --shards "$SHARDS" --listen mqtt=127.0.0.1:18860 \
            --listen admin=127.0.0.1:18869 >>"$WORK/ferry.log" 2>&1 &
        BROKER=$! PORT=18860 SETTLE=6
    else
        "$MOSQUITTO" -c "$WORK/mosquitto.conf" >>"$WORK/mosquitto.log" 2>&1 &
        BROKER=$! PORT=18861 SETTLE=1
    fi
}
stop() { kill "$BROKER" 2>/dev/null; wait "$BROKER" 2>/dev/null || true; BROKER=; }

run() { # broker scenario -> prints the figure
    start "$1"
    case $2 in
    idle)
        sleep "$SETTLE"
        "$PERF" mqtt-idle --url "mqtt://127.0.0.1:$PORT" --connections "$CONNECTIONS" --broker-pid "$BROKER" \
            | sed -n 's/.*, \([0-9]*\) bytes per connection/\1/p' ;;
    *)
        sleep 1
        "$PERF" mqtt --url "mqtt://127.0.0.1:$PORT" --qos 1 --size 16 --subscribers "$2" \
            --messages "$([ "$2" = 1 ] && echo 200000 || echo 100000)" --broker-pid "$BROKER" 2>/dev/null \
            | awk '/delivery rate/ {print int($3)} /result: FAILED/ {print "FAILED"}' | tr '\n' ' ' ;;
    esac
    stop
}

scenarios="1 8 idle"
case $SKIP in
throughput) scenarios="idle" ;;
idle) scenarios="1 8" ;;
esac
for scenario in $scenarios; do
    for round in $(seq 1 "$ROUNDS"); do
        for broker in ferry mosquitto; do
            figure=$(run "$broker" "$scenario")
            echo "$scenario $broker $round $figure" | tee -a "$WORK/runs"
        done
    done
done

echo
echo "scenario   Ferry median   Mosquitto median   Ferry / Mosquitto   (1, 8: deliveries/s; idle: bytes per connection)"
for scenario in $scenarios; do
    f=$(awk -v s="$scenario" '$1 == s && $2 == "ferry" {print $4}' "$WORK/runs" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
    m=$(awk -v s="$scenario" '$1 == s && $2 == "mosquitto" {print $4}' "$WORK/runs" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
    awk -v s="$scenario" -v f="$f" -v m="$m" 'BEGIN {printf "%-10s %14s %18s %18.2f\n", s, f, m, (m > 0 ? f / m : 0)}'
done
