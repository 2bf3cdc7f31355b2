"""Byte-level robustness: pipelining, fragmentation, repeated headers, cross-version headers."""

import time

from conftest import BOTH_SHARDS, ack_args, close_conn, send_sync, subscribe_sync, uniq

CONNECT12 = b"CONNECT\naccept-version:1.2\nhost:/\nlogin:guest\npasscode:guest\n\n\x00"


def test_pipelined_frames_in_one_write(raw):
    q = f"/queue/{uniq('q')}"
    c = raw(connect=False)
    blob = (CONNECT12 + b"\n"
            + f"SUBSCRIBE\ndestination:{q}\nid:s\n\n\x00\n\n".encode()
            + b"".join(f"SEND\ndestination:{q}\n\nm{i}\x00\r\n".encode() for i in range(5))
            + f"SEND\ndestination:/queue/{uniq('other')}\nreceipt:last\n\nx\x00".encode())
    assert c.send(blob)
    c.expect_frame("CONNECTED")
    frames = []
    while len(frames) < 6:
        f = c.read_frame(timeout=5)
        assert f is not None, f"closed after {frames}"
        frames.append(f)
    assert [f.body for f in frames if f.cmd == "MESSAGE"] == [f"m{i}".encode() for i in range(5)]
    assert [f.headers.get("receipt-id") for f in frames if f.cmd == "RECEIPT"] == ["last"]


def test_frames_split_byte_by_byte(raw):
    q = f"/queue/{uniq('q')}"
    c = raw(connect=False)
    blob = (CONNECT12 + f"SUBSCRIBE\ndestination:{q}\nid:s\n\n\x00".encode()
            + f"SEND\ndestination:{q}\ncontent-length:5\n\na\x00b\x00c\x00".encode())
    for i in range(len(blob)):
        assert c.send(blob[i:i + 1])
        if i % 16 == 0:
            time.sleep(0.001)
    c.expect_frame("CONNECTED")
    f = c.expect_frame("MESSAGE")
    assert f.body == b"a\x00b\x00c"


def test_repeated_header_first_wins_1_2(raw):
    q = f"/queue/{uniq('q')}"
    c = raw()
    c.send(f"SUBSCRIBE\ndestination:{q}\nid:s\nreceipt:r\n\n\x00")
    c.expect_frame("RECEIPT")
    c.send(f"SEND\ndestination:{q}\nx-dup:first\nx-dup:second\n\nd\x00")
    f = c.expect_frame("MESSAGE")
    assert f.headers["x-dup"] == "first"


def test_1_0_header_values_are_not_unescaped(raw):
    """STOMP 1.0 has no escaping: a 1.0 sender's 'a:b' and literal backslashes reach a 1.2
    receiver as the same characters (escaped on the 1.2 wire)."""
    q = f"/queue/{uniq('q')}"
    rx = raw("1.2")
    rx.send(f"SUBSCRIBE\ndestination:{q}\nid:s\nreceipt:r\n\n\x00")
    rx.expect_frame("RECEIPT")
    tx = raw("1.0")
    tx.send(f"SEND\ndestination:{q}\nx-v:a:b\\cd\nreceipt:r0\n\nv\x00")
    tx.expect_frame("RECEIPT")
    f = rx.expect_frame("MESSAGE")
    assert f.headers.get("x-v") == "a:b\\cd", f"1.0 value 'a:b\\\\cd' arrived as {f.headers.get('x-v')!r}"


@BOTH_SHARDS
def test_redelivery_keeps_body_and_headers(stomp_client):
    q = f"/queue/{uniq('q')}"
    c, lis = stomp_client()
    send_sync(c, lis, q, "payload", headers={"x-keep": "yes"}, content_type="text/x-test")
    subscribe_sync(c, lis, q, ack="client")
    lis.wait_messages(1)
    close_conn(c)
    c2, l2 = stomp_client()
    subscribe_sync(c2, l2, q, ack="client")
    (r,) = l2.wait_messages(1)
    assert r.body == "payload"
    assert r.headers.get("x-keep") == "yes" and r.headers.get("content-type") == "text/x-test"
    assert r.headers["redelivered"] == "true"
    # (message-id may change: like RabbitMQ's, it names the delivery, not the message)


@BOTH_SHARDS
def test_message_ids_unique(stomp_client):
    q = f"/queue/{uniq('q')}"
    c, lis = stomp_client()
    subscribe_sync(c, lis, q, ack="client-individual")
    for i in range(30):
        c.send(q, str(i))
    msgs = lis.wait_messages(30)
    ids = [m.headers["message-id"] for m in msgs]
    acks = [m.headers["ack"] for m in msgs]
    assert len(set(ids)) == 30 and len(set(acks)) == 30
    for m in msgs:
        c.ack(*ack_args(m, "1.2"))


def test_unsubscribe_stops_delivery(stomp_client):
    key = f"u.{uniq('t').replace('-', '')}"
    c, lis = stomp_client()
    sid = subscribe_sync(c, lis, f"/topic/{key}")
    prod, plis = stomp_client()
    send_sync(prod, plis, f"/topic/{key}", "before")
    lis.wait_messages(1)
    c.unsubscribe(sid, headers={"receipt": "r-unsub"})
    lis.wait_receipt("r-unsub")
    send_sync(prod, plis, f"/topic/{key}", "after")
    assert [m.body for m in lis.quiet_for(0.4)] == ["before"]


def test_reply_to_closed_requester_is_harmless(stomp_client):
    service_q = f"/queue/{uniq('svc')}"
    replier, rlis = stomp_client()
    subscribe_sync(replier, rlis, service_q)
    requester, qlis = stomp_client()
    send_sync(requester, qlis, service_q, "ping", headers={"reply-to": "/temp-queue/gone"})
    (req,) = rlis.wait_messages(1)
    close_conn(requester)
    send_sync(replier, rlis, req.headers["reply-to"], "pong to nobody")
    assert replier.is_connected()
    send_sync(replier, rlis, service_q, "still working")
    assert rlis.wait_messages(2)[1].body == "still working"


def test_1_0_subscribe_and_unsubscribe_by_destination(raw):
    """STOMP 1.0: SUBSCRIBE without id, UNSUBSCRIBE by destination."""
    q = f"/queue/{uniq('q')}"
    c = raw("1.0")
    c.send(f"SUBSCRIBE\ndestination:{q}\nreceipt:r-sub\n\n\x00")
    c.expect_frame("RECEIPT")
    c.send(f"SEND\ndestination:{q}\n\none\x00")
    assert c.expect_frame("MESSAGE").body == b"one"
    c.send(f"UNSUBSCRIBE\ndestination:{q}\nreceipt:r-unsub\n\n\x00")
    f = c.expect_frame("RECEIPT")
    assert f.headers["receipt-id"] == "r-unsub"
    c.send(f"SEND\ndestination:{q}\nreceipt:r-send\n\ntwo\x00")
    assert c.expect_frame("RECEIPT").headers["receipt-id"] == "r-send"
    try:
        f = c.read_frame(timeout=0.4)
        assert f is None or f.cmd != "MESSAGE", f"delivered after UNSUBSCRIBE: {f!r}"
    except TimeoutError:
        pass
