"""Durability across restarts: persistent + RECEIPT means on disk (ARCHITECTURE §4)."""

from pathlib import Path

import pika

from conftest import BOTH_SHARDS, ack_args, send_sync, subscribe_sync, uniq, wait_for
from test_amqp_pika import amqp

pytestmark = BOTH_SHARDS


def _restart(broker, broker_factory, how):
    code = broker.kill() if how == "kill" else broker.stop()
    if how == "term":
        assert code == 0, f"exit code after SIGTERM: {code}"
    return broker_factory(shards=broker.shards, data_dir=broker.data_dir, name=f"after-{how}")


def test_receipted_persistent_messages_survive_sigkill(broker, broker_factory, stomp_client):
    qs = [f"/queue/{uniq('dur')}" for _ in range(4)]  # several queues: both shards own some
    c, lis = stomp_client()
    for q in qs:
        for i in range(5):
            send_sync(c, lis, q, f"{q}#{i}", headers={"persistent": "true"})
    b2 = _restart(broker, broker_factory, "kill")
    c2, l2 = stomp_client(target=b2)
    for q in qs:
        subscribe_sync(c2, l2, q)
    l2.wait_messages(20)
    got = [m.body for m in l2.quiet_for(0.3)]
    for q in qs:
        assert [b for b in got if b.startswith(q + "#")] == [f"{q}#{i}" for i in range(5)], \
            f"{q}: after SIGKILL got {[b for b in got if b.startswith(q + '#')]}"


def test_acked_messages_stay_gone_after_restart(broker, broker_factory, stomp_client):
    q = f"/queue/{uniq('dur')}"
    c, lis = stomp_client()
    for i in range(4):
        send_sync(c, lis, q, f"a{i}", headers={"persistent": "true"})
    subscribe_sync(c, lis, q, ack="client-individual")
    msgs = lis.wait_messages(4)
    for m in msgs[:2]:
        rid = uniq("rack")
        c.ack(*ack_args(m, "1.2"), receipt=rid)
        lis.wait_receipt(rid)
    b2 = _restart(broker, broker_factory, "term")
    c2, l2 = stomp_client(target=b2)
    subscribe_sync(c2, l2, q, ack="client-individual")
    l2.wait_messages(2)
    assert [m.body for m in l2.quiet_for(0.5)] == ["a2", "a3"], "acked messages came back or unacked lost"


def test_committed_transaction_survives_restart(broker, broker_factory, stomp_client):
    q = f"/queue/{uniq('dur')}"
    c, lis = stomp_client()
    tx = c.begin()
    for i in range(3):
        c.send(q, f"t{i}", transaction=tx, headers={"persistent": "true"})
    c.commit(tx, headers={"receipt": "r-commit"})
    lis.wait_receipt("r-commit")
    tx2 = c.begin()
    c.send(q, "aborted", transaction=tx2, headers={"persistent": "true"})
    c.abort(tx2, headers={"receipt": "r-abort"})
    lis.wait_receipt("r-abort")
    b2 = _restart(broker, broker_factory, "kill")
    c2, l2 = stomp_client(target=b2)
    subscribe_sync(c2, l2, q)
    l2.wait_messages(3)
    assert [m.body for m in l2.quiet_for(0.5)] == ["t0", "t1", "t2"]


def test_delivered_unacked_messages_come_back_after_sigkill(broker, broker_factory, stomp_client):
    q = f"/queue/{uniq('dur')}"
    c, lis = stomp_client()
    for i in range(3):
        send_sync(c, lis, q, f"u{i}", headers={"persistent": "true"})
    subscribe_sync(c, lis, q, ack="client-individual")
    lis.wait_messages(3)  # delivered, never acked
    b2 = _restart(broker, broker_factory, "kill")
    c2, l2 = stomp_client(target=b2)
    subscribe_sync(c2, l2, q, ack="client-individual")
    l2.wait_messages(3)
    assert [m.body for m in l2.quiet_for(0.3)] == ["u0", "u1", "u2"]


def test_auto_acked_messages_stay_gone_after_restart(broker, broker_factory, stomp_client):
    q = f"/queue/{uniq('dur')}"
    c, lis = stomp_client()
    for i in range(3):
        send_sync(c, lis, q, f"auto{i}", headers={"persistent": "true"})
    subscribe_sync(c, lis, q, ack="auto")
    lis.wait_messages(3)  # delivered with ack:auto = settled
    b2 = _restart(broker, broker_factory, "term")
    c2, l2 = stomp_client(target=b2)
    subscribe_sync(c2, l2, q, ack="auto")
    assert [m.body for m in l2.quiet_for(0.5)] == [], \
        "auto-acked persistent messages were delivered again after a clean restart"


def test_queue_declaration_survives_restart(broker, broker_factory, stomp_client):
    """/queue/NAME declares a durable queue: after a restart /amq/queue/NAME still exists."""
    name = uniq("decl")
    c, lis = stomp_client()
    send_sync(c, lis, f"/queue/{name}", "x", headers={"persistent": "true"})
    subscribe_sync(c, lis, f"/queue/{name}", ack="client-individual")
    (m,) = lis.wait_messages(1)
    rid = uniq("rack")
    c.ack(*ack_args(m, "1.2"), receipt=rid)
    lis.wait_receipt(rid)  # the queue is now empty
    b2 = _restart(broker, broker_factory, "term")
    c2, l2 = stomp_client(target=b2)
    subscribe_sync(c2, l2, f"/amq/queue/{name}")  # ERROR (no receipt) if the queue was lost
    assert l2.errors == []
    send_sync(c2, l2, f"/amq/queue/{name}", "after restart")
    l2.wait_messages(1)
    assert [m.body for m in l2.quiet_for(0.3)] == ["after restart"]


def test_purged_persistent_messages_stay_gone_after_sigkill(broker, broker_factory):
    """queue.purge settles what it drops in the log, as an ack does: after a SIGKILL (once a
    later confirmed publish's sync covered the purge) only what came after it is there (pika)."""
    conn = amqp(broker)
    ch = conn.channel()
    ch.confirm_delivery()
    q = uniq("purge")
    ch.queue_declare(q, durable=True)
    for i in range(5):
        ch.basic_publish("", q, f"before{i}".encode(), pika.BasicProperties(delivery_mode=2))
    assert ch.queue_purge(q).method.message_count == 5
    ch.basic_publish("", q, b"after", pika.BasicProperties(delivery_mode=2))  # confirmed: synced
    b2 = _restart(broker, broker_factory, "kill")
    conn2 = amqp(b2)
    ch2 = conn2.channel()
    assert ch2.queue_declare(q, durable=True, passive=True).method.message_count == 1
    assert ch2.basic_get(q, auto_ack=True)[2] == b"after"
    conn2.close()


def _send_to_both_and_stop(broker, stomp_client, first, second, count):
    """Sends `count` receipted persistent messages to each of two queues, alternating: a
    `(queue, body prefix)` pair each, bodies numbered from 0. Then stops the broker cleanly."""
    c, lis = stomp_client()
    for i in range(count):
        for queue, prefix in (first, second):
            send_sync(c, lis, f"/queue/{queue}", f"{prefix}{i}", headers={"persistent": "true"})
    assert broker.stop() == 0


def _damage_where(data_dir, marker, damage):
    """Applies `damage(data, at)` to the one segment file holding `marker` (at its offset
    `at`), as a broker that is stopped would find it on disk; returns that file's path."""
    damaged = []
    for seg in Path(data_dir).glob("shard-*/*.seg"):
        data = bytearray(seg.read_bytes())
        at = data.find(marker)
        if at >= 0:
            damage(data, at)
            seg.write_bytes(bytes(data))
            damaged.append(seg)
    assert len(damaged) == 1, damaged
    return damaged


def test_a_damaged_record_quarantines_its_queue_and_keeps_its_records(broker, broker_factory, stomp_client):
    """A record damaged inside the synced region (a flipped body byte: the CRC fails) takes
    only its queue out of service; the other queue is served, and the log's segments as they
    were at start are kept (hard links) under quarantine-*/ for inspection, so compaction
    cannot delete the damaged queue's records (stomp.py)."""
    qa, qb = uniq("qa"), uniq("qb")
    _send_to_both_and_stop(broker, stomp_client, (qa, "DAMAGE-ME-"), (qb, "b"), 3)
    marker = b"DAMAGE-ME-1"

    def flip(data, at):
        data[at] ^= 0xFF

    damaged = _damage_where(broker.data_dir, marker, flip)
    b2 = broker_factory(shards=broker.shards, data_dir=broker.data_dir, name="after-damage")
    c2, l2 = stomp_client(target=b2)
    subscribe_sync(c2, l2, f"/queue/{qb}")
    l2.wait_messages(3)
    assert [m.body for m in l2.quiet_for(0.3)] == ["b0", "b1", "b2"]
    kept = list(damaged[0].parent.glob("quarantine-*/" + damaged[0].name))
    assert len(kept) == 1 and kept[0].stat().st_ino == damaged[0].stat().st_ino, kept
    assert marker[1:] in kept[0].read_bytes(), "the damaged record is in the kept copy"
    log = b2.log_path.read_text()
    assert qa in log and "quarantine" in log, log[-3000:]


def test_a_garbled_record_header_inside_the_synced_region_costs_only_its_queue(
    broker, broker_factory, stomp_client
):
    """A record whose magic, checksum and length are garbled in the middle of the log: the
    records after it were written after the sync that covered it, and say so, so it is damage
    rather than a torn tail. Its queue (named by its metadata) is quarantined; the other
    queue's messages after it are still delivered, not zeroed away with it (stomp.py)."""
    q, r = uniq("garbled"), uniq("after")
    _send_to_both_and_stop(broker, stomp_client, (q, "GARBLE-"), (r, "r"), 5)
    _garble_and_restart(broker, broker_factory, stomp_client, b"GARBLE-2", q, r, [f"r{i}" for i in range(5)])


def _garble_and_restart(broker, broker_factory, stomp_client, marker, garbled, other, bodies):
    """Garbles the magic, checksum and length of the record whose body holds `marker`, starts a
    broker on the data directory, and checks that queue `other` delivers `bodies` while queue
    `garbled` is reported quarantined for damage inside the synced region."""

    def garble_header(data, body):
        start = max(at for at in range(0, body, 8) if data[at : at + 4] == b"FRec")
        data[start : start + 12] = b"\xee" * 12

    _damage_where(broker.data_dir, marker, garble_header)
    b2 = broker_factory(shards=broker.shards, data_dir=broker.data_dir, name="after-garble")
    c2, l2 = stomp_client(target=b2)
    subscribe_sync(c2, l2, f"/queue/{other}")
    l2.wait_messages(len(bodies))
    assert [m.body for m in l2.quiet_for(0.5)] == bodies
    log = b2.log_path.read_text()
    assert "unreadable bytes inside the synced region" in log, log[-3000:]
    assert garbled in log and "quarantine" in log, log[-3000:]


def test_a_garbled_last_record_before_an_idle_spell_quarantines_its_queue(
    broker, broker_factory, stomp_client
):
    """The last record the broker wrote before going idle is garbled after a crash. Nothing
    after it would say it was synced, so recovery would take it for a torn tail and drop a
    receipted message without a word. A broker whose log has been idle for a moment appends
    a record that vouches for the last synced batch, so the garbled record is damage inside
    the synced region: its queue is quarantined and reported, and the other queue is served
    (stomp.py; kill -9, so no clean stop writes anything)."""
    q, r = uniq("lastq"), uniq("other")
    c, lis = stomp_client()
    for i in range(3):
        send_sync(c, lis, f"/queue/{r}", f"r{i}", headers={"persistent": "true"})
    send_sync(c, lis, f"/queue/{q}", "LAST-ONE", headers={"persistent": "true"})
    [seg] = [s for s in Path(broker.data_dir).glob("shard-*/*.seg") if b"LAST-ONE" in s.read_bytes()]

    def vouched():
        data = seg.read_bytes()
        return data.find(b"FRec", data.find(b"LAST-ONE")) >= 0

    wait_for(vouched, timeout=10, what="a record after the last message")
    broker.kill()
    _garble_and_restart(broker, broker_factory, stomp_client, b"LAST-ONE", q, r, [f"r{i}" for i in range(3)])


TX_MARK = b"TX-PART-"
TX_SENDS = 6


def _tear_through_the_transaction(data_dir):
    """A power loss in the middle of writing a transaction: in the one segment that holds
    the transaction's bodies, every byte from halfway between its first and last body to the
    end of the file is zeroed, as if those pages never reached the disk."""
    segments = [s for s in Path(data_dir).glob("shard-*/*.seg") if TX_MARK in s.read_bytes()]
    assert len(segments) == 1, segments
    data = bytearray(segments[0].read_bytes())
    first, last = data.find(TX_MARK + b"0"), data.rfind(TX_MARK + str(TX_SENDS - 1).encode())
    assert 0 <= first < last, (first, last)
    cut = (first + last) // 2
    data[cut:] = bytes(len(data) - cut)
    segments[0].write_bytes(bytes(data))


def _tx_body(i):
    return (TX_MARK + str(i).encode()).decode() + "." * 2000


def test_a_transaction_torn_by_a_power_loss_comes_back_not_at_all(broker, broker_factory, stomp_client):
    """A committed STOMP transaction (six SENDs and the ACK of an earlier message) whose bytes
    a power loss cut in half: recovery brings back none of it, neither its first SENDs nor
    anything else, so the earlier message is still there. Each queue owner logs its share of a
    transaction as one record (stomp.py; kill -9, then the tear)."""
    q = f"/queue/{uniq('torn-tx')}"
    c, lis = stomp_client()
    send_sync(c, lis, q, "before", headers={"persistent": "true"})
    subscribe_sync(c, lis, q, ack="client-individual")
    [before] = lis.wait_messages(1)
    tx = c.begin()
    for i in range(TX_SENDS):
        c.send(q, _tx_body(i), transaction=tx, headers={"persistent": "true"})
    c.ack(*ack_args(before, "1.2"), transaction=tx)
    c.commit(tx, headers={"receipt": "r-commit"})
    lis.wait_receipt("r-commit")
    broker.kill()
    _tear_through_the_transaction(broker.data_dir)
    b2 = broker_factory(shards=broker.shards, data_dir=broker.data_dir, name="after-tear")
    c2, l2 = stomp_client(target=b2)
    subscribe_sync(c2, l2, q)
    l2.wait_messages(1)
    assert [m.body for m in l2.quiet_for(0.5)] == ["before"], "part of a torn transaction came back"
    assert "queue quarantined" not in b2.log_path.read_text()


def take_in_a_transaction(broker, q, also=()):
    """Declares the durable queues `q` and `also`, publishes a persistent "before" to `q`
    (confirmed), then opens a pika channel in tx mode that has taken it (unacked): returns
    the connection, the channel and the get's method."""
    conn = amqp(broker)
    ch = conn.channel()
    for name in (q, *also):
        ch.queue_declare(name, durable=True)
    ch.confirm_delivery()
    ch.basic_publish("", q, b"before", pika.BasicProperties(delivery_mode=2))
    conn.close()
    conn = amqp(broker)
    ch = conn.channel()
    ch.tx_select()
    method, _, body = ch.basic_get(q)
    assert body == b"before"
    return conn, ch, method


def test_a_pika_transaction_torn_by_a_power_loss_comes_back_not_at_all(broker, broker_factory):
    """The same over AMQP 0-9-1: pika publishes six persistent messages and acks an earlier
    one in a transaction (tx.select / tx.commit); a tear through its bytes leaves none of it."""
    q = uniq("torn-tx-amqp")
    conn, ch, method = take_in_a_transaction(broker, q)
    for i in range(TX_SENDS):
        ch.basic_publish("", q, _tx_body(i).encode(), pika.BasicProperties(delivery_mode=2))
    ch.basic_ack(method.delivery_tag)
    ch.tx_commit()
    broker.kill()
    _tear_through_the_transaction(broker.data_dir)
    b2 = broker_factory(shards=broker.shards, data_dir=broker.data_dir, name="after-tear")
    conn = amqp(b2)
    ch = conn.channel()
    got = []
    while (m := ch.basic_get(q, auto_ack=True))[0] is not None:
        got.append(m[2])
    conn.close()
    assert got == [b"before"], f"part of a torn transaction came back: {[g[:12] for g in got]}"
