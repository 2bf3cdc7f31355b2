"""AMQP 0-9-1 with the real pika client: what a RabbitMQ application does, unchanged.
Also AMQP <-> STOMP on queues and on amq.topic (one message model, ARCHITECTURE §3)."""

import time

import pika
import pytest
from pika.exceptions import ChannelClosedByBroker, ProbableAuthenticationError, UnroutableError

from conftest import BOTH_SHARDS, uniq, wait_for


def amqp(broker, user="guest", password="guest"):
    params = pika.ConnectionParameters(host="127.0.0.1", port=broker.amqp_port,
                                       credentials=pika.PlainCredentials(user, password),
                                       connection_attempts=1, socket_timeout=5, blocked_connection_timeout=5)
    return pika.BlockingConnection(params)


@BOTH_SHARDS
def test_declare_publish_get_ack(broker):
    conn = amqp(broker)
    ch = conn.channel()
    q = uniq("pq")
    ok = ch.queue_declare(q)
    assert ok.method.queue == q and ok.method.message_count == 0
    for i in range(3):
        ch.basic_publish("", q, f"m{i}".encode(), pika.BasicProperties(content_type="text/plain", headers={"k": "v"}))
    wait_for(lambda: ch.queue_declare(q, passive=True).method.message_count == 3, what="3 messages counted")
    method, props, body = ch.basic_get(q)
    assert body == b"m0" and props.content_type == "text/plain" and props.headers == {"k": "v"}
    assert method.message_count == 2
    ch.basic_ack(method.delivery_tag)
    assert ch.queue_purge(q).method.message_count == 2
    assert ch.basic_get(q) == (None, None, None)
    conn.close()


@BOTH_SHARDS
def test_consume_with_prefetch_ack_and_nack_requeue(broker):
    conn = amqp(broker)
    ch = conn.channel()
    q = uniq("pc")
    ch.queue_declare(q)
    for i in range(5):
        ch.basic_publish("", q, f"m{i}".encode())
    ch.basic_qos(prefetch_count=2)
    got = []
    ch.basic_consume(q, lambda c, m, p, b: got.append((m, b)))
    deadline = time.time() + 2
    while time.time() < deadline:
        conn.process_data_events(time_limit=0.1)
    assert [b for _, b in got] == [b"m0", b"m1"], "prefetch 2 holds back the rest"
    ch.basic_nack(got[0][0].delivery_tag, requeue=True)
    ch.basic_ack(got[1][0].delivery_tag)
    deadline = time.time() + 3
    while len(got) < 6 and time.time() < deadline:
        conn.process_data_events(time_limit=0.1)
        for m, _ in got[2:]:
            if not getattr(m, "_acked", False):
                ch.basic_ack(m.delivery_tag)
                m._acked = True
    bodies = [b for _, b in got]
    assert sorted(bodies[2:]) == [b"m0", b"m2", b"m3", b"m4"], bodies
    redelivered = [m.redelivered for m, b in got[2:] if b == b"m0"]
    assert redelivered == [True]
    conn.close()


@BOTH_SHARDS
def test_confirms_persistent_and_mandatory_return(broker):
    conn = amqp(broker)
    ch = conn.channel()
    ch.confirm_delivery()
    q = uniq("durable")
    ch.queue_declare(q, durable=True)
    for i in range(20):
        ch.basic_publish("", q, f"p{i}".encode(), pika.BasicProperties(delivery_mode=2))  # raises unless acked
    with pytest.raises(UnroutableError):
        ch.basic_publish("amq.direct", uniq("nowhere"), b"x", mandatory=True)
    assert ch.queue_declare(q, passive=True).method.message_count == 20
    conn.close()


@BOTH_SHARDS
def test_exchanges_bindings_topic_fanout_headers(broker):
    conn = amqp(broker)
    ch = conn.channel()
    ex = uniq("ex")
    ch.exchange_declare(ex, exchange_type="topic")
    a, b = ch.queue_declare("", exclusive=True).method.queue, ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(a, ex, "stock.*.ibm")
    ch.queue_bind(b, ex, "stock.#")
    ch.basic_publish(ex, "stock.nyse.ibm", b"t1")
    ch.basic_publish(ex, "stock.nyse.sap.x", b"t2")
    wait_for(lambda: ch.queue_declare(b, passive=True).method.message_count == 2)
    assert ch.basic_get(a, auto_ack=True)[2] == b"t1"
    assert ch.basic_get(a, auto_ack=True)[2] is None
    ch.basic_publish("amq.headers", "", b"h", pika.BasicProperties(headers={"kind": "x"}))
    hq = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(hq, "amq.headers", "", arguments={"x-match": "all", "kind": "x"})
    ch.basic_publish("amq.headers", "", b"h2", pika.BasicProperties(headers={"kind": "x"}))
    wait_for(lambda: ch.queue_declare(hq, passive=True).method.message_count == 1)
    conn.close()


def test_errors_are_rabbitmq_channel_exceptions(broker):
    conn = amqp(broker)
    ch = conn.channel()
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.queue_declare(uniq("missing"), passive=True)
    assert e.value.reply_code == 404
    ch = conn.channel()
    q = uniq("d")
    ch.queue_declare(q, durable=True)
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.queue_declare(q, durable=False)
    assert e.value.reply_code == 406
    ch = conn.channel()
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.basic_ack(999)
        ch.queue_declare(uniq("after"))  # the error arrives asynchronously; a sync call surfaces it
    assert e.value.reply_code == 406
    ch = conn.channel()
    ch.queue_declare(q, passive=True)  # the connection survived its channels' errors
    conn.close()
    with pytest.raises(ProbableAuthenticationError):
        amqp(broker, password="wrong")


def test_transactions_commit_and_rollback(broker):
    conn = amqp(broker)
    ch = conn.channel()
    q = uniq("tx")
    ch.queue_declare(q)
    ch.tx_select()
    ch.basic_publish("", q, b"rolled-back")
    ch.tx_rollback()
    ch.basic_publish("", q, b"committed")
    assert ch.queue_declare(q, passive=True).method.message_count == 0
    ch.tx_commit()
    wait_for(lambda: ch.queue_declare(q, passive=True).method.message_count == 1)
    assert ch.basic_get(q, auto_ack=True)[2] == b"committed"
    conn.close()


@BOTH_SHARDS
def test_amqp_to_stomp_and_back(broker, stomp_client):
    conn = amqp(broker)
    ch = conn.channel()
    c, lis = stomp_client()
    c.subscribe("/topic/cross.*", id="t", ack="auto", headers={"receipt": "sub"})
    lis.wait_receipt("sub")
    ch.basic_publish("amq.topic", "cross.x", b"from-amqp",
                     pika.BasicProperties(content_type="text/plain", delivery_mode=2, correlation_id="c1", headers={"h": "v"}))
    lis.wait_messages(1)
    m = lis.messages[0]
    assert m.body == "from-amqp" and m.headers["content-type"] == "text/plain"
    assert m.headers["persistent"] == "true" and m.headers["correlation-id"] == "c1" and m.headers["h"] == "v"
    q = uniq("s2a")
    ch.queue_declare(q, durable=True)
    c.send(f"/queue/{q}", "from-stomp", headers={"persistent": "true", "x-k": "y", "receipt": "s"})
    lis.wait_receipt("s")
    method, props, body = ch.basic_get(q, auto_ack=True)
    assert body == b"from-stomp" and props.delivery_mode == 2 and props.headers == {"x-k": "y"}
    conn.close()
