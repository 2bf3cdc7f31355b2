"""Crash test with real processes: a stomp.py producer publishes persistent messages with
receipts while a stomp.py consumer acks with receipts; the broker is `kill -9`ed at a random
moment, restarted on the same data directory, and everything left is drained.

Checked per run, and summed over runs:
  lost         confirmed (receipted) messages that were neither acked nor delivered after restart
  resurrected  messages whose ack was confirmed before the kill but came back after restart
  duplicates   messages delivered more than once after the restart
Only loopback traffic; every wait is bounded.

Usage: python tests/crash/crash_run.py [--runs 50] [--shards 2] [--seed N] [--bin target/debug/ferry]
Exit status 1 if anything was lost, resurrected or duplicated. FERRY_CRASH_ARGS adds broker
arguments (both crash tests), e.g. "--config small-segments.toml" for a data dir (TMPDIR) on
the slow-sync file system of scripts/slow-sync-fs.sh.
"""
import argparse
import os
import random
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import stomp

QUEUE = "/queue/crash"
WINDOW = 64


_HANDED_OUT = set()


def free_port():
    """A port nothing listens on now, never one this process handed out before: the kernel
    may give the same ephemeral port to two binds in a row. ha_run's pair of brokers takes two
    at once; given the same one, the active answered on both and the race test saw two
    brokers serving with one lease epoch claimed."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError("no fresh port after 100 binds")


def start_broker(binary, data, port, shards, log, protocol="stomp", answers=None, args=()):
    extra = [*args, *shlex.split(os.environ.get("FERRY_CRASH_ARGS", ""))]
    proc = subprocess.Popen(
        [binary, "--data-dir", data, "--shards", str(shards), "--listen", f"{protocol}=127.0.0.1:{port}", *extra],
        stdout=subprocess.DEVNULL, stderr=log)
    answers = answers or stomp_answers
    deadline = time.time() + 15
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"broker exited with {proc.returncode}")
        if answers(port):
            return proc
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("broker did not listen")


def stomp_answers(port, timeout=0.5, why=None):
    """Ready means a STOMP broker answered CONNECT: a bare TCP connect can reach something
    else (a self-connected socket on an unlistened ephemeral port, say). `why`, a list, gets
    the reason of a failure."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.settimeout(2 * timeout)
            s.sendall(b"CONNECT\naccept-version:1.2\n\n\0")
            got = s.recv(9)
            if why is not None and got != b"CONNECTED":
                why.append(f"answered {got!r} from {s.getsockname()[1]}")
            return got == b"CONNECTED"
    except OSError as e:
        if why is not None:
            why.append(type(e).__name__)
        return False


class Collector(stomp.ConnectionListener):
    def __init__(self):
        self.lock = threading.Lock()
        self.receipts = set()
        self.messages = []
        self.cond = threading.Condition(self.lock)

    def on_receipt(self, frame):
        with self.cond:
            self.receipts.add(frame.headers["receipt-id"])
            self.cond.notify_all()

    def on_message(self, frame):
        with self.cond:
            self.messages.append(frame)
            self.cond.notify_all()


def connect(port, listener):
    conn = stomp.Connection12([("127.0.0.1", port)], reconnect_attempts_max=1, heartbeats=(0, 0))
    conn.set_listener("c", listener)
    conn.connect("guest", "guest", wait=True)
    return conn


def produce(conn, listener, sent, stop):
    seq = 0
    while not stop.is_set():
        with listener.cond:
            while seq - len([r for r in listener.receipts if r.startswith("p-")]) >= WINDOW and not stop.is_set():
                listener.cond.wait(0.05)
        try:
            conn.send(QUEUE, f"m-{seq}", headers={"persistent": "true", "seq": str(seq), "receipt": f"p-{seq}"})
        except Exception:
            return
        sent.append(seq)
        seq += 1


def consume(conn, listener, acked_sent, stop):
    handled = 0
    while not stop.is_set():
        with listener.cond:
            if handled >= len(listener.messages):
                listener.cond.wait(0.05)
                continue
            frame = listener.messages[handled]
        handled += 1
        seq = int(frame.headers["seq"])
        try:
            conn.ack(frame.headers["ack"], receipt=f"a-{seq}")
        except Exception:
            return
        acked_sent.add(seq)


def one_run(binary, shards, rng, log):
    data = tempfile.mkdtemp(prefix="ferry-crash-")
    port = free_port()
    try:
        broker = start_broker(binary, data, port, shards, log)
        prod_l, cons_l = Collector(), Collector()
        producer, consumer = connect(port, prod_l), connect(port, cons_l)
        consumer.subscribe(QUEUE, id="c", ack="client-individual", headers={"prefetch-count": "32"})
        sent, acked_sent, stop = [], set(), threading.Event()
        load_then_kill(broker, rng, [lambda: produce(producer, prod_l, sent, stop),
                                     lambda: consume(consumer, cons_l, acked_sent, stop)], stop)
        with prod_l.lock:
            confirmed = {int(r[2:]) for r in prod_l.receipts if r.startswith("p-")}
        with cons_l.lock:
            ack_confirmed = {int(r[2:]) for r in cons_l.receipts if r.startswith("a-")}
        for c in (producer, consumer):
            try:
                c.disconnect()
            except Exception:
                pass

        broker = start_broker(binary, data, port, shards, log)
        drain_l = Collector()
        drain = connect(port, drain_l)
        drain.subscribe(QUEUE, id="d", ack="auto")
        last, deadline = -1, time.time() + 30
        while time.time() < deadline:
            time.sleep(0.5)
            with drain_l.lock:
                n = len(drain_l.messages)
            if n == last:
                break
            last = n
        drain.disconnect()
        broker.send_signal(signal.SIGTERM)
        broker.wait(10)
        after = [int(f.headers["seq"]) for f in drain_l.messages]
        after_set = set(after)
        lost = sorted(s for s in confirmed if s not in acked_sent and s not in after_set)
        resurrected = sorted(after_set & ack_confirmed)
        duplicates = len(after) - len(after_set)
        return dict(sent=len(sent), confirmed=len(confirmed), acked=len(ack_confirmed), after=len(after),
                    lost=len(lost), resurrected=len(resurrected), duplicates=duplicates,
                    lost_sample=lost[:5], resurrected_sample=resurrected[:5])
    finally:
        shutil.rmtree(data, ignore_errors=True)


def load_then_kill(broker, rng, workers, stop):
    """Runs each of `workers` (functions of no argument) on a thread until the broker is
    `kill -9`ed at a random moment 0.3-1.5 s in; then sets `stop` and joins them."""
    threads = [threading.Thread(target=w, daemon=True) for w in workers]
    for t in threads:
        t.start()
    time.sleep(rng.uniform(0.3, 1.5))
    broker.send_signal(signal.SIGKILL)
    broker.wait(10)
    stop.set()
    for t in threads:
        t.join(10)


def main(run=None, runs=50, counted=("confirmed",), log_name="ferry-crash-broker.log",
         checked=("lost", "resurrected", "duplicates")):
    """Runs `run` (default: this file's STOMP run) --runs times and sums what it counted;
    fails when any `checked` total (by default: lost, resurrected, duplicated) is above 0, or
    when a `counted` total is 0 (a run that confirmed nothing proves nothing)."""
    run = run or one_run
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=runs)
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--seed", type=int, default=int(time.time()))
    ap.add_argument("--bin", default=os.environ.get("FERRY_BIN", "target/debug/ferry"))
    args = ap.parse_args()
    rng = random.Random(args.seed)
    keys = (*counted, *checked)
    totals = dict(runs=0, **{k: 0 for k in keys})
    with open(os.path.join(tempfile.gettempdir(), log_name), "ab") as log:
        for i in range(args.runs):
            r = run(args.bin, args.shards, rng, log)
            print(f"run {i + 1}/{args.runs}: {r}", flush=True)
            totals["runs"] += 1
            for k in keys:
                totals[k] += r[k]
    print(f"seed {args.seed}, shards {args.shards}: {totals}")
    bad = sum(totals[k] for k in checked)
    if any(totals[k] == 0 for k in counted):
        print(f"a total of {counted} is 0: the runs proved nothing")
        bad += 1
    print(f"{totals['runs'] - (1 if bad else 0)} passed, {1 if bad else 0} failed")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
