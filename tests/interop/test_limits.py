"""Disk limits hold publishers back with flow control, never a crash (ARCHITECTURE §4).

A tiny disk budget (a few 64 KiB segments) fills with persistent messages nobody consumes:
the broker stops reading from the publishing connection (its receipts stop), logs why, and
keeps serving a consumer on another connection; once that consumer drains the queue,
compaction frees the segments and the publisher resumes, losing nothing.
"""

import time

from conftest import wait_for, uniq

SEGMENT = 64 * 1024
BUDGET_CONFIG = (
    f"segment_size_bytes = {SEGMENT}\ndisk_budget_bytes = {3 * SEGMENT}\n"
    "[limits]\nframe_size_bytes_max = 32768\nframe_header_bytes_max = 8192\n"
)


def test_disk_budget_blocks_publishers_until_consumers_free_space(broker_factory, stomp_client):
    b = broker_factory(shards=1, config=BUDGET_CONFIG)
    q = f"/queue/{uniq('disk')}"
    pub, pub_l = stomp_client(target=b)
    body = "x" * 4096

    def receipted():
        return sum(1 for r in pub_l.receipts if r and r.startswith("r"))

    total = 0

    def publish(n):
        nonlocal total
        for _ in range(n):
            pub.send(q, body, headers={"persistent": "true", "n": str(total), "receipt": f"r{total}"})
            total += 1

    # Paced batches: the limit is checked a few times a second, like RabbitMQ's alarms.
    for _ in range(60):
        publish(8)
        pub_l.quiet_for(0.15)
        if "disk limit reached" in b.log_tail():
            break
    assert "disk limit reached" in b.log_tail(), f"never reached: sent {total}, receipted {receipted()}"
    publish(8)  # sent while held back: not read, so not confirmed
    pub_l.quiet_for(0.5)
    stalled = receipted()
    pub_l.quiet_for(1.0)
    assert receipted() == stalled < total, f"publisher still confirmed: {stalled} -> {receipted()} of {total}"

    con, con_l = stomp_client(target=b)
    con.subscribe(q, id="drain", ack="auto")
    con_l.wait_messages(total, timeout=20)
    wait_for(lambda: receipted() == total, timeout=20, what="all receipts after the alarm cleared")
    assert "publishers resume" in b.log_tail()
    got = sorted(int(m.headers["n"]) for m in con_l.messages)
    assert got == list(range(total)), "every message arrived exactly once"
    assert b.alive()


QUEUE_LIMIT_CONFIG = "[limits]\nqueue_message_count_max = 50\n"


def test_full_queue_holds_publishers_back_and_loses_nothing(broker_factory, stomp_client):
    """Publishes without receipts to a queue nobody consumes: past its limit the publisher is
    held back (not dropped); a consumer then drains every message exactly once."""
    b = broker_factory(shards=2, config=QUEUE_LIMIT_CONFIG)
    q = f"/queue/{uniq('full')}"
    pub, pub_l = stomp_client(target=b)
    sent = 0
    for _ in range(40):  # paced: the limit is checked a few times a second
        for _ in range(5):
            pub.send(q, f"m{sent}", headers={"n": str(sent)})
            sent += 1
        pub_l.quiet_for(0.12)
        if "publishers are held back" in b.log_tail():
            break
    assert "queue at its message limit" in b.log_tail(), f"no flow control after {sent} messages"
    for _ in range(20):  # sent while held back: buffered by TCP, not lost
        pub.send(q, f"m{sent}", headers={"n": str(sent)})
        sent += 1
    con, con_l = stomp_client(target=b)
    con.subscribe(q, id="d", ack="auto")
    con_l.wait_messages(sent, timeout=20)
    assert sorted(int(m.headers["n"]) for m in con_l.quiet_for(0.5)) == list(range(sent))
    assert not pub_l.errors, f"publisher got errors: {pub_l.errors}"


def test_burst_past_the_hard_limit_is_refused_not_dropped(broker_factory, raw):
    """A burst faster than flow control reacts: what the queue cannot take is refused with an
    ERROR to the publisher, and everything the broker accepted is delivered."""
    b = broker_factory(shards=1, config=QUEUE_LIMIT_CONFIG)
    q = f"/queue/{uniq('burst')}"
    pub = raw(target=b)
    pub.send(b"".join(f"SEND\ndestination:{q}\nn:{i}\n\nx\0".encode() for i in range(400)))
    err = pub.expect_frame("ERROR", timeout=5)
    assert "is full" in err.body.decode() or "is full" in str(err.headers), err
    pub.wait_eof(timeout=2)
    con = raw(target=b)
    con.send(f"SUBSCRIBE\nid:1\ndestination:{q}\nack:auto\n\n\0".encode())
    got = []
    try:
        while True:
            f = con.read_frame(timeout=1.0)
            if f is None:
                break
            got.append(int(f.headers["n"]))
    except TimeoutError:
        pass
    assert got == list(range(len(got))) and 50 <= len(got) <= 100, f"accepted and delivered: {len(got)}"


def test_amqp_publisher_is_told_blocked_and_unblocked(broker_factory):
    """RabbitMQ's connection.blocked/unblocked accompany the resource alarm over AMQP."""
    import pika

    b = broker_factory(shards=1, config=BUDGET_CONFIG)
    conn = pika.BlockingConnection(pika.ConnectionParameters(host="127.0.0.1", port=b.amqp_port, socket_timeout=5))
    events = []
    conn.add_on_connection_blocked_callback(lambda c, m: events.append("blocked"))
    conn.add_on_connection_unblocked_callback(lambda c, m: events.append("unblocked"))
    ch = conn.channel()
    q = uniq("blk")
    ch.queue_declare(q, durable=True)
    for _ in range(60):
        for _ in range(8):
            ch.basic_publish("", q, b"x" * 4096, pika.BasicProperties(delivery_mode=2))
        conn.process_data_events(time_limit=0.15)
        if "blocked" in events:
            break
    assert events[:1] == ["blocked"], events
    drain = pika.BlockingConnection(pika.ConnectionParameters(host="127.0.0.1", port=b.amqp_port, socket_timeout=5))
    dch = drain.channel()
    deadline = time.time() + 20
    while "unblocked" not in events and time.time() < deadline:
        dch.basic_get(q, auto_ack=True)
        conn.process_data_events(time_limit=0.01)
    assert "unblocked" in events, events
    drain.close()
    conn.close()


SMALL_CONNECTION_LIMITS = "[limits]\ntransaction_op_count_max = 4\nsubscription_count_max = 3\n"


def test_amqp_per_connection_bounds(broker_factory):
    """Transaction buffers and consumers per connection are bounded (limits in config)."""
    import pika
    from pika.exceptions import ChannelClosedByBroker

    b = broker_factory(shards=1, config=SMALL_CONNECTION_LIMITS)
    conn = pika.BlockingConnection(pika.ConnectionParameters(host="127.0.0.1", port=b.amqp_port, socket_timeout=5))
    ch = conn.channel()
    q = uniq("bound")
    ch.queue_declare(q)
    ch.tx_select()
    for _ in range(5):
        ch.basic_publish("", q, b"x")
    import pytest as _pytest
    with _pytest.raises(ChannelClosedByBroker) as e:
        ch.tx_commit()
    assert e.value.reply_code == 406
    ch = conn.channel()
    for _ in range(3):
        ch.basic_consume(q, lambda *a: None)
    with _pytest.raises(ChannelClosedByBroker) as e:
        ch.basic_consume(q, lambda *a: None)
    assert e.value.reply_code == 506
    conn.close()


def test_stomp_temp_queues_per_connection_are_bounded(broker_factory, raw):
    b = broker_factory(shards=1, config=SMALL_CONNECTION_LIMITS)
    c = raw(target=b)
    for i in range(3):
        c.send(f"SEND\ndestination:/queue/{uniq('t')}\nreply-to:/temp-queue/r{i}\nreceipt:ok{i}\n\nx\0".encode())
        c.expect_frame("RECEIPT")
    c.send(b"SEND\ndestination:/queue/t\nreply-to:/temp-queue/one-too-many\n\nx\0")
    err = c.expect_frame("ERROR")
    assert "temp queues" in err.body.decode(), err
    c.wait_eof(timeout=2)
