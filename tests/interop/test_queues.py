"""/queue/NAME: point-to-point delivery and competing consumers (shards 1 and 2)."""

import pytest

from conftest import BOTH_SHARDS, send_sync, subscribe_sync, uniq, wait_for

pytestmark = BOTH_SHARDS


@pytest.mark.parametrize("version", ["1.0", "1.1", "1.2"])
def test_queue_send_receive(stomp_client, version):
    q = f"/queue/{uniq('q')}"
    conn, lis = stomp_client(version)
    subscribe_sync(conn, lis, q, version=version)
    send_sync(conn, lis, q, "hello queue")
    (msg,) = lis.wait_messages(1)
    assert msg.body == "hello queue"
    assert msg.headers["destination"] == q
    assert msg.headers.get("message-id")


def test_queue_send_from_other_connection(stomp_client):
    q = f"/queue/{uniq('q')}"
    consumer, clis = stomp_client()
    producer, plis = stomp_client()
    subscribe_sync(consumer, clis, q)
    for i in range(5):
        producer.send(q, f"m{i}")
    msgs = clis.wait_messages(5)
    assert [m.body for m in msgs] == [f"m{i}" for i in range(5)]


def test_queue_buffers_until_subscribe(stomp_client):
    """A SEND to a queue nobody consumes yet is kept (auto-declared durable queue)."""
    q = f"/queue/{uniq('q')}"
    producer, plis = stomp_client()
    for i in range(3):
        send_sync(producer, plis, q, f"early{i}")
    consumer, clis = stomp_client()
    subscribe_sync(consumer, clis, q)
    msgs = clis.wait_messages(3)
    assert [m.body for m in msgs] == ["early0", "early1", "early2"]
    assert len(clis.quiet_for(0.3)) == 3


def test_queue_order_preserved(stomp_client):
    q = f"/queue/{uniq('q')}"
    conn, lis = stomp_client()
    prod, plis = stomp_client()
    subscribe_sync(conn, lis, q)
    n = 50
    for i in range(n):
        prod.send(q, str(i))
    msgs = lis.wait_messages(n)
    assert [m.body for m in msgs] == [str(i) for i in range(n)]


def test_competing_consumers_round_robin(stomp_client):
    q = f"/queue/{uniq('q')}"
    c1, l1 = stomp_client()
    c2, l2 = stomp_client()
    subscribe_sync(c1, l1, q)
    subscribe_sync(c2, l2, q)
    prod, plis = stomp_client()
    n = 10
    for i in range(n):
        prod.send(q, f"w{i}")
    send_sync(prod, plis, q, "last")  # receipt: everything before it was accepted
    wait_for(lambda: len(l1.messages) + len(l2.messages) >= n + 1, timeout=5,
             what="all messages across both consumers")
    l1.quiet_for(0.2)
    b1, b2 = l1.bodies(), l2.bodies()
    everything = sorted(b1 + b2)
    assert everything == sorted([f"w{i}" for i in range(n)] + ["last"]), "lost or duplicated"
    # Each message goes to exactly one consumer, and round-robin spreads them evenly.
    assert abs(len(b1) - len(b2)) <= 1, f"not round-robin: c1={b1} c2={b2}"
    # each consumer sees its share in send order
    order = [f"w{i}" for i in range(n)] + ["last"]
    assert b1 == [b for b in order if b in b1]
    assert b2 == [b for b in order if b in b2]
