"""MQTT 3.1.1 and 5.0 with paho-mqtt 2.x against the real broker: QoS 0/1/2 both ways,
wildcards, retained messages, wills, clean session, takeover, assigned ids, keep-alive and
the CONNACK refusals."""

import time

import pytest

from conftest import uniq
from mqtt_util import V5, V311, Client, Raw, connect_packet, props
from paho.mqtt.packettypes import PacketTypes

BOTH = pytest.mark.parametrize("proto", [V311, V5], ids=["v311", "v5"])


@BOTH
@pytest.mark.parametrize("broker", [1, 2], indirect=True, ids=["shards1", "shards2"])
def test_qos_0_1_2_publish_and_delivery(broker, proto):
    topic = uniq("q")
    sub = Client(broker.mqtt_port, uniq("sub"), proto)
    for qos in (0, 1, 2):
        assert sub.subscribe(f"{topic}/{qos}/#", qos=qos) == [qos]
    pub = Client(broker.mqtt_port, uniq("pub"), proto)
    for sub_qos in (0, 1, 2):
        for pub_qos in (0, 1, 2):
            pub.publish(f"{topic}/{sub_qos}/x", f"{sub_qos}-{pub_qos}".encode(), qos=pub_qos)
    got = sub.wait_messages(9)
    seen = {(m.payload.decode(), m.qos) for m in got}
    # Delivered at the lower of the publish QoS and the subscription's granted QoS.
    assert seen == {(f"{s}-{p}", min(s, p)) for s in range(3) for p in range(3)}
    assert not sub.quiet_for(0.3), "each message exactly once"
    sub.close()
    pub.close()


@BOTH
def test_wildcards_and_levels(broker, proto):
    base = uniq("w")
    sub = Client(broker.mqtt_port, uniq("sub"), proto)
    sub.subscribe(f"{base}/+/temp", 1)
    sub.subscribe(f"{base}/house/#", 1)
    pub = Client(broker.mqtt_port, uniq("pub"), proto)
    for t in ["kitchen/temp", "house", "house/a/b", "kitchen/temp/x", "v1.0/temp"]:
        pub.publish(f"{base}/{t}", t.encode())
    got = sub.wait_messages(4)
    assert sorted(m.topic for m in got) == sorted(
        f"{base}/{t}" for t in ["kitchen/temp", "house", "house/a/b", "v1.0/temp"])
    assert not sub.quiet_for(0.3)
    sub.close()
    pub.close()


@BOTH
def test_retained_messages_set_replace_and_clear(broker, proto):
    topic = uniq("r") + "/state"
    pub = Client(broker.mqtt_port, uniq("pub"), proto)
    pub.publish(topic, b"v1", qos=1, retain=True)
    pub.publish(topic, b"v2", qos=0, retain=True)
    time.sleep(0.2)
    s1 = Client(broker.mqtt_port, uniq("s"), proto)
    s1.subscribe(topic.split("/")[0] + "/#", 1)
    (m,) = s1.wait_messages(1)
    assert (m.payload, m.retain) == (b"v2", True)
    assert not s1.quiet_for(0.3), "one retained message per topic"
    pub.publish(topic, b"", qos=1, retain=True)
    s1.wait_messages(2)  # the empty publish itself reaches current subscribers
    s2 = Client(broker.mqtt_port, uniq("s"), proto)
    s2.subscribe(topic, 1)
    assert not s2.quiet_for(0.5), "an empty retained publish clears the topic"
    for c in (pub, s1, s2):
        c.close()


@BOTH
def test_will_on_abnormal_close_not_on_disconnect(broker, proto):
    topic = uniq("will")
    watcher = Client(broker.mqtt_port, uniq("watch"), proto)
    watcher.subscribe(f"{topic}/#", 1)
    gone = Client(broker.mqtt_port, uniq("gone"), proto, will=dict(topic=f"{topic}/a", payload=b"lost", qos=1))
    gone.drop()
    (m,) = watcher.wait_messages(1)
    assert (m.topic, m.payload) == (f"{topic}/a", b"lost")
    polite = Client(broker.mqtt_port, uniq("polite"), proto, will=dict(topic=f"{topic}/b", payload=b"no", qos=1))
    polite.close()
    assert not watcher.quiet_for(0.5), "a DISCONNECT discards the will"
    watcher.close()


def test_will_delay_is_cancelled_by_reconnect(broker):
    topic = uniq("wd")
    watcher = Client(broker.mqtt_port, uniq("watch"), V5)
    watcher.subscribe(topic, 1)
    cid = uniq("delayed")
    will_props = props(PacketTypes.WILLMESSAGE, WillDelayInterval=2)
    session = props(PacketTypes.CONNECT, SessionExpiryInterval=60)
    will = dict(topic=topic, payload=b"late", qos=1, properties=will_props)
    c = Client(broker.mqtt_port, cid, V5, will=will, connect_props=session)
    c.drop()
    assert not watcher.quiet_for(1.0), "the will waits for its delay"
    (m,) = watcher.wait_messages(1, timeout=5)
    assert m.payload == b"late"
    c2 = Client(broker.mqtt_port, cid, V5, will=will, connect_props=session, clean=False)
    c2.drop()
    c3 = Client(broker.mqtt_port, cid, V5, connect_props=session, clean=False)
    assert not watcher.quiet_for(3.0), "reconnecting within the delay cancels the will"
    c3.close()
    watcher.close()


@BOTH
def test_client_id_takeover_closes_the_older_connection(broker, proto):
    cid = uniq("dup")
    first = Client(broker.mqtt_port, cid, proto)
    second = Client(broker.mqtt_port, cid, proto)
    first.wait(lambda: first.disconnects, 5, "the first connection to be closed")
    first.c.loop_stop()  # paho would reconnect and take the id back
    second.subscribe("takeover/x", 1)
    second.close()
    # The older connection is told why (5.0: DISCONNECT 0x8E session taken over).
    level = 5 if proto == V5 else 4
    a = Raw(broker.mqtt_port)
    a.connect(level=level, client_id=cid)
    b = Raw(broker.mqtt_port)
    b.connect(level=level, client_id=cid)
    if proto == V5:
        assert a.read_packet() == (14, 0, b"\x8e")
    assert a.closed_within(2)
    b.close()


def test_assigned_client_id_on_v5(broker):
    c = Client(broker.mqtt_port, "", V5)
    assigned = c.connack[2].AssignedClientIdentifier
    assert assigned.startswith("ferry-")
    c.close()
    raw = Raw(broker.mqtt_port)
    raw.send(connect_packet(client_id="", level=4, clean=True))
    kind, _, body = raw.read_packet()
    assert (kind, body) == (2, b"\x00\x00"), "3.1.1 accepts an empty id with clean session"
    raw.close()


def test_connack_refusals(broker):
    # Bad credentials: 5.0 reason 0x86 (paho reports 3.1.1's return code 4 as 0x86 too).
    for proto in (V311, V5):
        c = Client(broker.mqtt_port, uniq("bad"), proto, password="wrong", connect=False)
        assert c.connect(expect_ok=False)[1] == 0x86
        c.close(disconnect=False)
    raw = Raw(broker.mqtt_port)
    raw.send(connect_packet(password="wrong"))
    assert raw.read_packet() == (2, 0, b"\x00\x04"), "3.1.1 return code 4"
    assert raw.closed_within(2)
    # Unsupported protocol level: CONNACK 0x01, then close.
    raw = Raw(broker.mqtt_port)
    raw.send(connect_packet(level=6))
    assert raw.read_packet() == (2, 0, b"\x00\x01")
    assert raw.closed_within(2)
    # 3.1.1: an empty client id without clean session is refused with return code 2.
    raw = Raw(broker.mqtt_port)
    raw.send(connect_packet(client_id="", clean=False))
    assert raw.read_packet() == (2, 0, b"\x00\x02")
    assert raw.closed_within(2)
    # 5.0 AUTH is refused cleanly: an authentication method gets 0x8C.
    auth = props(PacketTypes.CONNECT, AuthenticationMethod="SCRAM-SHA-1")
    c = Client(broker.mqtt_port, uniq("auth"), V5, connect_props=auth, connect=False)
    assert c.connect(expect_ok=False)[1] == 0x8C
    c.close(disconnect=False)


def test_keep_alive_closes_after_one_and_a_half_periods(broker):
    raw = Raw(broker.mqtt_port)
    raw.connect(keepalive=1)
    started = time.monotonic()
    assert raw.closed_within(3), "silent client closed"
    assert 1.4 <= time.monotonic() - started <= 3.0
    raw5 = Raw(broker.mqtt_port)
    raw5.connect(level=5, keepalive=1)
    kind, _, body = raw5.read_packet(timeout=3)
    assert (kind, body[:1]) == (14, b"\x8d"), "5.0: DISCONNECT keep alive timeout"


@BOTH
def test_clean_session_discards_subscriptions(broker, proto):
    cid, topic = uniq("cs"), uniq("cs")
    persistent_props = props(PacketTypes.CONNECT, SessionExpiryInterval=300) if proto == V5 else None
    c = Client(broker.mqtt_port, cid, proto, clean=False, connect_props=persistent_props)
    c.subscribe(topic, 1)
    c.close()
    pub = Client(broker.mqtt_port, uniq("p"), proto)
    pub.publish(topic, b"while-away", qos=1)
    back = Client(broker.mqtt_port, cid, proto, clean=False, connect_props=persistent_props)
    assert back.connack[0] is True, "session present"
    assert back.wait_messages(1)[0].payload == b"while-away"
    back.close()
    fresh = Client(broker.mqtt_port, cid, proto, clean=True)
    assert fresh.connack[0] is False
    pub.publish(topic, b"after-clean", qos=1)
    assert not fresh.quiet_for(0.4), "clean start dropped the subscription"
    fresh.close()
    pub.close()
