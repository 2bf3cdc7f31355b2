"""BEGIN / COMMIT / ABORT for SEND and ACK (shards 1 and 2)."""

from conftest import BOTH_SHARDS, ack_args, close_conn, send_sync, subscribe_sync, uniq

pytestmark = BOTH_SHARDS


def _sync(conn, lis):
    """Round-trip a harmless frame with a receipt so the broker has processed all before it."""
    rid = uniq("rsync")
    conn.send_frame("BEGIN", {"transaction": uniq("noop"), "receipt": rid})
    lis.wait_receipt(rid)


def test_send_in_transaction_commit(stomp_client):
    q = f"/queue/{uniq('q')}"
    sub, slis = stomp_client()
    subscribe_sync(sub, slis, q)
    prod, plis = stomp_client()
    tx = prod.begin()
    for i in range(3):
        prod.send(q, f"tx{i}", transaction=tx)
    send_sync(prod, plis, q, "outside")  # not in the transaction: delivered at once
    slis.wait_messages(1)
    assert [m.body for m in slis.quiet_for(0.5)] == ["outside"], "transactional SEND leaked before COMMIT"
    prod.commit(tx, headers={"receipt": "r-commit"})
    plis.wait_receipt("r-commit")
    slis.wait_messages(4)
    assert [m.body for m in slis.quiet_for(0.2)] == ["outside", "tx0", "tx1", "tx2"]


def test_send_in_transaction_abort(stomp_client):
    q = f"/queue/{uniq('q')}"
    sub, slis = stomp_client()
    subscribe_sync(sub, slis, q)
    prod, plis = stomp_client()
    tx = prod.begin()
    prod.send(q, "never", transaction=tx)
    prod.abort(tx, headers={"receipt": "r-abort"})
    plis.wait_receipt("r-abort")
    send_sync(prod, plis, q, "after abort")
    slis.wait_messages(1)
    assert [m.body for m in slis.quiet_for(0.5)] == ["after abort"]


def test_ack_in_transaction_commit(stomp_client):
    q = f"/queue/{uniq('q')}"
    prod, plis = stomp_client()
    send_sync(prod, plis, q, "ack-commit")
    c, lis = stomp_client()
    subscribe_sync(c, lis, q, ack="client-individual")
    (m,) = lis.wait_messages(1)
    tx = c.begin()
    c.ack(*ack_args(m, "1.2"), transaction=tx)
    c.commit(tx, headers={"receipt": "r-commit"})
    lis.wait_receipt("r-commit")
    close_conn(c)
    c2, l2 = stomp_client()
    subscribe_sync(c2, l2, q, ack="client-individual")
    assert l2.quiet_for(0.5) == [], "ACK committed in a transaction did not take effect"


def test_ack_in_transaction_abort(stomp_client):
    q = f"/queue/{uniq('q')}"
    prod, plis = stomp_client()
    send_sync(prod, plis, q, "ack-abort")
    c, lis = stomp_client()
    subscribe_sync(c, lis, q, ack="client-individual")
    (m,) = lis.wait_messages(1)
    tx = c.begin()
    c.ack(*ack_args(m, "1.2"), transaction=tx)
    c.abort(tx, headers={"receipt": "r-abort"})
    lis.wait_receipt("r-abort")
    close_conn(c)
    c2, l2 = stomp_client()
    subscribe_sync(c2, l2, q, ack="client-individual")
    (again,) = l2.wait_messages(1)
    assert again.body == "ack-abort", "ACK in an aborted transaction must be discarded"
    assert again.headers.get("redelivered") == "true"


def test_ack_in_transaction_pending_until_commit(stomp_client):
    """Before COMMIT, a transactional ACK has no effect: disconnect -> message redelivered."""
    q = f"/queue/{uniq('q')}"
    prod, plis = stomp_client()
    send_sync(prod, plis, q, "pending")
    c, lis = stomp_client()
    subscribe_sync(c, lis, q, ack="client-individual")
    (m,) = lis.wait_messages(1)
    tx = c.begin()
    c.ack(*ack_args(m, "1.2"), transaction=tx)
    _sync(c, lis)
    close_conn(c)  # transaction never committed
    c2, l2 = stomp_client()
    subscribe_sync(c2, l2, q, ack="client-individual")
    assert l2.wait_messages(1)[0].body == "pending"


def test_commit_unknown_transaction_is_error(stomp_client):
    c, lis = stomp_client()
    c.commit(uniq("nosuchtx"))
    err = lis.wait_error()
    assert err.headers.get("message")
