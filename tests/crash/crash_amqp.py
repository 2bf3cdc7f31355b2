"""The crash test over AMQP 0-9-1 with pika (the sibling of crash_run.py): a producer publishes
persistent messages with publisher confirms, waiting for each; a second keeps a window of them
in flight, so the broker coalesces their confirms into `multiple` acks; a consumer acks in transactions (tx.commit-ok is
AMQP's only acknowledgement of an ack, and Ferry sends it once the acks are durable); the broker
is `kill -9`ed at a random moment, restarted on the same data directory and drained.

Checked per run, and summed over runs:
  lost         confirmed messages that were neither acked nor delivered after restart
  resurrected  messages whose ack was committed (commit-ok seen) but came back after restart
  duplicates   messages delivered more than once after the restart
Only loopback traffic; every wait is bounded.

Usage: python tests/crash/crash_amqp.py [--runs 20] [--shards 2] [--seed N] [--bin target/debug/ferry]
Exit status 1 if anything was lost, resurrected or duplicated.
"""
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time

import pika

import crash_run
from crash_run import free_port, load_then_kill, start_broker

QUEUE = "crash-amqp"
ACK_BATCH = 8
PIPELINE_WINDOW = 64
PIPELINED_SEQ_BASE = 1_000_000_000  # the pipelined producer's seqs, apart from the other's


def amqp_answers(port):
    """Ready means an AMQP broker answered the protocol header with connection.start."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.settimeout(1.0)
            s.sendall(b"AMQP\x00\x00\x09\x01")
            return s.recv(1) == b"\x01"
    except OSError:
        return False


def connect(port):
    params = pika.ConnectionParameters(host="127.0.0.1", port=port, connection_attempts=1, socket_timeout=5,
                                       blocked_connection_timeout=5, heartbeat=0)
    conn = pika.BlockingConnection(params)
    ch = conn.channel()
    ch.queue_declare(QUEUE, durable=True)
    return conn, ch


def produce(port, confirmed, stop, connect=connect, queue=QUEUE, header="seq", name=lambda seq: seq):
    """Publishes persistent messages to `queue`, each waiting for its confirm; the `header`
    of message n is `name(n)`, added to `confirmed` once confirmed."""
    try:
        conn, ch = connect(port)
        ch.confirm_delivery()
        seq = 0
        while not stop.is_set():
            value = name(seq)
            props = pika.BasicProperties(delivery_mode=2, headers={header: value})
            ch.basic_publish("", queue, f"m-{seq}".encode(), props)  # returns once confirmed
            confirmed.add(value)
            seq += 1
    except Exception:
        return


def produce_pipelined(port, confirmed, stop):
    """Keeps PIPELINE_WINDOW publishes unconfirmed on a SelectConnection; a seq counts as
    confirmed once an ack names its tag or, with `multiple`, a higher one."""
    params = pika.ConnectionParameters(host="127.0.0.1", port=port, connection_attempts=1, socket_timeout=5,
                                       heartbeat=0)
    inflight, state = {}, {"tag": 0, "seq": PIPELINED_SEQ_BASE}

    def top_up(ch):
        while len(inflight) < PIPELINE_WINDOW and not stop.is_set():
            state["tag"] += 1
            state["seq"] += 1
            props = pika.BasicProperties(delivery_mode=2, headers={"seq": state["seq"]})
            ch.basic_publish("", QUEUE, f"m-{state['seq']}".encode(), props)
            inflight[state["tag"]] = state["seq"]

    def on_confirm(ch, frame):
        m = frame.method
        tags = [t for t in inflight if t <= m.delivery_tag] if m.multiple else [m.delivery_tag]
        for t in tags:
            seq = inflight.pop(t, None)
            if seq is not None and isinstance(m, pika.spec.Basic.Ack):
                confirmed.add(seq)
        top_up(ch)

    def on_channel(ch):
        ch.queue_declare(QUEUE, durable=True, callback=lambda _f: ch.confirm_delivery(
            lambda frame: on_confirm(ch, frame), callback=lambda _f: top_up(ch)))

    def watch_stop(conn):
        if stop.is_set():
            conn.ioloop.stop()
        else:
            conn.ioloop.call_later(0.05, lambda: watch_stop(conn))

    try:
        conn = pika.SelectConnection(params, on_open_callback=lambda c: c.channel(on_open_callback=on_channel),
                                     on_open_error_callback=lambda c, _e: c.ioloop.stop(),
                                     on_close_callback=lambda c, _r: c.ioloop.stop())
        watch_stop(conn)
        conn.ioloop.start()
    except Exception:
        return


def consume(port, acked_sent, ack_committed, stop):
    try:
        conn, ch = connect(port)
        ch.basic_qos(prefetch_count=32)
        ch.tx_select()
        pending = []
        ch.basic_consume(QUEUE, lambda c, m, p, b: pending.append((m.delivery_tag, int(p.headers["seq"]))))
        while not stop.is_set():
            conn.process_data_events(time_limit=0.02)
            if not pending:
                continue
            batch, pending[:] = pending[:ACK_BATCH], pending[ACK_BATCH:]
            for tag, seq in batch:
                ch.basic_ack(tag)
                acked_sent.add(seq)
            ch.tx_commit()
            ack_committed.update(seq for _, seq in batch)
    except Exception:
        return


def drain(port, queue=QUEUE, header="seq", connect=connect):
    """Gets every message of `queue` until it stays empty for a second; returns the values of
    their `header`, in order."""
    conn, ch = connect(port)
    seen, idle_since = [], time.time()
    deadline = time.time() + 30
    while time.time() < deadline and time.time() - idle_since < 1.0:
        method, props, _ = ch.basic_get(queue, auto_ack=True)
        if method is None:
            time.sleep(0.05)
            continue
        seen.append(props.headers[header])
        idle_since = time.time()
    conn.close()
    return seen


def one_run(binary, shards, rng, log):
    data = tempfile.mkdtemp(prefix="ferry-crash-amqp-")
    port = free_port()
    try:
        broker = start_broker(binary, data, port, shards, log, "amqp", amqp_answers)
        confirmed, acked_sent, ack_committed, stop = set(), set(), set(), threading.Event()
        load_then_kill(broker, rng, [lambda: produce(port, confirmed, stop),
                                     lambda: produce_pipelined(port, confirmed, stop),
                                     lambda: consume(port, acked_sent, ack_committed, stop)], stop)
        confirmed, acked_sent, ack_committed = set(confirmed), set(acked_sent), set(ack_committed)

        broker = start_broker(binary, data, port, shards, log, "amqp", amqp_answers)
        after = [int(seq) for seq in drain(port)]
        broker.send_signal(signal.SIGTERM)
        broker.wait(10)
        after_set = set(after)
        lost = sorted(s for s in confirmed if s not in acked_sent and s not in after_set)
        resurrected = sorted(after_set & ack_committed)
        duplicates = len(after) - len(after_set)
        return dict(confirmed=len(confirmed), committed_acks=len(ack_committed), after=len(after),
                    lost=len(lost), resurrected=len(resurrected), duplicates=duplicates,
                    lost_sample=lost[:5], resurrected_sample=resurrected[:5])
    finally:
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(crash_run.main(one_run, runs=20, counted=("confirmed", "committed_acks"),
                            log_name="ferry-crash-amqp-broker.log"))
