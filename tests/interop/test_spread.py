"""New connections spread evenly over the shards (runtime::spread): the kernel's SO_REUSEPORT
hash puts two of a few connections on one shard half of the time; Ferry hands a connection,
before its first byte, to the shard that serves the fewest. Each step is checked, so the
kernel's placement alone would fail this (12 connections staying within one of each other
after every connect)."""

import re

import pika
import pytest

from conftest import HOST, send_sync, subscribe_sync, uniq, wait_for
from mqtt_util import V5, V311, Client

COUNT = re.compile(r'^ferry_connections\{shard="(\d+)"\} (\d+)$')


def shard_connections(broker):
    found = [COUNT.match(line) for line in broker.metrics_lines()]
    return [int(m.group(2)) for m in found if m]


def settled_counts(broker, total):
    """The per-shard counts once `total` connections are registered."""
    return wait_for(lambda: (c := shard_connections(broker)) and sum(c) == total and c,
                    timeout=5, what=f"{total} connections registered ({shard_connections(broker)})")


@pytest.mark.ferry(shards=2)
def test_connections_of_every_protocol_spread_evenly_over_the_shards(broker, stomp_client):
    opened = []
    amqp = []
    mqtt = []
    try:
        for i in range(12):
            kind = ("stomp", "amqp", "mqtt")[i % 3]
            if kind == "stomp":
                opened.append(stomp_client())
            elif kind == "amqp":
                amqp.append(pika.BlockingConnection(pika.ConnectionParameters(HOST, broker.amqp_port)))
            else:
                mqtt.append(Client(broker.mqtt_port, uniq("spread"), V5 if i % 2 else V311))
            counts = settled_counts(broker, i + 1)
            assert len(counts) == 2
            assert max(counts) - min(counts) <= 1, f"after {i + 1} connects: {counts}"
        assert settled_counts(broker, 12) == [6, 6]

        # Whichever shard serves them, producers and consumers on every shard still meet.
        q = f"/queue/{uniq('spread')}"
        (c1, l1), (c2, l2) = opened[0], opened[1]
        subscribe_sync(c1, l1, q)
        send_sync(c2, l2, q, "across")
        (msg,) = l1.wait_messages(1)
        assert msg.body == "across"

        # Closed connections leave their shard, and the next connects fill it again.
        for conn in amqp:
            conn.close()
        for client in mqtt:
            client.close()
        before = settled_counts(broker, 4)
        late = [pika.BlockingConnection(pika.ConnectionParameters(HOST, broker.amqp_port)) for _ in range(4)]
        amqp = late
        after = settled_counts(broker, 8)
        assert after == [4, 4], f"from {before}, four more connects gave {after}"
    finally:
        for conn in amqp:
            if conn.is_open:
                conn.close()
        for client in mqtt:
            client.close()


PINNED = """
[[placement]]
queue = "home-0"
shard = 0

[[placement]]
queue = "home-1"
shard = 1
"""


@pytest.mark.ferry(shards=2, config=PINNED)
def test_a_stomp_consumer_moves_to_its_queues_shard_and_loses_nothing(broker, stomp_client):
    """A connection whose first act is SUBSCRIBE to a queue on another shard moves there (its
    deliveries and acks then never cross cores): the SUBSCRIBE's receipt, every message, and
    acks work across the move; a later subscription does not move it again."""
    consumer, clis = stomp_client()
    before = settled_counts(broker, 1)
    here = before.index(1)
    away = 1 - here
    queue = f"/queue/home-{away}"
    consumer.subscribe(queue, id="s1", ack="client-individual", headers={"receipt": "sub-1"})
    clis.wait_receipt("sub-1")
    moved = settled_counts(broker, 1)
    assert moved[away] == 1, f"consumer on {before}, subscribed to a queue on shard {away}: {moved}"

    producer, plis = stomp_client()
    for i in range(200):
        producer.send(queue, f"m{i}")
    got = clis.wait_messages(200, timeout=10)
    assert [m.body for m in got] == [f"m{i}" for i in range(200)]
    for m in got[:150]:
        consumer.ack(m.headers["ack"])
    send_sync(producer, plis, f"/queue/home-{here}", "other")
    # A second subscription, to a queue on the shard it left, does not move it back.
    consumer.subscribe(f"/queue/home-{here}", id="s2", ack="auto", headers={"receipt": "sub-2"})
    clis.wait_receipt("sub-2")
    (other,) = [m for m in clis.wait_messages(201, timeout=10) if m.body == "other"]
    assert other.headers["subscription"] == "s2"
    assert settled_counts(broker, 2)[away] >= 1
    consumer.disconnect()

    # The 50 unacked messages go back to the queue and reach the next consumer.
    again, alis = stomp_client()
    again.subscribe(queue, id="s3", ack="auto")
    rest = alis.wait_messages(50, timeout=10)
    assert sorted(m.body for m in rest) == sorted(f"m{i}" for i in range(150, 200))


@pytest.mark.ferry(shards=2, config=PINNED)
def test_a_confirming_producer_moves_to_its_queues_shard_and_loses_nothing(broker, stomp_client):
    """A connection that has sent 16 persistent SENDs in a row to one queue on another shard,
    each waiting for its receipt, moves to that shard before the next (each receipt waits on
    that shard's log sync anyway): every receipt comes back, every message arrives once and
    in order, and the connection moves only once."""
    producer, plis = stomp_client()
    before = settled_counts(broker, 1)
    here = before.index(1)
    away = 1 - here
    queue = f"/queue/home-{away}"
    for i in range(200):
        send_sync(producer, plis, queue, f"m{i}", headers={"persistent": "true"})
        if i == 10:
            assert settled_counts(broker, 1)[here] == 1, "moved before its 17th SEND"
    assert settled_counts(broker, 1)[away] == 1, f"producer on {before}, sent to shard {away}"
    # A run of confirmed SENDs to a queue on the shard it left does not move it back.
    for i in range(20):
        send_sync(producer, plis, f"/queue/home-{here}", f"back{i}", headers={"persistent": "true"})
    assert settled_counts(broker, 1)[away] == 1

    consumer, clis = stomp_client()
    consumer.subscribe(queue, id="s1", ack="auto")
    got = clis.wait_messages(200, timeout=10)
    assert [m.body for m in got] == [f"m{i}" for i in range(200)]
    assert all(m.headers.get("persistent") == "true" for m in got)
    consumer.disconnect()


@pytest.mark.ferry(shards=2, config=PINNED)
def test_a_confirming_amqp_publisher_moves_to_its_queues_shard_and_loses_nothing(broker):
    """pika with publisher confirms, one persistent publish at a time to a queue on the other
    shard: after 16 the connection moves there. Confirms keep their sequence numbers across
    the move (pika checks each one), every message arrives once and in order, and a second
    channel opened before the move keeps working."""
    params = pika.ConnectionParameters(HOST, broker.amqp_port)
    publisher = pika.BlockingConnection(params)
    try:
        before = settled_counts(broker, 1)
        here = before.index(1)
        away = 1 - here
        queue = f"home-{away}"
        ch = publisher.channel()
        ch.queue_declare(queue, durable=True)
        ch.confirm_delivery()
        other = publisher.channel()
        persistent = pika.BasicProperties(delivery_mode=2)
        for i in range(200):
            ch.basic_publish("", queue, f"m{i}".encode(), persistent, mandatory=True)
            if i == 10:
                assert settled_counts(broker, 1)[here] == 1, "moved before its 17th publish"
        assert settled_counts(broker, 1)[away] == 1, f"publisher on {before}, its queue on shard {away}"
        other.queue_declare(f"home-{here}", durable=True)
        other.basic_publish("", f"home-{here}", b"other")
        got = []
        for _ in range(200):
            method, _props, body = ch.basic_get(queue, auto_ack=True)
            assert method is not None, f"only {len(got)} messages"
            got.append(body.decode())
        assert got == [f"m{i}" for i in range(200)]
        assert ch.basic_get(f"home-{here}", auto_ack=True)[2] == b"other"
    finally:
        publisher.close()


@pytest.mark.ferry(shards=2, config=PINNED)
@pytest.mark.parametrize("kind", ["transient", "no-confirms", "two-queues"])
def test_other_amqp_publishers_stay_on_their_shard(broker, kind):
    """Only a run of persistent, confirmed publishes to one queue moves an AMQP publisher."""
    publisher = pika.BlockingConnection(pika.ConnectionParameters(HOST, broker.amqp_port))
    try:
        here = settled_counts(broker, 1).index(1)
        queues = [f"home-{1 - here}"] + ([f"home-{here}"] if kind == "two-queues" else [])
        ch = publisher.channel()
        for q in queues:
            ch.queue_declare(q, durable=True)
        if kind != "no-confirms":
            ch.confirm_delivery()
        props = pika.BasicProperties(delivery_mode=1 if kind == "transient" else 2)
        for i in range(40):
            ch.basic_publish("", queues[i % len(queues)], f"m{i}".encode(), props)
        ch.queue_declare(queues[0], durable=True, passive=True)  # a round trip after them
        assert settled_counts(broker, 1)[here] == 1, kind
    finally:
        publisher.close()


@pytest.mark.ferry(shards=2, config=PINNED)
@pytest.mark.parametrize("kind", ["not-persistent", "no-receipt", "two-queues"])
def test_other_producers_stay_on_their_shard(broker, stomp_client, kind):
    """Only a run of persistent, receipted SENDs to one queue moves a producer: not
    non-persistent ones, not fire-and-forget ones, not one spreading over two queues."""
    producer, plis = stomp_client()
    here = settled_counts(broker, 1).index(1)
    queues = [f"/queue/home-{1 - here}"] + ([f"/queue/home-{here}"] if kind == "two-queues" else [])
    for i in range(40):
        queue = queues[i % len(queues)]
        if kind == "not-persistent":
            send_sync(producer, plis, queue, f"m{i}")
        elif kind == "no-receipt":
            producer.send(queue, f"m{i}", headers={"persistent": "true"})
        else:
            send_sync(producer, plis, queue, f"m{i}", headers={"persistent": "true"})
    send_sync(producer, plis, queues[0], "last")
    assert settled_counts(broker, 1)[here] == 1, kind


@pytest.mark.ferry(shards=2, config="producers_follow_queue = false\n" + PINNED)
def test_producers_stay_where_the_config_says_they_do_not_follow_their_queue(broker, stomp_client):
    """`producers_follow_queue = false`: a STOMP producer and an AMQP publisher that would
    move (40 persistent, confirmed sends to one queue on the other shard) stay, and every
    message arrives."""
    producer, plis = stomp_client()
    here = settled_counts(broker, 1).index(1)
    for i in range(40):
        send_sync(producer, plis, f"/queue/home-{1 - here}", f"m{i}", headers={"persistent": "true"})
    assert settled_counts(broker, 1)[here] == 1
    publisher = pika.BlockingConnection(pika.ConnectionParameters(HOST, broker.amqp_port))
    try:
        counts = settled_counts(broker, 2)
        amqp_here = here if counts[here] == 2 else 1 - here
        away = f"home-{1 - amqp_here}"
        ch = publisher.channel()
        ch.queue_declare(away, durable=True)
        ch.confirm_delivery()  # pika raises on a nack or a missing confirm
        for i in range(40):
            ch.basic_publish("", away, f"a{i}".encode(), pika.BasicProperties(delivery_mode=2))
        assert settled_counts(broker, 2) == counts
        got = {}
        for queue in {f"home-{1 - here}", away}:
            while (body := ch.basic_get(queue, auto_ack=True)[2]) is not None:
                got.setdefault(queue, []).append(body)
        stomp_sent = [f"m{i}".encode() for i in range(40)]
        amqp_sent = [f"a{i}".encode() for i in range(40)]
        if away == f"home-{1 - here}":
            assert got[away] == stomp_sent + amqp_sent
        else:
            assert got == {f"home-{1 - here}": stomp_sent, away: amqp_sent}
    finally:
        publisher.close()


@pytest.mark.ferry(shards=2, config=PINNED + "\n[limits]\nconnection_count_max = 1\n")
def test_a_consumer_stays_when_its_queues_shard_is_at_its_connection_limit(broker, stomp_client):
    """The move is an optimisation: a shard at its connection limit does not take a moving
    connection, which then subscribes where it is (instead of being refused)."""
    consumer, clis = stomp_client()
    here = settled_counts(broker, 1).index(1)
    producer, plis = stomp_client()
    assert settled_counts(broker, 2) == [1, 1]
    queue = f"/queue/home-{1 - here}"
    consumer.subscribe(queue, id="s1", ack="auto", headers={"receipt": "sub-1"})
    clis.wait_receipt("sub-1")
    send_sync(producer, plis, queue, "stayed")
    (msg,) = clis.wait_messages(1)
    assert msg.body == "stayed"
    assert settled_counts(broker, 2) == [1, 1]
    assert consumer.is_connected()
