"""Heart-beats both ways."""

import time

import stomp

from conftest import BOTH_SHARDS, connect_frame, send_sync, subscribe_sync, uniq


@BOTH_SHARDS
def test_stomp_py_heartbeats_keep_connection_alive(stomp_client):
    tl = stomp.listener.TestListener()
    c, lis = stomp_client("1.2", heartbeats=(200, 200), listeners={"testlistener": tl})
    hb = lis.connected_frame.headers.get("heart-beat")
    assert hb == "200,200", f"client heart-beat:200,200 -> server heart-beat:{hb}"
    time.sleep(1.5)
    assert c.is_connected(), "connection dropped while idle with heart-beats on"
    assert not lis.disconnected
    assert tl.heartbeat_count >= 3, f"stomp.py saw only {tl.heartbeat_count} heart-beats in 1.5 s"
    assert lis.heartbeat_timeouts == 0 and tl.heartbeat_timeouts == 0
    q = f"/queue/{uniq('q')}"
    subscribe_sync(c, lis, q)
    send_sync(c, lis, q, "still alive")
    assert lis.wait_messages(1)[0].body == "still alive"


def test_server_floor_100ms(raw):
    c = raw(connect=False)
    c.send(connect_frame("1.2", heart_beat="10,10"))
    f = c.expect_frame("CONNECTED")
    sx, sy = (int(x) for x in f.headers["heart-beat"].split(","))
    assert sx >= 100 and sy >= 100, f"client 10,10 -> server {sx},{sy}: below the 100 ms floor"


def test_no_heartbeats_when_client_asks_none(raw):
    c = raw(connect=False)
    c.send(connect_frame("1.2", heart_beat="0,0"))
    f = c.expect_frame("CONNECTED")
    assert f.headers.get("heart-beat", "0,0") == "0,0"
    time.sleep(0.5)
    assert not c.eof


def test_raw_server_sends_heartbeats(raw):
    c = raw(connect=False)
    c.send(connect_frame("1.2", heart_beat="0,100"))
    f = c.expect_frame("CONNECTED")
    sx, sy = (int(x) for x in f.headers["heart-beat"].split(","))
    assert sx >= 100 and sy == 0, f"client 0,100 -> server heart-beat:{sx},{sy}"
    period = sx / 1000.0
    deadline = time.monotonic() + 6 * period
    while time.monotonic() < deadline:
        try:
            f = c.read_frame(timeout=deadline - time.monotonic())
            assert f is not None, f"broker closed the connection ({c.eof_reason})"
        except TimeoutError:
            break
    assert c.heartbeats >= 3, f"only {c.heartbeats} heart-beats in {6 * period:.2f}s (period {sx} ms)"


def test_raw_silent_client_is_disconnected(raw, stomp_client):
    c = raw(connect=False)
    c.send(connect_frame("1.2", heart_beat="100,0"))
    f = c.expect_frame("CONNECTED")
    t0 = time.monotonic()
    c.wait_eof(timeout=1.5)
    took = time.monotonic() - t0
    assert took >= 0.1, f"closed after {took:.3f}s: before even one heart-beat period"
    ok, lis = stomp_client()
    assert ok.is_connected()


def test_raw_heartbeating_client_stays_connected(raw):
    q = f"/queue/{uniq('q')}"
    c = raw(connect=False)
    c.send(connect_frame("1.2", heart_beat="100,0"))
    c.expect_frame("CONNECTED")
    end = time.monotonic() + 1.5
    while time.monotonic() < end:
        assert c.send(b"\n"), "broker closed a connection that was heart-beating"
        time.sleep(0.05)
    c.send(f"SEND\ndestination:{q}\nreceipt:r-alive\n\nx\x00")
    f = c.expect_frame("RECEIPT", timeout=2)
    assert f.headers["receipt-id"] == "r-alive"
