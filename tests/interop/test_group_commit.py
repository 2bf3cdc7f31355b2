"""Group commit on slow storage (engine/src/gather.rs). Producers that wait for every receipt
split into two cohorts, each sync carrying half of them, unless a sync waits for the
producers the previous one released. The broker's log lives on scripts/slow-sync-fs.py, a
pass-through FUSE file system whose fsync first waits SYNC_DELAY_MS (storage a network round
trip away, as in the active/standby deployment). PRODUCERS stomp.py producers each send
persistent messages one at a time, waiting for every receipt. With `group_commit_wait_us`
on, a sync carries nearly all of them and /metrics counts the waits; with it 0, about half,
and no wait. Either way every message is receipted and consumed exactly once.

Needs /dev/fuse, libfuse2 and fusepy (scripts/test.sh installs the last two); skipped, with
the reason, where the kernel has no FUSE."""

import os
import subprocess
import sys
import threading

import pytest
import stomp

from conftest import REPO_ROOT, Collector, close_conn, send_sync, subscribe_sync, uniq, wait_for

SYNC_DELAY_MS = 20
SYNC_TIMES = "ferry_log_sync_duration_seconds"
PRODUCERS = 8
MESSAGES = 40  # per producer
# Small segments: the FUSE file system zero-fills them a write at a time.
CONFIG = """segment_size_bytes = 4194304
group_commit_wait_us = {wait_us}
[limits]
frame_size_bytes_max = 1048576
"""


def mounted(path):
    with open("/proc/mounts") as mounts:
        return any(line.split()[1] == str(path) for line in mounts)


@pytest.fixture
def slow_fs(tmp_path):
    if not os.path.exists("/dev/fuse"):
        pytest.skip("no /dev/fuse: this kernel cannot mount the slow-sync file system")
    try:
        import fuse  # noqa: F401  (fusepy; loads libfuse.so.2)
    except (ImportError, OSError) as e:
        pytest.skip(f"fusepy or libfuse2 missing ({e}); scripts/test.sh installs them")
    backing, mount = tmp_path / "backing", tmp_path / "slow"
    backing.mkdir()
    mount.mkdir()
    log = open(tmp_path / "slow-sync-fs.log", "wb")
    proc = subprocess.Popen([sys.executable, str(REPO_ROOT / "scripts" / "slow-sync-fs.py"), str(backing), str(mount),
                             str(SYNC_DELAY_MS)], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: mounted(mount) or proc.poll() is not None, timeout=10, what="the FUSE mount")
        if not mounted(mount):
            pytest.fail(f"slow-sync-fs did not mount: {(tmp_path / 'slow-sync-fs.log').read_text()[-2000:]}")
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def connect(broker):
    conn = stomp.Connection12([broker.addr], reconnect_attempts_max=1, heartbeats=(0, 0))
    listener = Collector()
    conn.set_listener("collector", listener)
    conn.connect("guest", "guest", wait=True)
    return conn, listener


def produce_and_consume(broker):
    """Runs the load; returns (mean group commit, syncs that waited) over the producing phase."""
    queue = f"/queue/{uniq('gc')}"
    consumer, received = connect(broker)
    conns = [consumer]
    try:
        subscribe_sync(consumer, received, queue)
        producers = [connect(broker) for _ in range(PRODUCERS)]
        conns += [c for c, _ in producers]
        # The histogram first: a sync that ends between two reads is then in its count too.
        times = broker.histogram(SYNC_TIMES)
        syncs = broker.metric("ferry_log_syncs_total")
        released = broker.metric("ferry_log_sync_released_total")
        waits = broker.metric("ferry_log_sync_waits_total")
        failures = []

        def produce(index, conn, listener):
            try:
                for n in range(MESSAGES):
                    send_sync(conn, listener, queue, f"{index}-{n}", headers={"persistent": "true"})
            except Exception as e:  # noqa: BLE001  (reported below, with the producer)
                failures.append(f"producer {index}: {e}")

        threads = [threading.Thread(target=produce, args=(i, c, lis)) for i, (c, lis) in enumerate(producers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not failures, failures
        syncs = broker.metric("ferry_log_syncs_total") - syncs
        released = broker.metric("ferry_log_sync_released_total") - released
        waits = broker.metric("ferry_log_sync_waits_total") - waits
        # Every sync went through the file system's fsync, which sleeps SYNC_DELAY_MS first: the
        # sync-time histogram must put none of them under half of that, and their mean above it.
        after = broker.histogram(SYNC_TIMES)
        timed = after["count"] - times["count"]
        assert timed >= syncs > 0, (timed, syncs)
        fast = max(le for le in after["buckets"] if le <= SYNC_DELAY_MS / 2000)
        assert after["buckets"][fast] == times["buckets"][fast], f"syncs under {fast}s: {times} -> {after}"
        assert (after["sum"] - times["sum"]) / timed >= SYNC_DELAY_MS / 1000, (times, after)
        total = PRODUCERS * MESSAGES
        bodies = [m.body for m in received.wait_messages(total, timeout=30)]
        assert sorted(bodies) == sorted(f"{i}-{n}" for i in range(PRODUCERS) for n in range(MESSAGES)), \
            "every message consumed exactly once"
        assert released >= total, "every receipt was released by a sync"
        return released / syncs, waits
    finally:
        for c in conns:
            close_conn(c)


def test_on_slow_storage_a_sync_waits_for_the_producers_it_released(slow_fs, broker_factory):
    gathering = broker_factory(config=CONFIG.format(wait_us=20000), data_dir=slow_fs / "gathering", name="gathering")
    batch, waits = produce_and_consume(gathering)
    gathering.stop()
    plain = broker_factory(config=CONFIG.format(wait_us=0), data_dir=slow_fs / "plain", name="plain")
    plain_batch, plain_waits = produce_and_consume(plain)
    assert plain_waits == 0, "group_commit_wait_us = 0 never waits"
    assert batch >= 0.75 * PRODUCERS, f"mean group commit {batch:.1f} with gathering, {plain_batch:.1f} without"
    assert waits > 0
    assert plain_batch <= 0.7 * PRODUCERS, \
        f"without gathering the producers should split into cohorts: mean group commit {plain_batch:.1f}"
