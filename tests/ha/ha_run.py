"""Active/standby failover with real processes (ARCHITECTURE §5, issue 4).

Two `ferry` processes share one data directory on different loopback ports. Clients are
stomp.py connections that move to the other port when theirs fails (their own reconnect loop,
as an application with a host list does). Scenarios:

  kill      kill -9 of the active under confirmed load (4 producers with receipts, 2 consumers
            acking with receipts); the standby takes over. Counts confirmed-but-lost (must be
            0), resurrected (ack confirmed, delivered again) and duplicates, and measures the
            takeover gap: kill -> the standby answers a probe's STOMP CONNECT (gap_ms), and
            kill -> the first load client gets CONNECTED from it (client_gap_ms).
  stop      SIGSTOP the active for 3 x D; the standby takes over; SIGCONT. A client on the old
            active then publishes with receipts: no receipt may come, none of those messages
            may ever be delivered, and the old active must exit (status 75).
  handover  `ferry ctl handover` under the same load: 0 lost; gap = the old active stops
            answering -> the new one answers.
  standby   a process started while another is active waits (refuses connections), then
            serves when the active is killed.
  race      two processes started at the same instant on an empty directory: exactly one
            becomes active.

Usage: python tests/ha/ha_run.py [--scenario kill|stop|handover|standby|race|all] [--runs N]
                                 [--lease-ms 2000] [--shards 2] [--seed N] [--bin PATH]
Exit status 1 if any run lost, resurrected or acked anything it must not. Traffic is loopback
only; every wait is bounded.
"""
import argparse
import contextlib
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import stomp

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crash"))
from crash_run import free_port, stomp_answers  # noqa: E402

QUEUE = "/queue/ha"
WINDOW = 32


class Broker:
    def __init__(self, binary, data, port, shards, lease_ms, log, extra=()):
        self.port = port
        self.slow_probes = []       # probes of wait_serving that took long, and why
        self.log_path = getattr(log, "name", None)
        self.proc = subprocess.Popen(
            [binary, "--data-dir", data, "--shards", str(shards), "--listen", f"stomp=127.0.0.1:{port}",
             "--lease-duration-ms", str(lease_ms), *extra],
            stdout=subprocess.DEVNULL, stderr=log)

    def wait_serving(self, timeout=20.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"broker on {self.port} exited with {self.proc.returncode}; its log ends:\n"
                                   f"{self.log_tail()}")
            why, started = [], time.monotonic()
            if stomp_answers(self.port, why=why):
                return time.monotonic()
            if time.monotonic() - started > 0.3:
                self.slow_probes.append(f"{why[-1] if why else '?'} after {time.monotonic() - started:.2f} s")
            time.sleep(0.005)
        raise RuntimeError(f"broker on {self.port} did not serve within {timeout} s; slow probes "
                           f"{self.slow_probes[-5:]}; its log ends:\n{self.log_tail()}")

    def log_tail(self, lines=40):
        """The end of the log file the brokers write to (shared by the pair)."""
        try:
            with open(self.log_path, "rb") as f:
                text = f.read().decode(errors="replace")
            # Backtrace frames (RUST_BACKTRACE set) would push the error itself out of view.
            kept = [line for line in text.splitlines() if not re.match(r"\s+(\d+: |at )", line)]
            return "\n".join(kept[-lines:])
        except (OSError, TypeError):
            return "(no log)"

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


class Client(stomp.ConnectionListener):
    """One stomp.py connection to whichever of `ports` answers, reconnecting on failure."""

    def __init__(self, ports, name):
        self.ports, self.name = ports, name
        self.cond = threading.Condition()
        self.receipts = set()
        self.receipt_gens = set()   # (receipt id, generation of the connection it came on, when)
        self.messages = []          # (frame, generation, when)
        self.generation = 0
        self.connected_at = []      # when each generation's CONNECTED arrived
        self.conn = None
        self.port = None

    def on_receipt(self, frame):
        with self.cond:
            self.receipts.add(frame.headers["receipt-id"])
            self.receipt_gens.add((frame.headers["receipt-id"], self.generation, time.monotonic()))
            self.cond.notify_all()

    def on_message(self, frame):
        with self.cond:
            self.messages.append((frame, self.generation, time.monotonic()))
            self.cond.notify_all()

    def on_disconnected(self):
        with self.cond:
            self.conn = None
            self.cond.notify_all()

    def connect(self, stop, on_connect=None):
        """Tries the ports in turn until one accepts (or `stop` is set)."""
        while not stop.is_set():
            for port in self.ports:
                conn = stomp.Connection12([("127.0.0.1", port)], reconnect_attempts_max=1, heartbeats=(0, 0),
                                          timeout=1.0)
                conn.set_listener(self.name, self)
                try:
                    conn.connect("guest", "guest", wait=True, headers={"client-id": self.name})
                except Exception:
                    continue
                with self.cond:
                    self.generation += 1
                    self.conn, self.port = conn, port
                    self.connected_at.append(time.monotonic())
                if on_connect:
                    on_connect(conn)
                return True
            time.sleep(0.02)
        return False

    def connected(self):
        with self.cond:
            return self.conn is not None

    def close(self):
        conn = self.conn
        if conn is not None:
            try:
                conn.disconnect()
            except Exception:
                pass


def produce(client, stop, sent, ports_of_send):
    """Persistent sends with receipts, at most WINDOW unconfirmed; moves on when its broker fails."""
    seq = 0
    while not stop.is_set():
        if not client.connected() and not client.connect(stop):
            return
        with client.cond:
            while (seq - len(client.receipts) >= WINDOW and client.conn is not None and not stop.is_set()):
                client.cond.wait(0.05)
            conn, port = client.conn, client.port
        if conn is None or stop.is_set():
            continue
        key = f"{client.name}-{seq}"
        try:
            conn.send(QUEUE, key, headers={"persistent": "true", "key": key, "receipt": key})
        except Exception:
            with client.cond:
                client.conn = None
            continue
        sent[key] = port
        ports_of_send[key] = time.monotonic()
        seq += 1


def consume(client, stop, acked):
    """client-individual acks with receipts; every delivery is recorded with its generation."""
    subscribe = lambda conn: conn.subscribe(QUEUE, id="s", ack="client-individual",  # noqa: E731
                                            headers={"prefetch-count": "16"})
    handled = 0
    while not stop.is_set():
        if not client.connected() and not client.connect(stop, subscribe):
            return
        with client.cond:
            if handled >= len(client.messages):
                client.cond.wait(0.05)
                continue
            frame, frame_generation = client.messages[handled][:2]
            conn, generation = client.conn, client.generation
        handled += 1
        # An ack id is only valid on the connection that delivered it; the new connection will
        # deliver the message again.
        if conn is None or frame_generation != generation:
            continue
        key = frame.headers["key"]
        try:
            conn.ack(frame.headers["ack"], receipt=f"ack-{key}")
            acked.add((key, generation))
        except Exception:
            with client.cond:
                client.conn = None


class Load:
    """4 producers and 2 consumers on `ports`, reconnecting to whichever answers."""

    def __init__(self, ports, producers=4, consumers=2):
        self.stop = threading.Event()
        self.sent, self.sent_at, self.acked = {}, {}, set()
        self.producers = [Client(ports, f"p{i}") for i in range(producers)]
        self.consumers = [Client(ports, f"c{i}") for i in range(consumers)]
        self.threads = [threading.Thread(target=produce, args=(p, self.stop, self.sent, self.sent_at), daemon=True)
                        for p in self.producers]
        self.threads += [threading.Thread(target=consume, args=(c, self.stop, self.acked), daemon=True)
                         for c in self.consumers]
        for t in self.threads:
            t.start()

    def first_reconnect(self):
        """When the first client got CONNECTED from the new active (its second connection)."""
        times = [c.connected_at[1] for c in self.producers + self.consumers if len(c.connected_at) > 1]
        return min(times) if times else None

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(5)
        for c in self.producers + self.consumers:
            c.close()


def drain(port, seconds_quiet=1.0, limit_s=30):
    client = Client([port], "drain")
    stop = threading.Event()
    client.connect(stop, lambda conn: conn.subscribe(QUEUE, id="d", ack="auto"))
    last, deadline = -1, time.monotonic() + limit_s
    while time.monotonic() < deadline:
        time.sleep(seconds_quiet)
        with client.cond:
            n = len(client.messages)
        if n == last:
            break
        last = n
    client.close()
    return [(f.headers["key"], t) for f, _, t in client.messages]


def check(load, drained, old=1):
    """Counts by connection generation: generation `old` is every client's connection to the
    old active (clients start while only it serves), later ones are to its successor.
      lost         confirmed sends neither acked on the old active nor delivered after it
      resurrected  acks the old active confirmed whose messages were delivered again after it
      duplicates   deliveries by the new active of a message whose ack it had already
                   confirmed"""
    confirmed = set()
    for p in load.producers:
        with p.cond:
            confirmed |= {r for r in p.receipts if r.startswith(p.name + "-")}
    ack_attempted = {k for k, g in load.acked if g <= old}
    ack_confirmed = set()
    ack_confirmed_new = {}      # key -> when the new active confirmed an ack for it first
    after = list(drained)       # (key, when) delivered by the new active
    for c in load.consumers:
        with c.cond:
            for r, g, t in c.receipt_gens:
                if not r.startswith("ack-"):
                    continue
                if g <= old:
                    ack_confirmed.add(r[4:])
                else:
                    ack_confirmed_new[r[4:]] = min(t, ack_confirmed_new.get(r[4:], t))
            after += [(f.headers["key"], t) for f, g, t in c.messages if g > old]
    after_set = {k for k, _ in after}
    lost = sorted(k for k in confirmed if k not in ack_attempted and k not in after_set)
    resurrected = sorted(after_set & ack_confirmed)
    # Delivered again after the new active had confirmed its ack (a consumer whose connection
    # dropped before its ack was confirmed legitimately sees the message again).
    duplicated = sorted({k for k, t in after if k in ack_confirmed_new and ack_confirmed_new[k] < t})
    duplicates = sum(1 for k, t in after if k in ack_confirmed_new and ack_confirmed_new[k] < t)
    return dict(confirmed=len(confirmed), lost=len(lost), resurrected=len(resurrected), duplicates=duplicates,
                lost_sample=lost[:5], resurrected_sample=resurrected[:5],
                duplicates_sample=[history(load, k) for k in duplicated[:3]])


def history(load, key):
    """Everything the clients saw of `key`, for a failure report: deliveries and ack receipts
    as (client, generation, what, ack id or receipt, seconds since the first event)."""
    events = []
    for c in load.consumers:
        with c.cond:
            events += [(t, c.name, g, "MESSAGE", f.headers.get("ack")) for f, g, t in c.messages
                       if f.headers.get("key") == key]
            events += [(t, c.name, g, "RECEIPT", r) for r, g, t in c.receipt_gens if r == f"ack-{key}"]
    events.sort()
    t0 = events[0][0] if events else 0
    return [(name, g, what, ident, round(t - t0, 3)) for t, name, g, what, ident in events]


class Pair:
    def __init__(self, args, log):
        self.data = tempfile.mkdtemp(prefix="ferry-ha-")
        self.args, self.log = args, log
        self.ports = [free_port(), free_port()]
        self.brokers = []

    def start(self, index):
        b = Broker(self.args.bin, self.data, self.ports[index], self.args.shards, self.args.lease_ms, self.log)
        self.brokers.append(b)
        return b

    def close(self):
        for b in self.brokers:
            b.stop()
        shutil.rmtree(self.data, ignore_errors=True)


@contextlib.contextmanager
def active_and_standby(args, log, standby_delay=0.3):
    """An active serving on port 0 and a standby started after it on port 1."""
    pair = Pair(args, log)
    try:
        a = pair.start(0)
        a.wait_serving()
        b = pair.start(1)
        time.sleep(standby_delay)
        yield pair, a, b
    finally:
        pair.close()


def wait_first_serving(brokers, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for b in brokers:
            if b.proc.poll() is None and stomp_answers(b.port, 0.2):
                return b, time.monotonic()
        time.sleep(0.005)
    raise RuntimeError("no broker served")


def run_kill(args, rng, log):
    with active_and_standby(args, log, 0.3) as (pair, a, b):
        assert not stomp_answers(b.port), "the standby must refuse clients"
        load = Load(pair.ports)
        time.sleep(rng.uniform(1.0, 2.5))
        killed = time.monotonic()
        a.proc.send_signal(signal.SIGKILL)
        served = b.wait_serving()
        a.proc.wait(5)
        time.sleep(1.0)
        load.finish()
        result = check(load, drain(b.port))
        result["gap_ms"] = round((served - killed) * 1000)
        first = load.first_reconnect()
        result["client_gap_ms"] = round((first - killed) * 1000) if first else None
        result["sent"] = len(load.sent)
        return result


def run_stop(args, rng, log):
    with active_and_standby(args, log, 0.0) as (pair, a, b):
        load = Load(pair.ports)
        time.sleep(rng.uniform(0.8, 1.5))
        load.stop.set()
        for t in load.threads:
            t.join(5)
        # A raw client stays connected to the old active across the pause.
        zombie = socket.create_connection(("127.0.0.1", a.port), timeout=5)
        zombie.sendall(b"CONNECT\naccept-version:1.2\nlogin:guest\npasscode:guest\n\n\0")
        assert zombie.recv(9) == b"CONNECTED"
        a.proc.send_signal(signal.SIGSTOP)
        stopped = time.monotonic()
        served = b.wait_serving(timeout=3 * args.lease_ms / 1000 + 10)
        time.sleep(max(0.0, stopped + 3 * args.lease_ms / 1000 - time.monotonic()))
        frames = b"".join(
            f"SEND\ndestination:{QUEUE}\npersistent:true\nkey:z-{i}\nreceipt:z-{i}\n\nzombie\0".encode()
            for i in range(50))
        zombie.settimeout(0.2)
        a.proc.send_signal(signal.SIGCONT)
        try:
            zombie.sendall(frames)
        except OSError:
            pass
        got = b""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                chunk = zombie.recv(65536)
            except socket.timeout:
                if a.proc.poll() is not None:
                    break
                continue
            except OSError:
                break
            if not chunk:
                break
            got += chunk
        zombie_receipts = got.count(b"RECEIPT")
        try:
            exit_code = a.proc.wait(10)
        except subprocess.TimeoutExpired:
            exit_code = "still running"
        drained = drain(b.port)
        for c in load.producers + load.consumers:
            c.close()
        result = check(load, drained)
        result.update(zombie_receipts=zombie_receipts, zombie_delivered=sum(1 for k, _ in drained if k.startswith("z-")),
                      old_active_exit=exit_code, takeover_ms=round((served - stopped) * 1000))
        return result


def run_handover(args, rng, log):
    with active_and_standby(args, log, 0.3) as (pair, a, b):
        load = Load(pair.ports)
        time.sleep(rng.uniform(1.0, 2.0))
        ctl = subprocess.Popen([args.bin, "ctl", "handover", "--data-dir", pair.data], stdout=subprocess.PIPE,
                               stderr=log)
        # The gap: the last moment the old active answered -> the first the new one did.
        last_old = time.monotonic()
        while a.proc.poll() is None and stomp_answers(a.port, 0.2):
            last_old = time.monotonic()
            time.sleep(0.002)
        served = b.wait_serving()
        out, _ = ctl.communicate(timeout=30)
        time.sleep(1.0)
        load.finish()
        result = check(load, drain(b.port))
        first = load.first_reconnect()
        result.update(gap_ms=round((served - last_old) * 1000), old_active_exit=a.proc.wait(10),
                      client_gap_ms=round((first - last_old) * 1000) if first else None, slow_probes=b.slow_probes,
                      ctl=out.decode().strip())
        return result


def run_standby(args, rng, log):
    with active_and_standby(args, log, 1.0) as (pair, a, b):
        refused = not stomp_answers(b.port)
        a.proc.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        served = b.wait_serving()
        return dict(standby_refused=refused, gap_ms=round((served - killed) * 1000), lost=0 if refused else 1)


def run_race(args, rng, log):
    pair = Pair(args, log)
    try:
        a, b = pair.start(0), pair.start(1)
        wait_first_serving([a, b])
        time.sleep(1.0 + args.lease_ms / 1000)
        serving = [x.port for x in (a, b) if stomp_answers(x.port)]
        epochs = sorted(os.listdir(os.path.join(pair.data, "lease")))
        claimed = [e for e in epochs if e.startswith("epoch-")]
        return dict(serving=len(serving), epochs_claimed=len(claimed), lost=0 if len(serving) == 1 else 1)
    finally:
        pair.close()


SCENARIOS = dict(kill=run_kill, stop=run_stop, handover=run_handover, standby=run_standby, race=run_race)


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def bad(result):
    return (result.get("lost", 0) + result.get("resurrected", 0) + result.get("duplicates", 0)
            + result.get("zombie_receipts", 0)
            + result.get("zombie_delivered", 0) + (result.get("old_active_exit", 75) not in (0, 75))
            + (result.get("serving", 1) != 1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenario", default="all", choices=[*SCENARIOS, "all"])
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--lease-ms", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=int(time.time()))
    ap.add_argument("--bin", default=os.environ.get("FERRY_BIN", "target/debug/ferry"))
    args = ap.parse_args()
    rng = random.Random(args.seed)
    names = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    failures = 0
    with open(os.path.join(tempfile.gettempdir(), "ferry-ha-broker.log"), "ab") as log:
        for name in names:
            results = []
            for i in range(args.runs):
                r = SCENARIOS[name](args, rng, log)
                results.append(r)
                failures += bool(bad(r))
                print(f"{name} {i + 1}/{args.runs}: {r}", flush=True)
            gaps = [r[k] for r in results for k in ("gap_ms", "takeover_ms") if k in r]
            client_gaps = [r["client_gap_ms"] for r in results if r.get("client_gap_ms") is not None]
            totals = {k: sum(r.get(k, 0) for r in results) for k in
                      ("confirmed", "lost", "resurrected", "duplicates", "zombie_receipts", "zombie_delivered")}
            line = f"{name}: runs {len(results)} {totals}"
            if gaps:
                line += (f" gap_ms p50 {statistics.median(gaps):.0f} p99 {percentile(gaps, 99)}"
                         f" max {max(gaps)}")
            if client_gaps:
                line += (f"; first client reconnected ms p50 {statistics.median(client_gaps):.0f}"
                         f" p99 {percentile(client_gaps, 99)} max {max(client_gaps)}")
            print(line, flush=True)
    print(f"seed {args.seed}, shards {args.shards}, lease {args.lease_ms} ms: {failures} failed runs")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
