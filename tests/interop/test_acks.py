"""Ack modes, redelivery, NACK and prefetch (shards 1 and 2)."""

import pytest

from conftest import (BOTH_SHARDS, ack_args, close_conn, drop_conn, send_sync, subscribe_sync,
                      uniq)

pytestmark = BOTH_SHARDS


def _ack(conn, lis, frame, version="1.2", transaction=None):
    rid = uniq("rack")
    conn.ack(*ack_args(frame, version), transaction=transaction, receipt=rid)
    lis.wait_receipt(rid)


def _fill(stomp_client, q, bodies):
    prod, plis = stomp_client()
    for b in bodies:
        send_sync(prod, plis, q, b)
    return prod, plis


def _not_redelivered(frame):
    return frame.headers.get("redelivered", "false") == "false"


def test_auto_ack_not_redelivered(stomp_client):
    q = f"/queue/{uniq('q')}"
    _fill(stomp_client, q, ["a1"])
    c1, l1 = stomp_client()
    subscribe_sync(c1, l1, q, ack="auto")
    assert l1.wait_messages(1)[0].body == "a1"
    close_conn(c1)
    c2, l2 = stomp_client()
    subscribe_sync(c2, l2, q, ack="auto")
    assert l2.quiet_for(0.5) == [], "auto-acked message was delivered again"


@pytest.mark.parametrize("close", ["disconnect", "socket-drop"])
@pytest.mark.parametrize("mode", ["client", "client-individual"])
def test_unacked_redelivered_after_disconnect(stomp_client, mode, close):
    q = f"/queue/{uniq('q')}"
    _fill(stomp_client, q, ["r1"])
    c1, l1 = stomp_client()
    subscribe_sync(c1, l1, q, ack=mode)
    (first,) = l1.wait_messages(1)
    assert first.body == "r1"
    assert _not_redelivered(first), f"first delivery marked redelivered: {first.headers}"
    assert first.headers.get("ack"), f"1.2 MESSAGE in {mode} mode lacks ack header: {first.headers}"
    if close == "disconnect":
        close_conn(c1)
    else:
        drop_conn(c1)
    c2, l2 = stomp_client()
    subscribe_sync(c2, l2, q, ack=mode)
    (again,) = l2.wait_messages(1)
    assert again.body == "r1"
    assert again.headers.get("redelivered") == "true", f"headers: {again.headers}"
    _ack(c2, l2, again)
    close_conn(c2)
    c3, l3 = stomp_client()
    subscribe_sync(c3, l3, q, ack=mode)
    assert l3.quiet_for(0.5) == [], "acked message was delivered again"


@pytest.mark.parametrize("mode", ["client", "client-individual"])
def test_unacked_redelivered_after_unsubscribe(stomp_client, mode):
    q = f"/queue/{uniq('q')}"
    _fill(stomp_client, q, ["u1"])
    c, lis = stomp_client()
    sid = subscribe_sync(c, lis, q, ack=mode)
    assert lis.wait_messages(1)[0].body == "u1"
    c.unsubscribe(sid, headers={"receipt": "r-unsub"})
    lis.wait_receipt("r-unsub")
    subscribe_sync(c, lis, q, ack=mode)
    msgs = lis.wait_messages(2)
    assert msgs[1].body == "u1"
    assert msgs[1].headers.get("redelivered") == "true", f"headers: {msgs[1].headers}"


@pytest.mark.parametrize("version", ["1.1", "1.2"])
def test_client_ack_is_cumulative(stomp_client, version):
    q = f"/queue/{uniq('q')}"
    _fill(stomp_client, q, ["c1", "c2", "c3"])
    c, lis = stomp_client(version)
    subscribe_sync(c, lis, q, ack="client", version=version)
    msgs = lis.wait_messages(3)
    assert [m.body for m in msgs] == ["c1", "c2", "c3"]
    _ack(c, lis, msgs[1], version)  # acks c1 and c2
    close_conn(c)
    c2, l2 = stomp_client(version)
    subscribe_sync(c2, l2, q, ack="client", version=version)
    l2.wait_messages(1)
    got = l2.quiet_for(0.5)
    assert [m.body for m in got] == ["c3"], "client ack must be cumulative"
    assert got[0].headers.get("redelivered") == "true"


def test_client_individual_ack_is_not_cumulative(stomp_client):
    q = f"/queue/{uniq('q')}"
    _fill(stomp_client, q, ["i1", "i2", "i3"])
    c, lis = stomp_client()
    subscribe_sync(c, lis, q, ack="client-individual")
    msgs = lis.wait_messages(3)
    _ack(c, lis, msgs[1])  # acks only i2
    close_conn(c)
    c2, l2 = stomp_client()
    subscribe_sync(c2, l2, q, ack="client-individual")
    l2.wait_messages(2)
    got = l2.quiet_for(0.5)
    assert sorted(m.body for m in got) == ["i1", "i3"]
    assert all(m.headers.get("redelivered") == "true" for m in got), [m.headers for m in got]


def test_client_ack_1_0(stomp_client):
    q = f"/queue/{uniq('q')}"
    _fill(stomp_client, q, ["z1"])
    c, lis = stomp_client("1.0")
    subscribe_sync(c, lis, q, ack="client", version="1.0")
    (m,) = lis.wait_messages(1)
    _ack(c, lis, m, "1.0")
    close_conn(c)
    c2, l2 = stomp_client("1.0")
    subscribe_sync(c2, l2, q, ack="client", version="1.0")
    assert l2.quiet_for(0.5) == []


@pytest.mark.parametrize("version", ["1.1", "1.2"])
def test_nack_requeues(stomp_client, version):
    q = f"/queue/{uniq('q')}"
    _fill(stomp_client, q, ["n1"])
    c, lis = stomp_client(version)
    subscribe_sync(c, lis, q, ack="client-individual", version=version)
    (m,) = lis.wait_messages(1)
    rid = uniq("rnack")
    c.nack(*ack_args(m, version), receipt=rid)
    lis.wait_receipt(rid)
    msgs = lis.wait_messages(2)
    assert msgs[1].body == "n1"
    assert msgs[1].headers.get("redelivered") == "true", msgs[1].headers


def test_nack_requeue_false_drops(stomp_client):
    q = f"/queue/{uniq('q')}"
    _fill(stomp_client, q, ["d1", "d2"])
    c, lis = stomp_client()
    subscribe_sync(c, lis, q, ack="client-individual")
    msgs = lis.wait_messages(2)
    rid = uniq("rnack")
    c.nack(*ack_args(msgs[0], "1.2"), receipt=rid, requeue="false")
    lis.wait_receipt(rid)
    _ack(c, lis, msgs[1])
    assert len(lis.quiet_for(0.5)) == 2, "nack requeue:false must not redeliver"
    close_conn(c)
    c2, l2 = stomp_client()
    subscribe_sync(c2, l2, q, ack="client-individual")
    assert l2.quiet_for(0.5) == [], "dropped message came back"


@pytest.mark.parametrize("header,value", [("prefetch-count", "2"), ("activemq.prefetchSize", "2")])
def test_prefetch_limits_unacked(stomp_client, header, value):
    q = f"/queue/{uniq('q')}"
    _fill(stomp_client, q, [f"p{i}" for i in range(5)])
    c, lis = stomp_client()
    subscribe_sync(c, lis, q, ack="client-individual", headers={header: value})
    lis.wait_messages(2, timeout=2)
    got = lis.quiet_for(0.5)
    assert [m.body for m in got] == ["p0", "p1"], f"{header}:{value} delivered {len(got)} unacked"
    _ack(c, lis, got[0])
    lis.wait_messages(3)
    got = lis.quiet_for(0.3)
    assert [m.body for m in got] == ["p0", "p1", "p2"], "one ack must open exactly one slot"
    for m in got[1:]:
        _ack(c, lis, m)
    lis.wait_messages(5)
    assert [m.body for m in lis.quiet_for(0.2)] == [f"p{i}" for i in range(5)]


def test_prefetch_with_cumulative_client_ack(stomp_client):
    q = f"/queue/{uniq('q')}"
    _fill(stomp_client, q, [f"p{i}" for i in range(6)])
    c, lis = stomp_client()
    subscribe_sync(c, lis, q, ack="client", headers={"prefetch-count": "2"})
    lis.wait_messages(2, timeout=2)
    got = lis.quiet_for(0.5)
    assert [m.body for m in got] == ["p0", "p1"]
    _ack(c, lis, got[1])  # cumulative: frees both slots
    lis.wait_messages(4)
    got = lis.quiet_for(0.3)
    assert [m.body for m in got] == ["p0", "p1", "p2", "p3"]
    _ack(c, lis, got[3])
    lis.wait_messages(6)
    assert [m.body for m in lis.quiet_for(0.2)] == [f"p{i}" for i in range(6)]


@pytest.mark.parametrize("mode", ["client", "client-individual"])
def test_ack_id_of_another_connection_is_an_error(stomp_client, mode):
    """A client that reconnects and replays an ack id from its previous connection gets an ERROR;
    the new connection's delivery with the same sequence number stays unacked. (Before the fix
    only the id's last number was read, so the stale ack settled the wrong message: after a
    failover this showed up as messages delivered again after their ack was confirmed.)"""
    q = f"/queue/{uniq('q')}"
    _fill(stomp_client, q, ["x1", "x2"])
    c1, l1 = stomp_client()
    subscribe_sync(c1, l1, q, ack=mode, headers={"prefetch-count": "1"})
    (first,) = l1.wait_messages(1)
    c2, l2 = stomp_client()
    subscribe_sync(c2, l2, q, ack=mode, headers={"prefetch-count": "1"})
    (second,) = l2.wait_messages(1)
    assert {first.body, second.body} == {"x1", "x2"}
    stale = uniq("stale")
    c2.ack(first.headers["ack"], receipt=stale)
    err = l2.wait_error()
    assert "no unacknowledged delivery" in err.body, (err.headers, err.body)
    assert stale not in l2.receipts, "a stale ack id must not be receipted"
    close_conn(c1)
    c3, l3 = stomp_client()
    subscribe_sync(c3, l3, q, ack=mode)
    l3.wait_messages(2)
    got = l3.quiet_for(0.3)
    assert sorted(m.body for m in got) == ["x1", "x2"], "the stale ack settled a delivery"
