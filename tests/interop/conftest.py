"""Interop test harness: runs the real `ferry` binary and drives it with stomp.py.

Fixtures
--------
broker        a fresh broker (own temp data dir, free port on 127.0.0.1); yields a Broker
              with .host/.port/.addr. Options come from (later wins):
                 @pytest.mark.ferry(shards=N, config="toml text")
                 indirect parametrization: an int (shards) or a dict(shards=, config=)
              Use BOTH_SHARDS (a parametrize mark) to run a test with shards=1 and 2.
broker_factory  start extra brokers (e.g. restart on the same data dir).
stomp_client  factory: stomp_client(version="1.2", ...) -> (conn, Collector); all
              connections are closed at teardown with bounded waits.
raw           factory: raw(version="1.2"|None, ...) -> RawConn (plain socket STOMP).

Every wait is bounded; every test gets a default pytest-timeout of 30 s.

Environment
-----------
FERRY_BIN          broker binary (default target/debug/ferry under the repo root)
RUST_LOG           passed to the broker (default info); its stderr is attached to failures
FERRY_STOMP_ADDR   127.0.0.1:PORT of an already running broker (e.g. RabbitMQ with the STOMP
                   plugin, the reference semantics); tests that must start, stop or configure
                   the broker skip
FERRY_STOMP_VHOST  vhost (1.1/1.2 `host` header) stomp.py sends; default: stomp.py's own
                   (the target host) for Ferry, "/" for FERRY_STOMP_ADDR
"""

import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
import stomp

REPO_ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
DEFAULT_TIMEOUT_S = 30

BOTH_SHARDS = pytest.mark.parametrize(
    "broker", [1, 2], indirect=True, ids=["shards1", "shards2"]
)


# --------------------------------------------------------------------------- pytest hooks


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "ferry(shards=1, config=None): options for the broker fixture"
    )


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(DEFAULT_TIMEOUT_S))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        for b in getattr(item, "_ferry_brokers", []):
            rep.sections.append((f"ferry stderr ({b.name})", b.log_tail()))


# --------------------------------------------------------------------------- helpers


def wait_for(pred, timeout=5.0, interval=0.01, what=None):
    """Poll pred() until truthy (returns its value) or raise AssertionError after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or pred}")
        time.sleep(interval)


def uniq(prefix="t"):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


_HANDED_OUT = set()


def free_port():
    """A port nothing listens on now, never one this process handed out before: the kernel
    may give the same ephemeral port to two binds in a row, and a broker gets four at once."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((HOST, 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port
    raise AssertionError("no fresh free port in 100 tries")


def port_accepts(port):
    """True when something listens on `port`. A connect to an unlistened local port in the
    ephemeral range can connect to itself (TCP simultaneous open); that is not a listener."""
    try:
        with socket.create_connection((HOST, port), timeout=0.2) as s:
            return s.getsockname() != s.getpeername()
    except OSError:
        return False


class Broker:
    def __init__(self, binary, workdir, shards=1, config=None, name="broker", data_dir=None):
        self.binary = str(binary)
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.shards = shards
        self.name = name
        self.host = HOST
        self.port = free_port()
        self.amqp_port = free_port()
        self.mqtt_port = free_port()
        self.admin_port = free_port()
        # Each broker gets its own data dir: a data dir belongs to one live process.
        self.data_dir = Path(data_dir) if data_dir else self.workdir / f"{name}-data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / f"{name}.stderr.log"
        self.config_path = None
        if config is not None:
            self.config_path = self.workdir / f"{name}.toml"
            self.config_path.write_text(config)
        self.proc = None
        self.returncode = None

    @property
    def addr(self):
        return (self.host, self.port)

    def metrics_lines(self, timeout=5):
        """The admin endpoint's /metrics (Prometheus text), line by line."""
        import urllib.request
        with urllib.request.urlopen(f"http://{self.host}:{self.admin_port}/metrics", timeout=timeout) as r:
            return r.read().decode().splitlines()

    def metric(self, name):
        """One value of /metrics."""
        for line in self.metrics_lines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        raise AssertionError(f"no metric {name}")

    def histogram(self, name):
        """A histogram of /metrics, read by the Prometheus project's own parser (so the
        exposition format is checked too): {"buckets": {le: cumulative count}, "sum", "count"}."""
        from prometheus_client.parser import text_string_to_metric_families
        text = "\n".join(self.metrics_lines()) + "\n"
        for family in text_string_to_metric_families(text):
            if family.name == name:
                assert family.type == "histogram", family.type
                found = {"buckets": {}}
                for sample in family.samples:
                    if sample.name == name + "_bucket":
                        found["buckets"][float(sample.labels["le"])] = sample.value
                    elif sample.name == name + "_sum":
                        found["sum"] = sample.value
                    elif sample.name == name + "_count":
                        found["count"] = sample.value
                return found
        raise AssertionError(f"no histogram {name}")

    def connections(self):
        """Connections the shards serve (the sum of `ferry_connections`), None if unknown."""
        try:
            lines = self.metrics_lines(timeout=2)
        except OSError:
            return None
        return sum(int(line.split()[1]) for line in lines if line.startswith("ferry_connections{"))

    def _no_connections_for(self, seconds):
        if self.connections() != 0:
            return False
        time.sleep(seconds)
        return self.connections() == 0

    def cmdline(self):
        cmd = [
            self.binary,
            "--data-dir", str(self.data_dir),
            "--shards", str(self.shards),
            "--listen", f"stomp={self.host}:{self.port}",
            "--listen", f"amqp={self.host}:{self.amqp_port}",
            "--listen", f"mqtt={self.host}:{self.mqtt_port}",
            "--listen", f"admin={self.host}:{self.admin_port}",
        ]
        if self.config_path is not None:
            cmd += ["--config", str(self.config_path)]
        return cmd

    def start(self, ready_timeout=10.0):
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "info")
        env.setdefault("RUST_BACKTRACE", "1")
        env.setdefault("NO_COLOR", "1")
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.cmdline(), stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log,
            env=env, cwd=str(self.workdir),
        )
        deadline = time.monotonic() + ready_timeout
        # Every protocol port, STOMP first: the shards bind their listeners one after
        # another, and a standby's MQTT redirector holds the MQTT port until a takeover
        # (it closes before the shards bind theirs, and STOMP is only bound by a process
        # that serves). A test that starts on the MQTT or AMQP port right after STOMP
        # accepted could otherwise find it not yet bound. A port is probed until it has
        # accepted once, not again: each probe is a connection the broker must see close.
        # Then until the probes' own connections are gone: a test that counts
        # connections, or runs with a per-shard connection limit, starts from none. Read
        # twice: a probe the shard has not yet taken from the accept queue counts later.
        waiting = [self.port, self.amqp_port, self.mqtt_port]
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                code = self.stop()
                raise AssertionError(
                    f"ferry exited early with code {code}: {' '.join(self.cmdline())}\n"
                    f"--- stderr ---\n{self.log_tail()}"
                )
            while waiting and port_accepts(waiting[0]):
                waiting.pop(0)
            if not waiting and self._no_connections_for(0.05):
                return self
            time.sleep(0.05)
        state = (f"not yet accepting: {waiting}" if waiting
                 else f"connections still counted: {self.connections()}")
        self.stop()
        raise AssertionError(
            f"ferry did not accept on {self.host}:{self.port}, {self.amqp_port} and {self.mqtt_port} "
            f"within {ready_timeout}s ({state})\n"
            f"--- stderr ---\n{self.log_tail()}"
        )

    def stop(self, term_timeout=5.0):
        """SIGTERM, wait up to term_timeout, then SIGKILL. Returns the exit code."""
        if self.proc is None:
            return self.returncode
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(timeout=term_timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
                self.returncode = "killed after SIGTERM timeout"
        if self.returncode is None:
            self.returncode = self.proc.returncode
        self._log.close()
        self.proc = None
        return self.returncode

    def kill(self):
        """SIGKILL (simulated crash). Returns the exit code."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)
            self.returncode = "SIGKILL"
        return self.stop()

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, limit=20000):
        try:
            data = self.log_path.read_bytes()
        except OSError:
            return "<no log>"
        text = data[-limit:].decode("utf-8", "replace")
        return text if text else "<empty>"


def _binary_path():
    p = Path(os.environ.get("FERRY_BIN", "target/debug/ferry"))
    if not p.is_absolute():
        p = REPO_ROOT / p
    return p


@pytest.fixture(scope="session")
def ferry_bin():
    p = _binary_path()
    if not p.exists():
        pytest.fail(
            f"ferry binary not found at {p} (build it: cargo build -p ferry-engine --bin ferry,"
            f" or set FERRY_BIN)", pytrace=False,
        )
    return p


@pytest.fixture
def broker_factory(request, tmp_path):
    started = []
    request.node._ferry_brokers = started

    def start(shards=1, config=None, data_dir=None, name=None):
        if os.environ.get("FERRY_STOMP_ADDR"):
            pytest.skip("needs to start its own broker; not possible with FERRY_STOMP_ADDR")
        ferry_bin = request.getfixturevalue("ferry_bin")
        b = Broker(ferry_bin, tmp_path / "ferry", shards=shards, config=config,
                   name=name or f"broker{len(started)}", data_dir=data_dir)
        started.append(b)
        return b.start()

    yield start
    problems = []
    for b in started:
        if b.proc is not None and b.proc.poll() is not None:
            problems.append(f"{b.name} died during the test with exit code {b.proc.returncode}")
        code = b.stop()
        if code == "killed after SIGTERM timeout":
            problems.append(f"{b.name} did not exit within 5 s of SIGTERM (SIGKILLed)")
    if problems:
        logs = "\n".join(f"--- {b.name} stderr ---\n{b.log_tail()}" for b in started)
        shutil.rmtree(tmp_path / "ferry", ignore_errors=True)
        pytest.fail("; ".join(problems) + "\n" + logs, pytrace=False)
    shutil.rmtree(tmp_path / "ferry", ignore_errors=True)


class ExternalBroker:
    """FERRY_STOMP_ADDR=127.0.0.1:PORT points the suite at an already running broker
    (e.g. RabbitMQ's STOMP plugin, the reference semantics). Tests that need to start,
    stop or configure the broker skip."""

    name = "external"

    def __init__(self, spec, shards):
        host, _, port = spec.rpartition(":")
        if host not in ("127.0.0.1", "localhost"):
            raise pytest.UsageError("FERRY_STOMP_ADDR must be on 127.0.0.1")
        self.host, self.port, self.shards = HOST, int(port), shards

    @property
    def addr(self):
        return (self.host, self.port)

    def stop(self, term_timeout=5.0):
        pytest.skip("cannot stop an external broker")

    def kill(self):
        pytest.skip("cannot kill an external broker")

    def alive(self):
        return True

    def log_tail(self, limit=0):
        return "<external broker>"


@pytest.fixture
def broker(request, broker_factory):
    opts = {"shards": 1, "config": None}
    m = request.node.get_closest_marker("ferry")
    if m is not None:
        opts.update(m.kwargs)
    p = getattr(request, "param", None)
    if isinstance(p, int):
        opts["shards"] = p
    elif isinstance(p, dict):
        opts.update(p)
    ext = os.environ.get("FERRY_STOMP_ADDR")
    if ext:
        if opts["config"] is not None:
            pytest.skip("needs a broker config file; not possible with FERRY_STOMP_ADDR")
        return ExternalBroker(ext, opts["shards"])
    return broker_factory(shards=opts["shards"], config=opts["config"], name="broker")


# --------------------------------------------------------------------------- stomp.py side


class Collector(stomp.ConnectionListener):
    """Thread-safe record of everything a stomp.py connection received."""

    def __init__(self):
        self.cond = threading.Condition()
        self.connected_frame = None
        self.messages = []
        self.receipts = []
        self.errors = []
        self.heartbeats = 0
        self.heartbeat_timeouts = 0
        self.disconnected = False

    def on_connected(self, frame):
        with self.cond:
            self.connected_frame = frame
            self.cond.notify_all()

    def on_message(self, frame):
        with self.cond:
            self.messages.append(frame)
            self.cond.notify_all()

    def on_receipt(self, frame):
        with self.cond:
            self.receipts.append(frame.headers.get("receipt-id"))
            self.cond.notify_all()

    def on_error(self, frame):
        with self.cond:
            self.errors.append(frame)
            self.cond.notify_all()

    def on_heartbeat(self):
        with self.cond:
            self.heartbeats += 1

    def on_heartbeat_timeout(self):
        with self.cond:
            self.heartbeat_timeouts += 1

    def on_disconnected(self):
        with self.cond:
            self.disconnected = True
            self.cond.notify_all()

    def _wait(self, pred, timeout, what):
        deadline = time.monotonic() + timeout
        with self.cond:
            while not pred():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"timed out after {timeout}s waiting for {what}; "
                        f"messages={[m.body if isinstance(m.body, str) else len(m.body) for m in self.messages][:20]} "
                        f"errors={[(e.headers, e.body) for e in self.errors]}"
                    )
                self.cond.wait(left)

    def wait_messages(self, n, timeout=5.0):
        self._wait(lambda: len(self.messages) >= n, timeout, f"{n} message(s)")
        return list(self.messages)

    def wait_receipt(self, rid, timeout=5.0):
        self._wait(lambda: rid in self.receipts, timeout, f"receipt {rid!r}")

    def wait_error(self, timeout=5.0):
        self._wait(lambda: len(self.errors) > 0, timeout, "an ERROR frame")
        return self.errors[0]

    def wait_disconnected(self, timeout=5.0):
        self._wait(lambda: self.disconnected, timeout, "disconnect")

    def quiet_for(self, seconds):
        """Sleep `seconds` and return the messages that arrived meanwhile (or before)."""
        time.sleep(seconds)
        with self.cond:
            return list(self.messages)

    def bodies(self):
        with self.cond:
            return [m.body for m in self.messages]


CONN_CLASSES = {
    "1.0": stomp.Connection10,
    "1.1": stomp.Connection11,
    "1.2": stomp.Connection12,
}


def ack_args(frame, version):
    """Arguments for conn.ack / conn.nack for a received MESSAGE frame."""
    h = frame.headers
    if version == "1.2":
        return (h["ack"],)
    if version == "1.1":
        return (h["message-id"], h["subscription"])
    return (h["message-id"],)


def close_conn(conn, timeout=2.0):
    """DISCONNECT (bounded wait for the receipt), then drop the socket regardless."""
    try:
        if conn.is_connected():
            conn.disconnect()
            wait_for(lambda: not conn.is_connected(), timeout=timeout)
    except Exception:
        pass
    try:
        conn.transport.disconnect_socket()
    except Exception:
        pass


def drop_conn(conn):
    """Abrupt close: no DISCONNECT frame, just the TCP socket (simulates a crashed client)."""
    try:
        conn.transport.disconnect_socket()
    except Exception:
        pass


@pytest.fixture
def stomp_client(broker):
    made = []

    def make(version="1.2", login="guest", passcode="guest", heartbeats=(0, 0),
             auto_decode=True, headers=None, expect_connected=True, target=None,
             listeners=None, with_connect_command=False, **kw):
        b = target or broker
        cls = CONN_CLASSES[version]
        args = dict(reconnect_attempts_max=1, auto_decode=auto_decode)
        if version != "1.0":
            args["heartbeats"] = heartbeats
            # RabbitMQ reads the 1.2 host header as a vhost; Ferry gets stomp.py's default
            vhost = os.environ.get("FERRY_STOMP_VHOST") or (
                "/" if isinstance(b, ExternalBroker) else None)
            if vhost:
                args["vhost"] = vhost
        args.update(kw)
        conn = cls([b.addr], **args)
        listener = Collector()
        conn.set_listener("collector", listener)
        for name, extra in (listeners or {}).items():
            conn.set_listener(name, extra)
        made.append(conn)
        if version == "1.0":
            conn.connect(login, passcode, wait=False, headers=headers or {})
        else:
            conn.connect(login, passcode, wait=False, headers=headers or {},
                         with_connect_command=with_connect_command)
        if expect_connected:
            wait_for(lambda: conn.is_connected() or listener.errors or listener.disconnected,
                     timeout=5, what="CONNECTED")
            if not conn.is_connected():
                raise AssertionError(
                    f"stomp.py {version} did not connect: errors="
                    f"{[(e.headers, e.body) for e in listener.errors]} disconnected={listener.disconnected}"
                )
        return conn, listener

    yield make
    for c in made:
        close_conn(c)


def subscribe_sync(conn, listener, destination, sub_id=None, ack="auto", version="1.2", headers=None):
    """SUBSCRIBE with a receipt and wait for it, so the subscription is live before we publish."""
    sub_id = sub_id or uniq("sub")
    rid = uniq("rsub")
    h = dict(headers or {})
    h["receipt"] = rid
    if version == "1.0":
        conn.subscribe(destination, id=sub_id, ack=ack, headers=h)
    else:
        conn.subscribe(destination, sub_id, ack=ack, headers=h)
    listener.wait_receipt(rid)
    return sub_id


def send_sync(conn, listener, destination, body, headers=None, **kw):
    """SEND with a receipt and wait for it."""
    rid = uniq("rsend")
    h = dict(headers or {})
    h["receipt"] = rid
    conn.send(destination, body, headers=h, **kw)
    listener.wait_receipt(rid)


# --------------------------------------------------------------------------- raw socket side


class RawFrame:
    def __init__(self, cmd, headers, body):
        self.cmd = cmd
        self.headers = headers
        self.body = body

    def __repr__(self):
        return f"RawFrame({self.cmd!r}, {self.headers!r}, {self.body[:200]!r})"


def _unescape(v):
    out, i = [], 0
    table = {"n": "\n", "r": "\r", "c": ":", "\\": "\\"}
    while i < len(v):
        ch = v[i]
        if ch == "\\" and i + 1 < len(v) and v[i + 1] in table:
            out.append(table[v[i + 1]])
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


class RawConn:
    """A bare TCP STOMP connection for byte-level and misbehaving-client tests."""

    def __init__(self, addr, timeout=5.0):
        self.sock = socket.create_connection(addr, timeout=timeout)
        self.buf = b""
        self.eof = False
        self.eof_reason = None
        self.heartbeats = 0  # bare EOLs received between frames
        self.unescape = True

    def send(self, data):
        """Send bytes; returns False if the peer already closed/reset the socket."""
        if isinstance(data, str):
            data = data.encode()
        try:
            self.sock.sendall(data)
            return True
        except OSError:
            return False

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(1 << 16)
        except socket.timeout:
            raise TimeoutError
        except OSError as e:  # ECONNRESET counts as the peer closing
            self.eof, self.eof_reason = True, repr(e)
            return
        if not data:
            self.eof, self.eof_reason = True, "FIN"
        self.buf += data

    def _try_parse(self):
        # leading EOLs are heart-beats
        while self.buf[:1] == b"\n" or self.buf[:2] == b"\r\n":
            self.heartbeats += 1
            self.buf = self.buf[1:] if self.buf[:1] == b"\n" else self.buf[2:]
        end = self.buf.find(b"\n\n")
        end_crlf = self.buf.find(b"\r\n\r\n")
        if end < 0 and end_crlf < 0:
            return None
        if end_crlf >= 0 and (end < 0 or end_crlf < end):
            head, body_start = self.buf[:end_crlf], end_crlf + 4
        else:
            head, body_start = self.buf[:end], end + 2
        lines = head.decode("utf-8", "replace").replace("\r\n", "\n").split("\n")
        cmd, headers = lines[0], {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            if self.unescape:
                k, v = _unescape(k), _unescape(v)
            headers.setdefault(k, v)
        if "content-length" in headers:
            n = int(headers["content-length"])
            if len(self.buf) < body_start + n + 1:
                return None
            body = self.buf[body_start:body_start + n]
            rest = self.buf[body_start + n + 1:]
        else:
            nul = self.buf.find(b"\x00", body_start)
            if nul < 0:
                return None
            body = self.buf[body_start:nul]
            rest = self.buf[nul + 1:]
        self.buf = rest
        return RawFrame(cmd, headers, body)

    def read_frame(self, timeout=5.0):
        """Next frame; None on EOF; raises TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            f = self._try_parse()
            if f is not None:
                return f
            if self.eof:
                return None
            self._fill(deadline)

    def expect_frame(self, cmd, timeout=5.0):
        try:
            f = self.read_frame(timeout)
        except TimeoutError:
            raise AssertionError(f"no {cmd} frame within {timeout}s (buffer={self.buf[:300]!r})")
        assert f is not None, f"connection closed ({self.eof_reason}) before a {cmd} frame"
        assert f.cmd == cmd, f"expected {cmd}, got {f!r}"
        return f

    def wait_eof(self, timeout=1.0):
        """Read (discarding) until EOF; returns seconds taken or raises AssertionError."""
        t0 = time.monotonic()
        deadline = t0 + timeout
        while not self.eof:
            try:
                self._fill(deadline)
            except TimeoutError:
                raise AssertionError(f"broker did not close the socket within {timeout}s")
        return time.monotonic() - t0

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def frame_bytes(cmd, headers=(), body=b""):
    if isinstance(body, str):
        body = body.encode()
    out = cmd + "\n" + "".join(f"{k}:{v}\n" for k, v in headers) + "\n"
    return out.encode() + body + b"\x00"


def connect_frame(version="1.2", login="guest", passcode="guest", heart_beat=None, extra=()):
    h = []
    if version is not None:
        h.append(("accept-version", version))
    h.append(("host", "/"))
    if login is not None:
        h += [("login", login), ("passcode", passcode)]
    if heart_beat is not None:
        h.append(("heart-beat", heart_beat))
    h += list(extra)
    return frame_bytes("CONNECT", h)


@pytest.fixture
def raw(broker):
    made = []

    def make(version="1.2", connect=True, target=None, **kw):
        b = target or broker
        c = RawConn(b.addr)
        made.append(c)
        if connect:
            c.send(connect_frame(version, **kw))
            c.expect_frame("CONNECTED")
        return c

    yield make
    for c in made:
        c.close()
