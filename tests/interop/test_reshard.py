"""Restarting on the same data directory with another shard count.

More shards: durable queues re-place by hash and their messages move to the new owners
(`engine/src/shard/recovery.rs`, `moved`); every receipted persistent message comes back once,
also after a second restart (the old owner's log keeps the queue with its copies settled).
Fewer shards: the logs of the shards that would not run are not read, so the broker refuses
to start and says so, instead of serving without their queues; nothing is lost."""

import subprocess

from conftest import free_port, send_sync, subscribe_sync, uniq


def publish(stomp_client, target, queues):
    c, lis = stomp_client(target=target)
    for q in queues:
        for i in range(3):
            send_sync(c, lis, q, f"{q}#{i}", headers={"persistent": "true"})
    c.disconnect()


def assert_all_back_once(stomp_client, target, queues, what):
    c, lis = stomp_client(target=target)
    for q in queues:
        subscribe_sync(c, lis, q)
    got = [m.body for m in lis.quiet_for(0.8)]
    for q in queues:
        mine = [b for b in got if b.startswith(q + "#")]
        assert mine == [f"{q}#{i}" for i in range(3)], f"{q}: got {mine} {what}"


def test_more_shards_move_every_message_once(broker_factory, stomp_client):
    b1 = broker_factory(shards=1, name="one")
    qs = [f"/queue/{uniq('reshard')}" for _ in range(6)]  # some re-place, some stay
    publish(stomp_client, b1, qs)
    assert b1.stop() == 0
    b2 = broker_factory(shards=2, data_dir=b1.data_dir, name="two")
    assert b2.stop() == 0
    b3 = broker_factory(shards=2, data_dir=b1.data_dir, name="two-again")
    assert_all_back_once(stomp_client, b3, qs, "after 1 -> 2 shards and a second restart")


def test_fewer_shards_are_refused_and_lose_nothing(broker_factory, stomp_client, ferry_bin):
    b1 = broker_factory(shards=2, name="two")
    qs = [f"/queue/{uniq('reshard')}" for _ in range(6)]  # both shards own some
    publish(stomp_client, b1, qs)
    assert b1.stop() == 0
    cmd = [str(ferry_bin), "--data-dir", str(b1.data_dir), "--shards", "1",
           "--listen", f"stomp=127.0.0.1:{free_port()}", "--listen", f"admin=127.0.0.1:{free_port()}"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert run.returncode != 0, "started with a shard's log left unread"
    assert "holds the log of shard 1" in run.stderr and "--shards 2" in run.stderr, run.stderr[-2000:]
    b2 = broker_factory(shards=2, data_dir=b1.data_dir, name="two-again")
    assert_all_back_once(stomp_client, b2, qs, "after a refused start with 1 shard")
