"""Disk limits hold publishers back with flow control, never a crash (ARCHITECTURE §4).

A tiny disk budget (a few 64 KiB segments) fills with persistent messages nobody consumes:
the broker stops reading from the publishing connection (its receipts stop), logs why, and
keeps serving a consumer on another connection; once that consumer drains the queue,
compaction frees the segments and the publisher resumes, losing nothing.
"""

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
