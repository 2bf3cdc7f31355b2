"""AMQP 0-9-1 with pika: RabbitMQ's exchange extensions (alternate exchanges, exchange-to-exchange
bindings, internal and auto-delete exchanges), queue x-expires and x-queue-type, typed header
values, server-initiated cancel and a 1 MiB message split across frames both ways."""

import datetime
import decimal
import time

import pika
import pytest
from pika.exceptions import ChannelClosedByBroker, ConnectionClosedByBroker, UnroutableError

from conftest import BOTH_SHARDS, uniq, wait_for
from test_amqp_pika import amqp


def count(ch, q):
    return ch.queue_declare(q, passive=True).method.message_count


def closed_with(code, call):
    with pytest.raises(ChannelClosedByBroker) as e:
        call()
    assert e.value.reply_code == code, e.value
    return e.value


@BOTH_SHARDS
def test_alternate_exchange_takes_unroutable_messages(broker):
    conn = amqp(broker)
    ch = conn.channel()
    ch.confirm_delivery()
    main, ae = uniq("main"), uniq("ae")
    ch.exchange_declare(ae, exchange_type="fanout")
    ch.exchange_declare(main, exchange_type="direct", arguments={"alternate-exchange": ae})
    routed, unrouted = uniq("routed"), uniq("unrouted")
    ch.queue_declare(routed)
    ch.queue_declare(unrouted)
    ch.queue_bind(routed, main, "known")
    ch.queue_bind(unrouted, ae, "")
    ch.basic_publish(main, "known", b"k")
    ch.basic_publish(main, "other", b"o", mandatory=True)  # reaches the alternate: no basic.return
    wait_for(lambda: count(ch, routed) == 1 and count(ch, unrouted) == 1, what="one message each")
    assert ch.basic_get(unrouted, auto_ack=True)[2] == b"o"
    # An alternate exchange that does not exist is ignored: unroutable, so mandatory returns it.
    lost = uniq("lost")
    ch.exchange_declare(lost, exchange_type="direct", arguments={"alternate-exchange": uniq("missing")})
    with pytest.raises(UnroutableError):
        ch.basic_publish(lost, "x", b"r", mandatory=True)
    # Redeclaring without the argument is inequivalent, as in RabbitMQ.
    closed_with(406, lambda: ch.exchange_declare(main, exchange_type="direct"))
    conn.close()


@BOTH_SHARDS
def test_exchange_to_exchange_bindings_follow_rabbitmq(broker):
    conn = amqp(broker)
    ch = conn.channel()
    front, back = uniq("front"), uniq("back")
    ch.exchange_declare(front, exchange_type="topic")
    ch.exchange_declare(back, exchange_type="fanout", internal=True)
    q = uniq("e2e")
    ch.queue_declare(q)
    ch.queue_bind(q, back, "")
    ch.exchange_bind(destination=back, source=front, routing_key="orders.*")
    ch.exchange_bind(destination=front, source=back, routing_key="#")  # a cycle: still once per queue
    ch.queue_bind(q, front, "orders.eu")  # a second path to the same queue
    ch.basic_publish(front, "orders.eu", b"1")
    ch.basic_publish(front, "invoices.eu", b"unmatched")
    wait_for(lambda: count(ch, q) == 1, what="routed once through the cycle")
    time.sleep(0.2)
    assert count(ch, q) == 1
    assert ch.basic_get(q, auto_ack=True)[2] == b"1"
    # An internal exchange refuses direct publishes with 403.
    closed_with(403, lambda: (ch.basic_publish(back, "", b"direct"), ch.queue_declare(q, passive=True)))
    ch = conn.channel()
    ch.exchange_unbind(destination=back, source=front, routing_key="orders.*")
    ch.queue_unbind(q, front, "orders.eu")
    ch.basic_publish(front, "orders.eu", b"2")
    time.sleep(0.2)
    assert count(ch, q) == 0, "unbound"
    closed_with(404, lambda: ch.exchange_bind(destination=uniq("missing"), source=front, routing_key="#"))
    ch = conn.channel()
    # Deleting an exchange removes the bindings that lead into it.
    ch.exchange_bind(destination=back, source=front, routing_key="#")
    closed_with(406, lambda: ch.exchange_delete(front, if_unused=True))
    ch = conn.channel()
    ch.exchange_delete(back)
    ch.exchange_delete(front, if_unused=True)  # unused now: its binding into 'back' went with 'back'
    conn.close()


def test_auto_delete_exchange_goes_with_its_last_binding(broker):
    conn = amqp(broker)
    ch = conn.channel()
    ex = uniq("ad")
    ch.exchange_declare(ex, exchange_type="fanout", auto_delete=True)
    q = uniq("adq")
    ch.queue_declare(q)
    ch.queue_bind(q, ex, "")
    ch.exchange_declare(ex, exchange_type="fanout", auto_delete=True, passive=True)
    ch.queue_unbind(q, ex, "")
    closed_with(404, lambda: ch.exchange_declare(ex, exchange_type="fanout", passive=True))
    conn.close()


def exists(conn, q):
    ch = conn.channel()
    try:
        ch.queue_declare(q, passive=True)
        ch.close()
        return True
    except ChannelClosedByBroker as e:
        assert e.reply_code == 404
        return False


def test_x_expires_deletes_unused_queues(broker):
    conn = amqp(broker)
    ch = conn.channel()
    args = {"x-expires": 600}
    idle, declared, got, consumed = (uniq(n) for n in ("idle", "redeclared", "got", "consumed"))
    for q in (idle, declared, got, consumed):
        ch.queue_declare(q, arguments=args)
    ch.basic_publish("", got, b"m")
    tag = ch.basic_consume(consumed, lambda *a: None)
    deadline = time.time() + 1.5
    while time.time() < deadline:  # uses that restart the clock, every 200 ms
        ch.queue_declare(declared, arguments=args)
        ch.basic_get(got, auto_ack=True)
        conn.process_data_events(time_limit=0.2)
    assert not exists(conn, idle), "unused for longer than x-expires"
    # Each survived 1.5 s through its own kind of use (a passive declare is a use too, as in
    # RabbitMQ, so nothing below polls: it waits, then looks once).
    assert exists(conn, consumed) and exists(conn, declared) and exists(conn, got)
    ch.basic_cancel(tag)
    time.sleep(1.5)
    assert [q for q in (consumed, declared, got) if exists(conn, q)] == [], "expired once unused"
    closed_with(406, lambda: ch.queue_declare(uniq("bad"), arguments={"x-expires": 0}))
    conn.close()


def test_x_queue_type_classic_and_quorum(broker):
    conn = amqp(broker)
    ch = conn.channel()
    ch.queue_declare(uniq("classic"), arguments={"x-queue-type": "classic"})
    quorum = uniq("quorum")
    ch.queue_declare(quorum, durable=True, arguments={"x-queue-type": "quorum"})
    ch.basic_publish("", quorum, b"q")
    wait_for(lambda: count(ch, quorum) == 1)
    closed_with(406, lambda: ch.queue_declare(uniq("q"), durable=False, arguments={"x-queue-type": "quorum"}))
    ch = conn.channel()
    closed_with(406, lambda: ch.queue_declare(uniq("q"), durable=True, exclusive=True,
                                              arguments={"x-queue-type": "quorum"}))
    ch = conn.channel()
    closed_with(406, lambda: ch.queue_declare(uniq("s"), durable=True, arguments={"x-queue-type": "stream"}))
    conn.close()


@BOTH_SHARDS
def test_header_values_keep_their_types_amqp_to_amqp(broker, stomp_client):
    conn = amqp(broker)
    ch = conn.channel()
    q = uniq("typed")
    ch.queue_declare(q)
    headers = {"int": 42, "big": 2**40, "neg": -7, "flag": True, "off": False, "ratio": decimal.Decimal("1.5"),
               "when": datetime.datetime(2024, 5, 1, 12, 0, 0),
               "table": {"inner": 1, "s": "x"}, "list": [1, "two", True], "text": "plain"}
    ch.basic_publish("", q, b"t", pika.BasicProperties(headers=headers, delivery_mode=2))
    wait_for(lambda: count(ch, q) == 1)
    _, props, _ = ch.basic_get(q, auto_ack=True)
    got = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in props.headers.items()}
    got["table"] = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in got["table"].items()}
    got["list"] = [v.decode() if isinstance(v, bytes) else v for v in got["list"]]
    assert got == headers
    assert all(isinstance(got[k], type(v)) for k, v in headers.items()), got
    assert type(got["big"]) is pika.compat.long, "a long-long ('l') stays one"
    assert type(got["flag"]) is bool and type(got["int"]) is int
    # STOMP reads the same headers as text.
    c, lis = stomp_client()
    sq = uniq("typed-stomp")
    ch.queue_declare(sq)
    c.subscribe(f"/queue/{sq}", id="s", ack="auto", headers={"receipt": "sub"})
    lis.wait_receipt("sub")
    ch.basic_publish("", sq, b"t", pika.BasicProperties(headers={"int": 42, "flag": True}))
    lis.wait_messages(1)
    assert lis.messages[0].headers["int"] == "42" and lis.messages[0].headers["flag"] == "true"
    conn.close()


@BOTH_SHARDS
def test_queue_deleted_under_a_consumer_cancels_it(broker):
    conn = amqp(broker)
    ch = conn.channel()
    q = uniq("doomed")
    ch.queue_declare(q)
    cancelled = []
    ch.add_on_cancel_callback(lambda frame: cancelled.append(frame.method.consumer_tag))
    tag = ch.basic_consume(q, lambda *a: None)
    other = amqp(broker)
    other.channel().queue_delete(q)
    wait_for(lambda: conn.process_data_events(time_limit=0.05) or cancelled, what="basic.cancel from the broker")
    assert cancelled == [tag]
    ch.queue_declare(uniq("still-open"))  # the channel stays usable after a server cancel
    other.close()
    conn.close()


@BOTH_SHARDS
def test_one_mib_message_is_split_across_frames_both_ways(broker):
    conn = amqp(broker)
    assert conn._impl.params.frame_max < 1 << 20
    ch = conn.channel()
    ch.confirm_delivery()
    q = uniq("big")
    ch.queue_declare(q, durable=True)
    body = bytes((i * 7 + i // 251) % 256 for i in range(1 << 20))
    ch.basic_publish("", q, body, pika.BasicProperties(delivery_mode=2, message_id="big"))
    got = []
    ch.basic_consume(q, lambda c, m, p, b: (got.append((p.message_id, b)), c.basic_ack(m.delivery_tag)))
    wait_for(lambda: conn.process_data_events(time_limit=0.05) or got, what="the 1 MiB delivery")
    assert got[0][0] == "big" and len(got[0][1]) == len(body) and got[0][1] == body
    conn.close()


def test_exclusive_consumers_are_403_as_in_rabbitmq(broker):
    conn = amqp(broker)
    ch = conn.channel()
    q = uniq("excl")
    ch.queue_declare(q)
    tag = ch.basic_consume(q, lambda *a: None, exclusive=True)
    other = conn.channel()
    closed_with(403, lambda: other.basic_consume(q, lambda *a: None))
    ch.basic_cancel(tag)
    ch.basic_consume(q, lambda *a: None)
    other = conn.channel()
    closed_with(403, lambda: other.basic_consume(q, lambda *a: None, exclusive=True))
    conn.close()


@pytest.mark.parametrize("call", [
    lambda ch: ch.basic_qos(prefetch_size=1024),
    lambda ch: ch.basic_recover(requeue=False),
    lambda ch: ch.flow(False),
], ids=["qos-prefetch-size", "recover-requeue-false", "channel-flow-off"])
def test_what_rabbitmq_leaves_out_is_540(broker, call):
    conn = amqp(broker)
    with pytest.raises(ConnectionClosedByBroker) as e:
        call(conn.channel())
    assert e.value.reply_code == 540


def test_unknown_exchange_type_is_503(broker):
    conn = amqp(broker)
    with pytest.raises(ConnectionClosedByBroker) as e:
        conn.channel().exchange_declare(uniq("x"), exchange_type="x-no-such-type")
    assert e.value.reply_code == 503


@BOTH_SHARDS
def test_durable_exchanges_and_their_bindings_survive_restart(broker, broker_factory):
    conn = amqp(broker)
    ch = conn.channel()
    front, back, ae, temp = uniq("dfront"), uniq("dback"), uniq("dae"), uniq("temp")
    ch.exchange_declare(ae, exchange_type="fanout", durable=True)
    ch.exchange_declare(front, exchange_type="topic", durable=True, arguments={"alternate-exchange": ae})
    ch.exchange_declare(back, exchange_type="fanout", durable=True, internal=True)
    ch.exchange_declare(temp, exchange_type="fanout")
    routed, unrouted = uniq("droutes"), uniq("dunrouted")
    for q, ex in ((routed, back), (unrouted, ae)):
        ch.queue_declare(q, durable=True)
        ch.queue_bind(q, ex, "")
    ch.exchange_bind(destination=back, source=front, routing_key="a.*")
    conn.close()
    broker.stop()
    b2 = broker_factory(shards=broker.shards, data_dir=broker.data_dir, name="after-restart")
    conn = amqp(b2)
    ch = conn.channel()
    ch.exchange_declare(front, exchange_type="topic", durable=True, arguments={"alternate-exchange": ae})
    ch.basic_publish(front, "a.b", b"through e2e")
    ch.basic_publish(front, "z", b"to the alternate")
    wait_for(lambda: count(ch, routed) == 1 and count(ch, unrouted) == 1, what="routing came back")
    closed_with(403, lambda: (ch.basic_publish(back, "", b"x"), ch.queue_declare(routed, passive=True)))
    ch = conn.channel()
    closed_with(404, lambda: ch.exchange_declare(temp, exchange_type="fanout", passive=True))
    conn.close()
