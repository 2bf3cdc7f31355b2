"""Publisher flow control (engine/src/model/flow.rs) with real clients: while a consumer drains
a queue, a backlog over `queue_flow_message_count` holds the publishers feeding it back (their
input is not read) until the consumer catches up; a consumer that stops taking messages does
not hold anyone. Nothing is lost or reordered either way."""

import threading
import time

import pika
import pytest

from conftest import uniq, wait_for

MARK = 100
# One shard: a hold then takes effect at once. Across shards it is a message from the queue's
# owner to the publisher's shard, and a shard kept busy by one flooding connection (a debug
# build on a loaded 2-core machine) handled it ~150 ms late, after thousands more publishes:
# timing these tests cannot pin down. engine/tests/cross_shard.rs covers the cross-shard path.
FLOW = pytest.mark.parametrize(
    "broker", [dict(shards=1, config=f"[limits]\nqueue_flow_message_count = {MARK}\n")],
    indirect=True, ids=["shards1"])


def amqp(broker):
    params = pika.ConnectionParameters(host="127.0.0.1", port=broker.amqp_port,
                                       credentials=pika.PlainCredentials("guest", "guest"),
                                       connection_attempts=1, socket_timeout=5)
    return pika.BlockingConnection(params)


class Consumer(threading.Thread):
    """Acks every message; while `slow` is set, one every 5 ms (progress, but slowly)."""

    def __init__(self, broker, queue, prefetch, ack=True):
        super().__init__(daemon=True)
        self.broker, self.queue, self.prefetch, self.ack = broker, queue, prefetch, ack
        self.slow = threading.Event()
        self.slow.set()
        self.stop = threading.Event()
        self.bodies = []
        self.ready = threading.Event()

    def run(self):
        conn = amqp(self.broker)
        ch = conn.channel()
        ch.basic_qos(prefetch_count=self.prefetch)

        def on_message(c, method, _props, body):
            self.bodies.append(body)
            if not self.ack:
                return
            if self.slow.is_set():
                time.sleep(0.005)
            c.basic_ack(method.delivery_tag)

        ch.basic_consume(self.queue, on_message)
        self.ready.set()
        while not self.stop.is_set():
            conn.process_data_events(time_limit=0.05)
        conn.close()


def publish_all(send, n):
    thread = threading.Thread(target=lambda: [send(i) for i in range(n)], daemon=True)
    thread.start()
    return thread


def ready_count(ch, queue):
    return ch.queue_declare(queue, passive=True).method.message_count


def run_slow_then_fast(broker, queue, start_publisher, n):
    observer = amqp(broker)
    ch = observer.channel()
    ch.queue_declare(queue)
    consumer = Consumer(broker, queue, prefetch=10)
    consumer.start()
    assert consumer.ready.wait(5)
    start_publisher()
    # Slow phase: the consumer makes progress (~200 msg/s), far slower than the publisher.
    deepest, deadline = 0, time.time() + 2
    while time.time() < deadline:
        deepest = max(deepest, ready_count(ch, queue))
        time.sleep(0.02)
    accepted = ready_count(ch, queue) + len(consumer.bodies)
    consumer.slow.clear()
    wait_for(lambda: len(consumer.bodies) >= n, timeout=20, what=f"all {n} messages consumed")
    consumer.stop.set()
    consumer.join(5)
    observer.close()
    # Every message once, in order.
    assert consumer.bodies == [f"m{i}".encode() for i in range(n)]
    # Without flow control the broker takes all n within the slow phase. Held, the backlog
    # passes the mark only by what the publisher's shard read before the owner's hold reached
    # it (input chunks of ~900 small publishes each: a few thousand on a loaded machine).
    assert accepted < n // 2, f"the broker took {accepted} of {n} while the consumer was slow"
    assert deepest < n // 2, f"backlog reached {deepest}"


@FLOW
def test_amqp_publisher_is_held_while_its_consumer_catches_up(broker):
    queue = uniq("flow")
    n = 12000
    pch = amqp(broker).channel()
    publisher = []
    send = lambda i: pch.basic_publish("", queue, f"m{i}".encode())  # noqa: E731
    run_slow_then_fast(broker, queue, lambda: publisher.append(publish_all(send, n)), n)
    publisher[0].join(10)
    assert not publisher[0].is_alive(), "the publisher finished"
    pch.connection.close()


@FLOW
def test_stomp_publisher_is_held_while_its_consumer_catches_up(broker, stomp_client):
    queue = uniq("sflow")
    n = 12000
    c, lis = stomp_client()

    def start():
        publish_all(lambda i: c.send(f"/queue/{queue}", f"m{i}"), n)

    run_slow_then_fast(broker, queue, start, n)
    c.send(f"/queue/{queue}-end", "x", headers={"receipt": "end"})
    lis.wait_receipt("end", timeout=10)


@FLOW
def test_a_consumer_that_stops_taking_messages_holds_nobody(broker):
    queue = uniq("stall")
    n = 3000
    observer = amqp(broker)
    ch = observer.channel()
    ch.queue_declare(queue)
    consumer = Consumer(broker, queue, prefetch=5, ack=False)
    consumer.start()
    assert consumer.ready.wait(5)
    pub = amqp(broker)
    pch = pub.channel()
    for i in range(n):
        pch.basic_publish("", queue, f"m{i}".encode())
    # The consumer holds 5 unacked and takes nothing more: the publisher is let go at the
    # next look without progress (a few hundred ms), and the queue fills for later.
    wait_for(lambda: ready_count(ch, queue) == n - 5, timeout=5, what="every message queued")
    consumer.stop.set()
    consumer.join(5)
    pub.close()
    observer.close()
