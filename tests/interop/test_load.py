"""Many connections, queues and messages at once: nothing lost, nothing duplicated, even
when producers, consumers and queues sit on different shards."""

import threading

from conftest import (BOTH_SHARDS, ack_args, drop_conn, send_sync, subscribe_sync, uniq,
                      wait_for)

pytestmark = BOTH_SHARDS


def test_many_producers_many_consumers_no_loss_no_dup(stomp_client):
    q = f"/queue/{uniq('load')}"
    consumers = [stomp_client() for _ in range(3)]
    for c, lis in consumers:
        subscribe_sync(c, lis, q, ack="client-individual", headers={"prefetch-count": "50"})
    acked = {id(lis): 0 for _, lis in consumers}

    producers = [stomp_client() for _ in range(3)]
    per_producer = 300

    def produce(idx, conn, lis):
        for i in range(per_producer):
            conn.send(q, f"p{idx}-{i}")
        send_sync(conn, lis, q, f"p{idx}-end")

    threads = [threading.Thread(target=produce, args=(i, c, l), daemon=True)
               for i, (c, l) in enumerate(producers)]
    for t in threads:
        t.start()
    total = len(producers) * (per_producer + 1)

    def ack_pending():
        n = 0
        for c, lis in consumers:
            msgs = list(lis.messages)
            for m in msgs[acked[id(lis)]:]:
                c.ack(*ack_args(m, "1.2"))
            acked[id(lis)] = len(msgs)
            n += len(msgs)
        return n >= total

    wait_for(ack_pending, timeout=20, interval=0.02, what=f"{total} deliveries")
    for t in threads:
        t.join(timeout=5)
    bodies = [m.body for _, lis in consumers for m in lis.messages]
    assert len(bodies) == len(set(bodies)), "duplicate deliveries"
    want = {f"p{p}-{i}" for p in range(3) for i in range(per_producer)} | {f"p{p}-end" for p in range(3)}
    assert set(bodies) == want
    assert all(len(lis.messages) > 0 for _, lis in consumers), "a consumer got nothing"
    # per-producer order holds within each consumer
    for _, lis in consumers:
        for p in range(3):
            seq = [int(b.split("-")[1]) for b in (m.body for m in lis.messages)
                   if b.startswith(f"p{p}-") and not b.endswith("end")]
            assert seq == sorted(seq), f"producer {p} order broken at a consumer"


def test_many_queues_across_shards(stomp_client):
    qs = [f"/queue/{uniq('mq')}" for _ in range(24)]
    prod, plis = stomp_client()
    for q in qs:
        send_sync(prod, plis, q, q)
    cons = [stomp_client() for _ in range(4)]
    for i, q in enumerate(qs):
        c, lis = cons[i % 4]
        subscribe_sync(c, lis, q)
    for i, (c, lis) in enumerate(cons):
        want = sorted(qs[i::4])
        lis.wait_messages(len(want))
        assert sorted(m.body for m in lis.quiet_for(0.2)) == want


def test_topic_fanout_to_many_connections(stomp_client):
    key = f"fan.{uniq('t').replace('-', '')}"
    subs = [stomp_client() for _ in range(8)]
    for c, lis in subs:
        subscribe_sync(c, lis, f"/topic/{key}")
    prod, plis = stomp_client()
    for i in range(20):
        prod.send(f"/topic/{key}", str(i))
    send_sync(prod, plis, f"/topic/{key}", "end")
    want = [str(i) for i in range(20)] + ["end"]
    for c, lis in subs:
        lis.wait_messages(len(want))
        assert [m.body for m in lis.quiet_for(0.1)] == want


def test_transaction_spanning_queues_on_both_shards(stomp_client):
    qs = [f"/queue/{uniq('txq')}" for _ in range(8)]
    sub, slis = stomp_client()
    for q in qs:
        subscribe_sync(sub, slis, q)
    prod, plis = stomp_client()
    tx = prod.begin()
    for q in qs:
        prod.send(q, q, transaction=tx)
    assert slis.quiet_for(0.3) == [], "transactional SENDs leaked before COMMIT"
    prod.commit(tx, headers={"receipt": "r-commit"})
    plis.wait_receipt("r-commit")
    slis.wait_messages(len(qs))
    assert sorted(m.body for m in slis.quiet_for(0.2)) == sorted(qs)


def test_consumer_leaving_hands_over_to_remaining(stomp_client):
    q = f"/queue/{uniq('q')}"
    a, alis = stomp_client()
    b, blis = stomp_client()
    subscribe_sync(a, alis, q, ack="client-individual", headers={"prefetch-count": "1"})
    subscribe_sync(b, blis, q, ack="client-individual", headers={"prefetch-count": "1"})
    prod, plis = stomp_client()
    for i in range(4):
        send_sync(prod, plis, q, f"h{i}")
    alis.wait_messages(1)
    blis.wait_messages(1)
    drop_conn(a)  # a's unacked message must go to b
    got = []
    for _ in range(4):
        msgs = blis.wait_messages(len(got) + 1)
        m = msgs[len(got)]
        got.append(m.body)
        b.ack(*ack_args(m, "1.2"))
        if len(got) == 4:
            break
    assert sorted(got) == ["h0", "h1", "h2", "h3"]


def test_slow_raw_consumer_gets_everything_in_order(raw, stomp_client):
    """A consumer that stops reading (its socket buffers fill up) must not lose or reorder
    messages; the broker pauses deliveries and resumes when the consumer reads again."""
    q = f"/queue/{uniq('slow')}"
    c = raw()
    c.send(f"SUBSCRIBE\ndestination:{q}\nid:s\nreceipt:r\n\n\x00")
    c.expect_frame("RECEIPT")
    prod, plis = stomp_client()
    n, chunk = 1500, "z" * 4096  # ~6 MiB, beyond socket buffers and the output limit
    for i in range(n):
        prod.send(q, f"{i:06d}{chunk}")
    send_sync(prod, plis, q, "end")
    got = []
    while len(got) < n + 1:
        f = c.read_frame(timeout=10)
        assert f is not None, f"closed after {len(got)} messages ({c.eof_reason})"
        assert f.cmd == "MESSAGE", f
        got.append(f.body[:6])
    assert got == [f"{i:06d}".encode() for i in range(n)] + [b"end"]


def test_one_mib_topic_fanout(stomp_client):
    import os
    key = f"big.{uniq('t').replace('-', '')}"
    subs = [stomp_client(auto_decode=False) for _ in range(3)]
    for c, lis in subs:
        subscribe_sync(c, lis, f"/topic/{key}")
    prod, plis = stomp_client(auto_decode=False)
    body = os.urandom(1 << 20)
    send_sync(prod, plis, f"/topic/{key}", body)
    for c, lis in subs:
        assert lis.wait_messages(1, timeout=10)[0].body == body
