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


@BOTH_SHARDS
def test_many_blocking_confirmed_publishes_are_each_confirmed_once(broker):
    conn = amqp(broker)
    ch = conn.channel()
    ch.confirm_delivery()
    q = uniq("confirmed")
    ch.queue_declare(q, durable=True)
    for i in range(300):
        persistent = pika.BasicProperties(delivery_mode=2 if i % 2 else 1)
        ch.basic_publish("", q, f"m{i}".encode(), persistent)  # raises unless acked, waits for it
    assert ch.queue_declare(q, passive=True).method.message_count == 300
    conn.close()


def pipelined_confirms(broker, publishes, setup):
    """Publishes `publishes` ((exchange, routing_key, body, mandatory, persistent) tuples) on
    a SelectConnection without waiting for confirms, after `setup(channel, done)` declared what
    it needs; returns the events in arrival order: ("ack"|"nack", tag, multiple) and
    ("return", body). Fails on a tag settled twice or left unsettled."""
    params = pika.ConnectionParameters(host="127.0.0.1", port=broker.amqp_port,
                                       credentials=pika.PlainCredentials("guest", "guest"),
                                       connection_attempts=1, socket_timeout=5)
    events, settled, state = [], {}, {}
    total = len(publishes)

    def on_confirm(frame):
        m = frame.method
        kind = "ack" if isinstance(m, pika.spec.Basic.Ack) else "nack"
        events.append((kind, m.delivery_tag, m.multiple))
        tags = [t for t in range(1, m.delivery_tag + 1) if t not in settled] if m.multiple else [m.delivery_tag]
        assert m.delivery_tag > 0 and tags, f"{kind} {m.delivery_tag} multiple={m.multiple} settles nothing"
        for t in tags:
            assert t not in settled, f"tag {t} settled twice"
            settled[t] = kind
        if len(settled) == total:
            state["conn"].close()

    def publish_all(_frame=None):
        for exchange, key, body, mandatory, persistent in publishes:
            props = pika.BasicProperties(delivery_mode=2 if persistent else 1)
            state["ch"].basic_publish(exchange, key, body, props, mandatory=mandatory)

    def on_channel(ch):
        state["ch"] = ch
        ch.add_on_return_callback(lambda _ch, _m, _p, body: events.append(("return", body)))
        ch.confirm_delivery(on_confirm, callback=lambda _f: setup(ch, publish_all))

    def on_open(conn):
        conn.channel(on_open_callback=on_channel)

    def on_closed(conn, reason):
        state["reason"] = reason
        conn.ioloop.stop()

    conn = pika.SelectConnection(params, on_open_callback=on_open, on_close_callback=on_closed,
                                 on_open_error_callback=on_closed)
    state["conn"] = conn
    conn.ioloop.call_later(20, conn.close)  # bounded: a missing confirm fails below, not hangs
    conn.ioloop.start()
    assert len(settled) == total, f"{total - len(settled)} publishes never confirmed ({state.get('reason')})"
    return events, settled


@BOTH_SHARDS
@pytest.mark.parametrize("persistent", [False, True], ids=["transient", "persistent"])
def test_pipelined_confirms_coalesce_into_multiple_acks_and_a_nack_stays_exact(broker, persistent):
    # 1000 publishes without waiting: to a durable queue, except tag 501 (fills a one-message
    # reject-publish queue) and tag 502 (refused by it: a nack for exactly that tag), and
    # every 97th, unroutable and mandatory (returned, then acked). Transient, the confirms
    # complete in the turn that routes them; persistent, only after the log sync.
    plain, full = uniq("plain"), uniq("full")
    publishes = []
    for tag in range(1, 1001):
        if tag in (501, 502):
            publishes.append(("", full, f"{tag}".encode(), False, False))
        elif tag % 97 == 0:
            publishes.append(("", uniq("nowhere"), f"{tag}".encode(), True, False))
        else:
            publishes.append(("", plain, f"{tag}".encode(), False, persistent))

    def setup(ch, then):
        ch.queue_declare(plain, durable=True, callback=lambda _f: ch.queue_declare(
            full, arguments={"x-max-length": 1, "x-overflow": "reject-publish"}, callback=then))

    events, settled = pipelined_confirms(broker, publishes, setup)
    assert [t for t, kind in settled.items() if kind == "nack"] == [502]
    assert any(e[0] == "ack" and e[2] for e in events), "no multiple ack among pipelined confirms"
    acks = [e for e in events if e[0] in ("ack", "nack")]
    assert len(acks) < 1000, f"{len(acks)} confirm frames for 1000 publishes"
    # A return goes out before the confirm that settles its message.
    for tag in range(97, 1001, 97):
        returned = events.index(("return", f"{tag}".encode()))
        settling = next(i for i, e in enumerate(events) if e[0] == "ack" and (e[1] == tag or (e[2] and e[1] > tag)))
        assert returned < settling, f"tag {tag}: ack before its return"
