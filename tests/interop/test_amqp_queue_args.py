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
