"""The crash test for AMQP 0-9-1 transactions, with pika: each queue owner logs its share of a
transaction as one record, and a transaction spanning shards commits in two phases, so a crash
keeps all of it or none.

Two durable queues, SRC and DST, placed (`[[placement]]`) on one shard in odd runs and on two
in even runs; the connections land on either shard, so a transaction often travels to the
owners first. A producer publishes
persistent messages to SRC with confirms; a mover takes them from SRC and, in one transaction
each, publishes their copies to DST and acks them in SRC; a batcher publishes batches of
BATCH messages to DST, one transaction each. The broker is `kill -9`ed at a random moment,
restarted on the same data directory, and both queues are drained.

Checked per run, and summed over runs:
  lost         confirmed messages in neither queue after restart
  duplicates   confirmed messages in both queues, or twice in one (a move kept in part)
  resurrected  messages whose move was committed (tx.commit-ok seen) found back in SRC
  partial      batches found in DST with some but not all of their messages, and committed
               batches missing any
Only loopback traffic; every wait is bounded.

Usage: python tests/crash/crash_tx.py [--runs 10] [--shards 2] [--seed N] [--bin target/debug/ferry]
Exit status 1 if anything was lost, duplicated, resurrected or partial.
"""
import collections
import os
import shutil
import signal
import sys
import tempfile
import threading

import pika

import crash_run
from crash_amqp import amqp_answers, drain, produce
from crash_run import free_port, load_then_kill, start_broker

SRC, DST = "crash-tx-src", "crash-tx-dst"
MOVE_BATCH = 8
BATCH = 5


def connect(port):
    params = pika.ConnectionParameters(host="127.0.0.1", port=port, connection_attempts=1, socket_timeout=5,
                                       blocked_connection_timeout=5, heartbeat=0)
    conn = pika.BlockingConnection(params)
    ch = conn.channel()
    for q in (SRC, DST):
        ch.queue_declare(q, durable=True)
    return conn, ch


def persistent(body_id):
    return pika.BasicProperties(delivery_mode=2, headers={"id": body_id})


def move(port, moved, stop):
    """Moves messages SRC -> DST: publish the copies and ack the originals, one transaction."""
    try:
        conn, ch = connect(port)
        ch.basic_qos(prefetch_count=2 * MOVE_BATCH)
        ch.tx_select()
        pending = []
        ch.basic_consume(SRC, lambda c, m, p, b: pending.append((m.delivery_tag, p.headers["id"])))
        while not stop.is_set():
            conn.process_data_events(time_limit=0.02)
            if not pending:
                continue
            batch, pending[:] = pending[:MOVE_BATCH], pending[MOVE_BATCH:]
            for _, body_id in batch:
                ch.basic_publish("", DST, body_id.encode(), persistent(body_id))
            ch.basic_ack(batch[-1][0], multiple=True)
            ch.tx_commit()
            moved.update(body_id for _, body_id in batch)
    except Exception:
        return


def publish_batches(port, committed, stop):
    try:
        conn, ch = connect(port)
        ch.tx_select()
        n = 0
        while not stop.is_set():
            for j in range(BATCH):
                ch.basic_publish("", DST, f"b-{n}.{j}".encode(), persistent(f"b-{n}.{j}"))
            ch.tx_commit()
            committed.add(n)
            n += 1
    except Exception:
        return


RUNS = {"n": 0}


def one_run(binary, shards, rng, log):
    data = tempfile.mkdtemp(prefix="ferry-crash-tx-")
    config = os.path.join(data, "ferry.toml")
    RUNS["n"] += 1
    spanning = RUNS["n"] % 2 == 0 and shards > 1
    owners = {SRC: 0 if spanning else shards - 1, DST: shards - 1}
    with open(config, "w") as f:
        f.write("".join(f'[[placement]]\nqueue = "{q}"\nshard = {owners[q]}\n' for q in (SRC, DST)))
    port = free_port()
    start = lambda: start_broker(binary, os.path.join(data, "log"), port, shards, log, "amqp", amqp_answers,
                                 args=("--config", config))
    try:
        broker = start()
        confirmed, moved, committed, stop = set(), set(), set(), threading.Event()
        producer = lambda: produce(port, confirmed, stop, connect, SRC, "id", lambda seq: f"p-{seq}")
        load_then_kill(broker, rng, [producer, lambda: move(port, moved, stop),
                                     lambda: publish_batches(port, committed, stop)], stop)
        confirmed, moved, committed = set(confirmed), set(moved), set(committed)

        broker = start()
        src, dst = (drain(port, queue, "id", connect) for queue in (SRC, DST))
        broker.send_signal(signal.SIGTERM)
        broker.wait(10)
        copies = collections.Counter(src + dst)
        lost = sorted(p for p in confirmed if copies[p] == 0)
        duplicated = sorted(p for p, n in copies.items() if n > 1)
        resurrected = sorted(set(src) & moved)
        batches = collections.Counter(b.split(".")[0][2:] for b in dst if b.startswith("b-"))
        partial = sorted(n for n, count in batches.items() if count != BATCH)
        partial += sorted(str(n) for n in committed if batches[str(n)] != BATCH and str(n) not in partial)
        return dict(confirmed=len(confirmed), moves_committed=len(moved), batches_committed=len(committed),
                    spanning=spanning, lost=len(lost), duplicates=len(duplicated),
                    resurrected=len(resurrected),
                    partial=len(partial), lost_sample=lost[:5], duplicated_sample=duplicated[:5],
                    partial_sample=partial[:5])
    finally:
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(crash_run.main(one_run, runs=10, counted=("confirmed", "moves_committed", "batches_committed"),
                            log_name="ferry-crash-tx-broker.log",
                            checked=("lost", "duplicates", "resurrected", "partial")))
