"""`ferry-perf throughput --producer-threads K`: producers driven from K polling threads
(perf/src/mux.rs) instead of two threads each, against a real broker, over STOMP receipts and
AMQP publisher confirms. Every persistent message must be receipted (confirmed) once and
reach the consumer once; the broker's group-commit counters (`ferry_log_syncs_total`,
`ferry_log_sync_released_total` on /metrics) must account for every receipt, so the mean
group commit that `scripts/durable-ab.sh` compares the raw sync loop at is what the log did,
and `ferry_log_sync_duration_seconds` must have timed every one of those syncs."""

import json
import os
import subprocess
from pathlib import Path

import pytest

from conftest import REPO_ROOT, wait_for

PRODUCERS = 5
MESSAGES = 300
SYNC_TIMES = "ferry_log_sync_duration_seconds"


def perf_bin():
    p = Path(os.environ.get("FERRY_PERF_BIN", "target/debug/ferry-perf"))
    p = p if p.is_absolute() else REPO_ROOT / p
    if not p.exists():
        pytest.fail(f"ferry-perf not found at {p} (cargo build -p ferry-perf)", pytrace=False)
    return p


def run_perf(url, out, *extra):
    cmd = [str(perf_bin()), "throughput", "--url", url, "--producers", str(PRODUCERS), "--consumers", "1",
           "--messages", str(MESSAGES), "--size", "16", "--persistent", "--receipts", "--timeout-s", "60",
           "--drain-idle-s", "2", "--json", str(out), *extra]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.exists(), f"no report: rc={done.returncode}\n{done.stderr[-3000:]}"
    return done, json.loads(out.read_text())


@pytest.mark.parametrize("proto", ["stomp", "amqp"])
@pytest.mark.parametrize("threads,window", [(1, 1), (2, 4)])
def test_polled_producers_get_every_persistent_message_receipted_once(broker, tmp_path, proto, threads, window):
    port = broker.port if proto == "stomp" else broker.amqp_port
    # The histogram first: a sync that ends between two reads is then in its count too.
    times = broker.histogram(SYNC_TIMES)
    syncs = broker.metric("ferry_log_syncs_total")
    released = broker.metric("ferry_log_sync_released_total")
    done, report = run_perf(f"{proto}://{broker.host}:{port}", tmp_path / "report.json",
                            "--producer-threads", str(threads), "--receipt-window", str(window))
    total = PRODUCERS * MESSAGES
    assert done.returncode == 0, done.stderr[-3000:]
    assert report["error_count"] == 0, report["errors"]
    assert report["send"]["messages"] == total
    assert report["receipted"] == total
    verdict = report["verdict"]
    assert (verdict["lost"], verdict["duplicated"], verdict["received_unique"]) == (0, 0, total), verdict
    # Every receipt waited for a log sync, and no sync released more than the producers
    # can have in flight.
    synced = broker.metric("ferry_log_syncs_total") - syncs
    assert broker.metric("ferry_log_sync_released_total") - released >= total
    assert synced >= total / (PRODUCERS * window), synced
    # Every one of those syncs was timed: the histogram's count moved at least as the sync counter,
    # its buckets rise to that count, and the time they took is a positive sum.
    def timed_every_sync():
        after = broker.histogram(SYNC_TIMES)
        return after["count"] - times["count"] >= broker.metric("ferry_log_syncs_total") - syncs and after

    after = wait_for(timed_every_sync, timeout=5, what="the histogram's count to cover the sync counter")
    counts = [after["buckets"][le] for le in sorted(after["buckets"])]
    assert counts == sorted(counts) and counts[-1] == after["count"], after
    assert after["sum"] > times["sum"], (times, after)


def test_producer_threads_refuses_zero(broker, tmp_path):
    done = subprocess.run([str(perf_bin()), "throughput", "--url", f"stomp://{broker.host}:{broker.port}",
                           "--producer-threads", "0"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 1 and "--producer-threads must be at least 1" in done.stderr, done.stderr


def test_broker_cpu_is_split_by_thread_role(broker, tmp_path):
    """With --broker-pid, the report splits the broker's CPU by thread role; a shard's syncs run
    on a thread of their own, `ferry-log-N`, so that split tells the sync's CPU from the event
    loop's (scripts/durable-ab.sh prints both)."""
    done, report = run_perf(f"stomp://{broker.host}:{broker.port}", tmp_path / "report.json",
                            "--producer-threads", "1", "--broker-pid", str(broker.proc.pid))
    assert done.returncode == 0, done.stderr[-3000:]
    assert report["receipted"] == PRODUCERS * MESSAGES
    names = {(p / "comm").read_text().strip() for p in Path(f"/proc/{broker.proc.pid}/task").iterdir()}
    assert any(n.startswith("ferry-log-") for n in names), names
    assert any(n.startswith("ferry-shard-") for n in names), names
    roles = {t["role"]: t for t in report["broker_threads"]}
    assert "ferry-shard" in roles and roles["ferry-shard"]["cpu_s"] > 0, report["broker_threads"]
    assert not any(r[-1].isdigit() for r in roles), roles
    # The roles are a split of the broker's CPU, not more (the readings are moments apart).
    assert sum(t["cpu_s"] for t in roles.values()) <= report["broker"]["cpu_s"] + 0.05, report
    assert "broker cpu by thread (s per 1M msgs): ferry-shard " in done.stdout, done.stdout
