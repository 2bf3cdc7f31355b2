"""A transaction whose queues live on two shards survives a power loss whole or not at all.

Each shard logs its share of the commit marked with the transaction's id; the coordinating
shard then logs the commit itself, and the other shard a copy of it. Recovery keeps the shares
only if some shard's log holds the commit. `kill -9` keeps everything written to the mapped
log, so the test makes the logs of a crash afterwards by zeroing a shard's log from the end of
its share to the end of the file: the commits go, the shares stay. The commit was synced
before tx.commit-ok, so losing it from both logs is what a crash before tx.commit-ok leaves
(both shares durable, the commit not yet), made here from logs a real client wrote; losing it
from one log is a crash before the other shard recorded its copy. Real client: pika
(tx.select / tx.commit)."""

import shutil
from pathlib import Path

import pika
import pytest

from test_amqp_pika import amqp
from test_durability import take_in_a_transaction

SRC, DST = "span-src", "span-dst"
PLACED = f"""
[[placement]]
queue = "{SRC}"
shard = 0

[[placement]]
queue = "{DST}"
shard = 1
"""
pytestmark = pytest.mark.ferry(shards=2, config=PLACED)

END = b"~TX-END~"


def _body(tag):
    return f"TX-{tag}-".encode() + b"." * 1500 + END


def _drain(broker, queue):
    conn = amqp(broker)
    ch = conn.channel()
    got = []
    while (m := ch.basic_get(queue, auto_ack=True))[0] is not None:
        got.append(m[2][:12])
    conn.close()
    return got


def _lose_commits(data_dir, shard):
    """Zeroes shard `shard`'s segment from the end of the transaction's last body there to
    the end of the file."""
    [segment] = [s for s in Path(data_dir, f"shard-{shard}").glob("*.seg") if END in s.read_bytes()]
    data = bytearray(segment.read_bytes())
    cut = data.rfind(END) + len(END)
    data[cut:] = bytes(len(data) - cut)
    segment.write_bytes(bytes(data))


def test_a_spanning_transaction_comes_back_whole_unless_no_shard_kept_its_commit(broker, broker_factory, tmp_path):
    # Move "before" out of SRC, publishing three messages to DST and one back to SRC.
    _, ch, method = take_in_a_transaction(broker, SRC, also=(DST,))
    for i in range(3):
        ch.basic_publish("", DST, _body(f"dst{i}"), pika.BasicProperties(delivery_mode=2))
    ch.basic_publish("", SRC, _body("src"), pika.BasicProperties(delivery_mode=2))
    ch.basic_ack(method.delivery_tag)
    ch.tx_commit()
    broker.kill()

    committed = ([b"TX-src-....."], [b"TX-dst0-....", b"TX-dst1-....", b"TX-dst2-...."])
    for lost_on, expected in [
        ((), committed),
        ((0,), committed),  # the other shard's log still holds the commit
        ((1,), committed),
        ((0, 1), ([b"before"], [])),  # no log holds it: neither share comes back
    ]:
        copy = tmp_path / f"copy-{'-'.join(map(str, lost_on)) or 'intact'}"
        shutil.copytree(broker.data_dir, copy)
        for shard in lost_on:
            _lose_commits(copy, shard)
        b2 = broker_factory(shards=2, config=PLACED, data_dir=copy, name=f"after-{copy.name}")
        got = (_drain(b2, SRC), _drain(b2, DST))
        b2.stop()
        assert got == expected, f"commits lost on shards {lost_on}: {got}"
        assert "queue quarantined" not in b2.log_path.read_text()
