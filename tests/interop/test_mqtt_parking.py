"""Idle MQTT connections park: after a second with nothing in progress a connection gives up
its task and waits in the shard's epoll set (engine/src/runtime/park.rs), which is what keeps
an idle connection under Mosquitto's memory. Parking must not show: a parked connection
resumes on input, on mail (a delivery, a takeover), on its keep-alive deadline and on a close,
with paho-mqtt clients of both versions. `ferry_connections_parked` on the admin endpoint says
how many are parked."""

import time

from conftest import BOTH_SHARDS, uniq, wait_for
from mqtt_util import V5, V311, Client, Raw

PARKED = "ferry_connections_parked"


def wait_parked(broker, n, timeout=6.0):
    wait_for(lambda: broker.metric(PARKED) >= n, timeout=timeout, interval=0.1,
             what=f"{n} parked connections (have {broker.metric(PARKED)})")


@BOTH_SHARDS
def test_parked_clients_resume_on_mail_and_on_input(broker):
    topic = uniq("park")
    subs = [Client(broker.mqtt_port, uniq("s"), V5 if i % 2 else V311) for i in range(6)]
    for s in subs:
        assert s.subscribe(f"{topic}/#", 1) == [1]
    wait_parked(broker, 6)
    # Mail: a delivery to each parked subscriber.
    pub = Client(broker.mqtt_port, uniq("p"), V5)
    pub.publish(f"{topic}/a", b"one")
    for s in subs:
        assert [m.payload for m in s.wait_messages(1)] == [b"one"]
    pub.close()
    # Acked, idle again: they park again (the publisher is gone).
    wait_parked(broker, 6)
    assert broker.metric(PARKED) == 6
    # Input: a parked subscriber publishes (QoS 1: its PUBACK comes back) and everyone gets it.
    subs[0].publish(f"{topic}/b", b"two")
    for s in subs:
        assert [m.payload for m in s.wait_messages(2)] == [b"one", b"two"]
    for s in subs:
        s.close()
    wait_for(lambda: broker.metric(PARKED) == 0, timeout=5, interval=0.1, what="no parked connection left")


def test_a_parked_connection_still_times_out_on_keep_alive(broker):
    raw = Raw(broker.mqtt_port, timeout=15)
    raw.connect(level=4, client_id=uniq("ka"), keepalive=4)
    t0 = time.monotonic()
    wait_parked(broker, 1, timeout=3)
    # 1.5 × 4 s after the CONNECT, never pinged: closed, parked or not.
    assert raw.closed_within(10), "keep-alive not enforced on a parked connection"
    elapsed = time.monotonic() - t0
    assert 5.5 <= elapsed <= 8.0, f"closed after {elapsed:.2f}s, expected about 6 s"
    raw.close()


def test_a_pinging_client_stays_connected_across_parks(broker):
    c = Client(broker.mqtt_port, uniq("ping"), V311, keepalive=5)
    wait_parked(broker, 1, timeout=3)
    # paho pings every 5 s; 12 s covers two pings and resumes from the parked state.
    time.sleep(12)
    assert c.disconnects == [], f"disconnected: {c.disconnects}"
    topic = uniq("alive")
    assert c.subscribe(topic, 1) == [1]
    c.close()


def test_a_parked_client_that_drops_gets_its_will_published_at_once(broker):
    topic = uniq("will")
    watcher = Client(broker.mqtt_port, uniq("w"), V5)
    assert watcher.subscribe(topic, 1) == [1]
    dying = Client(broker.mqtt_port, uniq("d"), V311, will=dict(topic=topic, payload=b"gone", qos=1))
    wait_parked(broker, 2)
    t0 = time.monotonic()
    dying.drop()
    (m,) = watcher.wait_messages(1, timeout=3)
    assert m.payload == b"gone"
    assert time.monotonic() - t0 < 2, "the close of a parked socket is seen at once"
    watcher.close()


def test_a_parked_session_is_taken_over(broker):
    cid = uniq("take")
    first = Raw(broker.mqtt_port)
    first.connect(level=5, client_id=cid)
    wait_parked(broker, 1)
    second = Raw(broker.mqtt_port)
    second.connect(level=5, client_id=cid)
    assert first.read_packet(timeout=3) == (14, 0, b"\x8e"), "DISCONNECT: session taken over"
    assert first.closed_within(2)
    second.close()
