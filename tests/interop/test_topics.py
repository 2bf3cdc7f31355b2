"""/topic/, /exchange/ and /amq/queue/ destinations (shards 1 and 2)."""

import pytest

from conftest import BOTH_SHARDS, send_sync, subscribe_sync, uniq

pytestmark = BOTH_SHARDS


def test_topic_fanout_to_two_subscribers(stomp_client):
    key = f"news.{uniq('t').replace('-', '')}"
    s1, l1 = stomp_client()
    s2, l2 = stomp_client()
    subscribe_sync(s1, l1, f"/topic/{key}")
    subscribe_sync(s2, l2, f"/topic/{key}")
    prod, plis = stomp_client()
    send_sync(prod, plis, f"/topic/{key}", "to everyone")
    (m1,) = l1.wait_messages(1)
    (m2,) = l2.wait_messages(1)
    assert m1.body == m2.body == "to everyone"
    assert m1.headers["destination"] == f"/topic/{key}"
    assert len(l1.quiet_for(0.3)) == 1 and len(l2.messages) == 1


def test_topic_publish_without_subscribers_is_dropped(stomp_client):
    key = f"gone.{uniq('t').replace('-', '')}"
    prod, plis = stomp_client()
    send_sync(prod, plis, f"/topic/{key}", "nobody listens")
    sub, slis = stomp_client()
    subscribe_sync(sub, slis, f"/topic/{key}")
    send_sync(prod, plis, f"/topic/{key}", "after subscribe")
    (m,) = slis.wait_messages(1)
    assert m.body == "after subscribe"
    assert slis.quiet_for(0.3)[0].body == "after subscribe" and len(slis.messages) == 1


@pytest.mark.parametrize(
    "pattern,matching,non_matching",
    [
        ("{p}.*.red", ["{p}.car.red", "{p}.bike.red"], ["{p}.red", "{p}.car.big.red", "{p}.car.blue"]),
        ("{p}.#", ["{p}", "{p}.a", "{p}.a.b.c"], ["other.a", "x{p}.a"]),
        ("{p}.#.end", ["{p}.end", "{p}.a.end", "{p}.a.b.end"], ["{p}.a.b", "{p}.end.x"]),
        ("{p}.>", ["{p}.a", "{p}.a.b.c"], ["other.a"]),
        ("{p}.*", ["{p}.a"], ["{p}.a.b", "{p}"]),
    ],
    ids=["star", "hash", "hash-middle", "activemq-gt", "star-one-word"],
)
def test_topic_wildcards(stomp_client, pattern, matching, non_matching):
    p = uniq("w").replace("-", "")
    pattern = pattern.format(p=p)
    sub, slis = stomp_client()
    subscribe_sync(sub, slis, f"/topic/{pattern}")
    prod, plis = stomp_client()
    for key in non_matching:
        send_sync(prod, plis, f"/topic/{key.format(p=p)}", f"NO:{key.format(p=p)}")
    for key in matching:
        send_sync(prod, plis, f"/topic/{key.format(p=p)}", f"YES:{key.format(p=p)}")
    want = [f"YES:{k.format(p=p)}" for k in matching]
    slis.wait_messages(len(want))
    got = [m.body for m in slis.quiet_for(0.3)]
    assert got == want, f"pattern {pattern!r}: got {got}, want {want}"


def test_topic_message_headers(stomp_client):
    key = f"hdr.{uniq('t').replace('-', '')}"
    sub, slis = stomp_client()
    sid = subscribe_sync(sub, slis, f"/topic/{key}")
    prod, plis = stomp_client()
    send_sync(prod, plis, f"/topic/{key}", "x")
    (m,) = slis.wait_messages(1)
    assert m.headers["subscription"] == sid
    assert m.headers.get("message-id")


def test_exchange_fanout(stomp_client):
    s1, l1 = stomp_client()
    s2, l2 = stomp_client()
    subscribe_sync(s1, l1, "/exchange/amq.fanout/ignored1")
    subscribe_sync(s2, l2, "/exchange/amq.fanout/ignored2")
    prod, plis = stomp_client()
    body = uniq("fanout")
    send_sync(prod, plis, "/exchange/amq.fanout/whatever", body)
    assert body in [m.body for m in l1.wait_messages(1)]
    assert body in [m.body for m in l2.wait_messages(1)]


def test_exchange_direct_routing_key(stomp_client):
    k = uniq("k")
    sub, slis = stomp_client()
    subscribe_sync(sub, slis, f"/exchange/amq.direct/{k}")
    prod, plis = stomp_client()
    send_sync(prod, plis, f"/exchange/amq.direct/{k}-other", "wrong key")
    send_sync(prod, plis, f"/exchange/amq.direct/{k}", "right key")
    slis.wait_messages(1)
    assert [m.body for m in slis.quiet_for(0.3)] == ["right key"]


def test_exchange_topic_reaches_topic_subscriber(stomp_client):
    key = f"x.{uniq('t').replace('-', '')}"
    sub, slis = stomp_client()
    subscribe_sync(sub, slis, f"/topic/{key}")
    prod, plis = stomp_client()
    send_sync(prod, plis, f"/exchange/amq.topic/{key}", "via exchange")
    (m,) = slis.wait_messages(1)
    assert m.body == "via exchange"


def test_amq_queue_existing(stomp_client):
    name = uniq("amqq")
    prod, plis = stomp_client()
    send_sync(prod, plis, f"/queue/{name}", "declared by send")  # auto-declares the queue
    sub, slis = stomp_client()
    subscribe_sync(sub, slis, f"/amq/queue/{name}")
    (m,) = slis.wait_messages(1)
    assert m.body == "declared by send"
    send_sync(prod, plis, f"/amq/queue/{name}", "sent to amq/queue")
    assert slis.wait_messages(2)[1].body == "sent to amq/queue"


def test_amq_queue_missing_gives_error(stomp_client):
    conn, lis = stomp_client()
    conn.subscribe(f"/amq/queue/{uniq('missing')}", uniq("sub"))
    err = lis.wait_error(timeout=5)
    assert err.headers.get("message"), f"ERROR without message header: {err.headers}"
    # and other connections are unaffected
    other, olis = stomp_client()
    q = f"/queue/{uniq('q')}"
    subscribe_sync(other, olis, q)
    send_sync(other, olis, q, "still fine")
    assert olis.wait_messages(1)[0].body == "still fine"
