"""RabbitMQ queue arguments with pika: TTL (queue and per message), max-length with both
overflow policies, dead-lettering of expired, dropped and rejected messages."""

import time

import pika
import pytest
from pika.exceptions import ChannelClosedByBroker, NackError

from conftest import BOTH_SHARDS, uniq, wait_for
from test_amqp_pika import amqp


def count(ch, q):
    return ch.queue_declare(q, passive=True).method.message_count


def dead_letter_setup(ch):
    dlq = uniq("dlq")
    ch.queue_declare(dlq)
    return dlq, {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq}


@BOTH_SHARDS
def test_queue_ttl_expires_into_the_dead_letter_queue(broker):
    conn = amqp(broker)
    ch = conn.channel()
    dlq, dlx = dead_letter_setup(ch)
    q = uniq("ttl")
    ch.queue_declare(q, arguments={"x-message-ttl": 200, **dlx})
    ch.basic_publish("", q, b"short-lived", pika.BasicProperties(headers={"k": "v"}))
    wait_for(lambda: count(ch, dlq) == 1, timeout=3, what="the expired message in the DLQ")
    assert count(ch, q) == 0
    method, props, body = ch.basic_get(dlq, auto_ack=True)
    assert body == b"short-lived"
    assert props.headers["x-first-death-reason"] == "expired"
    assert props.headers["x-first-death-queue"] == q and props.headers["k"] == "v"
    conn.close()


def test_per_message_expiration(broker):
    conn = amqp(broker)
    ch = conn.channel()
    q = uniq("exp")
    ch.queue_declare(q)
    ch.basic_publish("", q, b"gone", pika.BasicProperties(expiration="100"))
    ch.basic_publish("", q, b"stays")
    time.sleep(0.4)
    assert ch.basic_get(q, auto_ack=True)[2] == b"stays"
    assert ch.basic_get(q, auto_ack=True)[2] is None
    conn.close()


@BOTH_SHARDS
def test_max_length_drop_head_dead_letters_the_oldest(broker):
    conn = amqp(broker)
    ch = conn.channel()
    dlq, dlx = dead_letter_setup(ch)
    q = uniq("maxlen")
    ch.queue_declare(q, arguments={"x-max-length": 2, **dlx})
    for i in range(5):
        ch.basic_publish("", q, f"m{i}".encode())
    wait_for(lambda: count(ch, dlq) == 3, timeout=3)
    assert [ch.basic_get(q, auto_ack=True)[2] for _ in range(2)] == [b"m3", b"m4"]
    method, props, body = ch.basic_get(dlq, auto_ack=True)
    assert body == b"m0" and props.headers["x-first-death-reason"] == "maxlen"
    conn.close()


def test_max_length_reject_publish_nacks_confirms(broker):
    conn = amqp(broker)
    ch = conn.channel()
    ch.confirm_delivery()
    q = uniq("reject")
    ch.queue_declare(q, arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
    ch.basic_publish("", q, b"first")
    with pytest.raises(NackError):
        ch.basic_publish("", q, b"second")
    assert count(ch, q) == 1
    conn.close()


@BOTH_SHARDS
def test_reject_without_requeue_dead_letters(broker):
    conn = amqp(broker)
    ch = conn.channel()
    dlq, dlx = dead_letter_setup(ch)
    q = uniq("rej")
    ch.queue_declare(q, arguments=dlx)
    ch.basic_publish("", q, b"bad", pika.BasicProperties(delivery_mode=2))
    wait_for(lambda: count(ch, q) == 1)
    method, _, _ = ch.basic_get(q)
    ch.basic_reject(method.delivery_tag, requeue=False)
    wait_for(lambda: count(ch, dlq) == 1, timeout=3)
    assert ch.basic_get(dlq, auto_ack=True)[1].headers["x-first-death-reason"] == "rejected"
    conn.close()


@BOTH_SHARDS
def test_a_retry_loop_through_a_wait_queue_counts_deaths_in_x_death(broker):
    """The usual RabbitMQ retry pattern: a rejected message waits in a TTL queue that
    dead-letters it back to the work queue; the consumer reads x-death to count attempts."""
    conn = amqp(broker)
    ch = conn.channel()
    work, wait = uniq("work"), uniq("wait")
    ch.queue_declare(work, arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": wait})
    ch.queue_declare(wait, arguments={"x-message-ttl": 50, "x-dead-letter-exchange": "",
                                      "x-dead-letter-routing-key": work})
    ch.basic_publish("", work, b"job", pika.BasicProperties(delivery_mode=2, headers={"k": "v"}))
    attempts = []
    deadline = time.monotonic() + 10
    while len(attempts) < 3:
        assert time.monotonic() < deadline, f"retry loop stalled after {attempts}"
        method, props, _ = ch.basic_get(work)
        if method is None:
            time.sleep(0.02)
            continue
        deaths = (props.headers or {}).get("x-death", [])
        attempts.append({(d["queue"], d["reason"]): d["count"] for d in deaths})
        if len(attempts) < 3:
            ch.basic_reject(method.delivery_tag, requeue=False)
        else:
            ch.basic_ack(method.delivery_tag)
    assert attempts == [{}, {(work, "rejected"): 1, (wait, "expired"): 1},
                        {(work, "rejected"): 2, (wait, "expired"): 2}], attempts
    first = props.headers["x-death"][0]
    assert first["queue"] == wait and first["reason"] == "expired"   # most recent first
    assert first["routing-keys"] == [wait] and first["exchange"] == ""
    assert props.headers["k"] == "v" and props.headers["x-first-death-reason"] == "rejected"
    conn.close()


def test_bad_and_inequivalent_arguments_are_406(broker):
    conn = amqp(broker)
    ch = conn.channel()
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.queue_declare(uniq("bad"), arguments={"x-overflow": "explode"})
    assert e.value.reply_code == 406
    ch = conn.channel()
    q = uniq("args")
    ch.queue_declare(q, arguments={"x-max-length": 5})
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.queue_declare(q, arguments={"x-max-length": 6})
    assert e.value.reply_code == 406
    ch = conn.channel()
    ch.queue_declare(q, arguments={"x-max-length": 5})  # the same arguments are fine
    conn.close()


@BOTH_SHARDS
def test_priority_queue_delivers_highest_first(broker):
    conn = amqp(broker)
    ch = conn.channel()
    q = uniq("prio")
    ch.queue_declare(q, arguments={"x-max-priority": 5})
    for body, prio in [(b"low", 1), (b"top", 9), (b"mid", 3), (b"top2", 5), (b"none", 0)]:
        ch.basic_publish("", q, body, pika.BasicProperties(priority=prio))
    wait_for(lambda: count(ch, q) == 5)
    got = [ch.basic_get(q, auto_ack=True)[2] for _ in range(5)]
    assert got == [b"top", b"top2", b"mid", b"low", b"none"], "9 counts as the maximum 5; FIFO within a level"
    conn.close()


def test_max_length_bytes_counts_only_ready_messages(broker):
    """Delivered messages leave the byte count: after a consumer took some, the queue still
    holds as many bytes as its limit allows."""
    conn = amqp(broker)
    ch = conn.channel()
    q = uniq("bytes")
    ch.queue_declare(q, arguments={"x-max-length-bytes": 100})
    got = []
    tag = ch.basic_consume(q, lambda c, m, p, b: got.append(b), auto_ack=True)
    for _ in range(5):
        ch.basic_publish("", q, b"x" * 40)
    deadline = time.time() + 3
    while len(got) < 5 and time.time() < deadline:
        conn.process_data_events(time_limit=0.05)
    assert len(got) == 5
    ch.basic_cancel(tag)
    ch.basic_publish("", q, b"a" * 40)
    ch.basic_publish("", q, b"b" * 40)
    wait_for(lambda: count(ch, q) == 2, timeout=2, what="both 40-byte messages kept under the 100-byte limit")
    conn.close()


def _drain(conn, got, n, timeout=3):
    deadline = time.time() + timeout
    while len(got) < n and time.time() < deadline:
        conn.process_data_events(time_limit=0.05)


def test_single_active_consumer_and_failover(broker):
    conn = amqp(broker)
    ch = conn.channel()
    q = uniq("sac")
    ch.queue_declare(q, arguments={"x-single-active-consumer": True})
    first, second = [], []
    t1 = ch.basic_consume(q, lambda c, m, p, b: first.append(b), auto_ack=True)
    ch.basic_consume(q, lambda c, m, p, b: second.append(b), auto_ack=True)
    for i in range(6):
        ch.basic_publish("", q, f"m{i}".encode())
    _drain(conn, first, 6)
    assert len(first) == 6 and second == [], "only the first consumer is active"
    ch.basic_cancel(t1)
    ch.basic_publish("", q, b"after")
    _drain(conn, second, 1)
    assert second == [b"after"], "the next consumer takes over"
    conn.close()


def test_consumer_priority_gets_messages_first(broker):
    conn = amqp(broker)
    ch = conn.channel()
    q = uniq("cprio")
    ch.queue_declare(q)
    low, high = [], []
    ch.basic_consume(q, lambda c, m, p, b: low.append(b), auto_ack=True, arguments={"x-priority": 1})
    ch.basic_consume(q, lambda c, m, p, b: high.append(b), auto_ack=True, arguments={"x-priority": 10})
    for i in range(10):
        ch.basic_publish("", q, f"m{i}".encode())
    _drain(conn, high, 10)
    assert len(high) == 10 and low == [], f"high={len(high)} low={len(low)}"
    conn.close()
