"""Frame-level behaviour: receipts, headers, escaping, bodies, persistence."""

import os

import pytest

from conftest import BOTH_SHARDS, ack_args, send_sync, subscribe_sync, uniq


def test_receipts_on_send_subscribe_unsubscribe_ack_disconnect(stomp_client):
    q = f"/queue/{uniq('q')}"
    c, lis = stomp_client()
    c.subscribe(q, "s1", ack="client-individual", headers={"receipt": "r-sub"})
    lis.wait_receipt("r-sub")
    c.send(q, "x", headers={"receipt": "r-send"})
    lis.wait_receipt("r-send")
    (m,) = lis.wait_messages(1)
    c.ack(*ack_args(m, "1.2"), receipt="r-ack")
    lis.wait_receipt("r-ack")
    c.unsubscribe("s1", headers={"receipt": "r-unsub"})
    lis.wait_receipt("r-unsub")
    # DISCONNECT via send_frame so stomp.py does not block in transport.stop()
    c.send_frame("DISCONNECT", {"receipt": "r-disc"})
    lis.wait_receipt("r-disc")


def test_receipt_id_is_exact(raw):
    c = raw()
    rid = "weird-id_123.456"
    c.send(b"SEND\ndestination:/queue/" + uniq("q").encode() + b"\nreceipt:" + rid.encode() + b"\n\nx\x00")
    f = c.expect_frame("RECEIPT")
    assert f.headers["receipt-id"] == rid


@BOTH_SHARDS
def test_message_headers_1_2(stomp_client):
    q = f"/queue/{uniq('q')}"
    c, lis = stomp_client()
    sid = subscribe_sync(c, lis, q, ack="client-individual")
    send_sync(c, lis, q, "h")
    (m,) = lis.wait_messages(1)
    assert m.headers["destination"] == q
    assert m.headers.get("message-id")
    assert m.headers["subscription"] == sid
    assert m.headers.get("ack"), f"1.2 MESSAGE lacks ack header: {m.headers}"


@BOTH_SHARDS
def test_custom_headers_and_content_type_round_trip(stomp_client):
    q = f"/queue/{uniq('q')}"
    c, lis = stomp_client()
    subscribe_sync(c, lis, q)
    custom = {"x-custom": "v1", "order-id": "42", "JMSType": "invoice", "x-empty": "",
              "x-utf8": "ünïcødé ✓ 日本", "x-long": "L" * 10000}
    send_sync(c, lis, q, '{"a": 1}', headers=custom, content_type="application/json")
    (m,) = lis.wait_messages(1)
    assert m.body == '{"a": 1}'
    assert m.headers.get("content-type") == "application/json", m.headers
    for k, v in custom.items():
        assert m.headers.get(k) == v, f"header {k!r}: got {m.headers.get(k)!r:.200}, want {v!r:.200}"


@pytest.mark.parametrize("version", ["1.1", "1.2"])
def test_header_escaping_round_trip(stomp_client, version):
    q = f"/queue/{uniq('q')}"
    c, lis = stomp_client(version)
    subscribe_sync(c, lis, q, version=version)
    value = "a:b\nc\\d::e"
    send_sync(c, lis, q, "esc", headers={"x-tricky": value, "x-colon": "k:v"})
    (m,) = lis.wait_messages(1)
    assert m.headers.get("x-tricky") == value, m.headers
    assert m.headers.get("x-colon") == "k:v"


def test_header_escaping_on_the_wire_1_2(raw):
    """The broker itself must escape ':' and newline when it writes a MESSAGE (1.2)."""
    q = f"/queue/{uniq('q')}"
    c = raw("1.2")
    c.send(f"SUBSCRIBE\ndestination:{q}\nid:s\nreceipt:rs\n\n\x00")
    c.expect_frame("RECEIPT")
    c.send(f"SEND\ndestination:{q}\nx-tricky:a\\cb\\nc\\\\d\n\nbody\x00")
    c.unescape = False
    f = c.expect_frame("MESSAGE")
    assert f.headers.get("x-tricky") == "a\\cb\\nc\\\\d", f"raw header: {f.headers.get('x-tricky')!r}"


@BOTH_SHARDS
def test_one_mib_body_byte_exact(stomp_client):
    q = f"/queue/{uniq('q')}"
    c, lis = stomp_client(auto_decode=False)
    subscribe_sync(c, lis, q)
    body = os.urandom(1 << 20)
    send_sync(c, lis, q, body, content_type="application/octet-stream")
    (m,) = lis.wait_messages(1, timeout=10)
    assert isinstance(m.body, bytes)
    assert len(m.body) == len(body)
    assert m.body == body
    assert m.headers.get("content-length") == str(len(body))


@BOTH_SHARDS
def test_body_with_nul_bytes(stomp_client):
    q = f"/queue/{uniq('q')}"
    c, lis = stomp_client(auto_decode=False)
    subscribe_sync(c, lis, q)
    body = b"\x00start\x00middle\x00\x00end\x00"
    send_sync(c, lis, q, body)
    (m,) = lis.wait_messages(1)
    assert m.body == body


def test_empty_body(stomp_client):
    q = f"/queue/{uniq('q')}"
    c, lis = stomp_client()
    subscribe_sync(c, lis, q)
    send_sync(c, lis, q, "")
    (m,) = lis.wait_messages(1)
    assert m.body == ""


def test_utf8_body(stomp_client):
    q = f"/queue/{uniq('q')}"
    c, lis = stomp_client()
    subscribe_sync(c, lis, q)
    text = "héllo wörld ✓ 日本語"
    send_sync(c, lis, q, text, content_type="text/plain;charset=utf-8")
    (m,) = lis.wait_messages(1)
    assert m.body == text


@BOTH_SHARDS
def test_persistent_send_with_receipt(stomp_client):
    q = f"/queue/{uniq('q')}"
    c, lis = stomp_client()
    send_sync(c, lis, q, "durable", headers={"persistent": "true"})
    subscribe_sync(c, lis, q)
    (m,) = lis.wait_messages(1)
    assert m.body == "durable"
    assert m.headers.get("persistent") == "true", m.headers


@BOTH_SHARDS
def test_persistent_message_survives_restart(broker, broker_factory, stomp_client):
    q = f"/queue/{uniq('q')}"
    c, lis = stomp_client()
    send_sync(c, lis, q, "survivor", headers={"persistent": "true"})
    code = broker.stop()
    assert code == 0, f"broker exit code after SIGTERM: {code}"
    b2 = broker_factory(shards=broker.shards, data_dir=broker.data_dir, name="restarted")
    c2, l2 = stomp_client(target=b2)
    subscribe_sync(c2, l2, q)
    (m,) = l2.wait_messages(1)
    assert m.body == "survivor"
