"""Misbehaving clients get an ERROR frame (with a `message` header) and are closed within
1 s, while a healthy stomp.py connection on the same broker keeps working."""

import threading

import pytest

from conftest import RawConn, send_sync, subscribe_sync, uniq

LIMITS = """
[limits]
frame_size_bytes_max = 65536
frame_header_count_max = 32
connect_timeout_ms = 1000
"""

pytestmark = pytest.mark.ferry(config=LIMITS)

Q = "/queue/bad-input-target"


def _many_headers(n):
    return "".join(f"x-h{i}:{i}\n" for i in range(n))


# (id, send CONNECT first?, payload)
CASES = [
    ("send-before-connect", False, f"SEND\ndestination:{Q}\n\nearly\x00".encode()),
    ("subscribe-before-connect", False, f"SUBSCRIBE\ndestination:{Q}\nid:s\n\n\x00".encode()),
    ("tls-hello-on-plain-port", False, bytes.fromhex("160301020001") + b"\x00" * 32),
    ("unknown-command", True, b"FROBNICATE\nfoo:bar\n\n\x00"),
    ("lowercase-command", True, f"send\ndestination:{Q}\n\nx\x00".encode()),
    ("header-without-colon", True, f"SEND\ndestination:{Q}\nnocolonhere\n\nbody\x00".encode()),
    ("content-length-not-a-number", True,
     f"SEND\ndestination:{Q}\ncontent-length:abc\n\nbody\x00".encode()),
    ("content-length-mismatch", True,
     f"SEND\ndestination:{Q}\ncontent-length:2\n\nabcdef\x00".encode()),
    ("invalid-escape-1.2", True, f"SEND\ndestination:{Q}\nx-bad:a\\tb\n\nbody\x00".encode()),
    ("oversize-with-content-length", True,
     f"SEND\ndestination:{Q}\ncontent-length:80000\n\n".encode() + b"x" * 80000 + b"\x00"),
    ("oversize-without-content-length", True,
     f"SEND\ndestination:{Q}\n\n".encode() + b"x" * 80000 + b"\x00"),
    ("too-many-headers", True,
     f"SEND\ndestination:{Q}\n{_many_headers(100)}\nbody\x00".encode()),
    ("send-without-destination", True, b"SEND\nx:y\n\nbody\x00"),
    ("subscribe-without-id-1.2", True, f"SUBSCRIBE\ndestination:{Q}\n\n\x00".encode()),
    ("unknown-destination-type", True, b"SEND\ndestination:/bogus/x\n\nbody\x00"),
    ("ack-unknown-id", True, b"ACK\nid:no-such-ack-id\n\n\x00"),
    ("duplicate-subscription-id", True,
     f"SUBSCRIBE\ndestination:{Q}\nid:dup\n\n\x00SUBSCRIBE\ndestination:/queue/other\nid:dup\n\n\x00".encode()),
]


class Healthy:
    """A well-behaved stomp.py connection that must keep working."""

    def __init__(self, stomp_client):
        self.q = f"/queue/{uniq('healthy')}"
        self.conn, self.lis = stomp_client()
        subscribe_sync(self.conn, self.lis, self.q)
        self.n = 0

    def check(self):
        assert self.conn.is_connected(), "healthy connection was dropped"
        self.n += 1
        send_sync(self.conn, self.lis, self.q, f"ok{self.n}")
        got = self.lis.wait_messages(self.n)
        assert got[-1].body == f"ok{self.n}"


def _expect_error_then_close(c, sent_ok):
    try:
        f = c.read_frame(timeout=1.0)
    except TimeoutError:
        raise AssertionError(f"no ERROR frame and no close within 1 s (sent_ok={sent_ok})")
    assert f is not None, (
        f"no ERROR frame: socket closed first ({c.eof_reason}); sent_ok={sent_ok}")
    assert f.cmd == "ERROR", f"expected ERROR, got {f!r}"
    assert f.headers.get("message"), f"ERROR without message header: {f.headers}"
    c.wait_eof(timeout=1.0)
    return f


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gets_error_then_close(broker, raw, stomp_client, case):
    name, connect_first, payload = case
    healthy = Healthy(stomp_client)
    healthy.check()
    c = raw(connect=connect_first)
    sent_ok = c.send(payload)
    _expect_error_then_close(c, sent_ok)
    healthy.check()
    assert broker.alive(), "broker process died"


def test_bad_input_burst_does_not_disturb_others(broker, stomp_client):
    healthy = Healthy(stomp_client)
    errors = []

    def bad(payload, connect_first):
        c = RawConn(broker.addr)
        try:
            if connect_first:
                c.send(b"CONNECT\naccept-version:1.2\nhost:/\nlogin:guest\npasscode:guest\n\n\x00")
                c.expect_frame("CONNECTED")
            c.send(payload)
            _expect_error_then_close(c, True)
        except BaseException as e:  # collected and reported below
            errors.append(repr(e))
        finally:
            c.close()

    threads = [threading.Thread(target=bad, args=(p, cf), daemon=True)
               for _, cf, p in CASES[:12] for _ in range(2)]
    for t in threads:
        t.start()
    for _ in range(5):
        healthy.check()
    for t in threads:
        t.join(timeout=10)
    assert not any(t.is_alive() for t in threads), "a bad-input client hung"
    assert errors == [], errors
    healthy.check()


def test_frame_just_under_limit_is_accepted(stomp_client):
    c, lis = stomp_client()
    q = f"/queue/{uniq('q')}"
    subscribe_sync(c, lis, q)
    body = "y" * 60000
    send_sync(c, lis, q, body)
    assert lis.wait_messages(1)[0].body == body


def test_silent_socket_closed_after_connect_timeout(raw, stomp_client):
    """connect_timeout_ms = 1000: a socket that never sends CONNECT is closed."""
    healthy = Healthy(stomp_client)
    c = raw(connect=False)
    c.wait_eof(timeout=3.0)
    healthy.check()


def test_partial_connect_closed_after_connect_timeout(raw):
    c = raw(connect=False)
    c.send(b"CONNECT\naccept-version:1.2\nhost:/\n")  # never finished
    c.wait_eof(timeout=3.0)
