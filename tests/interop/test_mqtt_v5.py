"""MQTT 5.0 features with paho-mqtt 2.x: shared subscriptions, subscription identifiers,
subscription options (no-local, retain-as-published, retain handling), message expiry,
request/response, user properties, topic aliases both ways, the limits the CONNACK
announces, maximum packet size, and `$SYS/` topics hidden from leading wildcards."""

import struct
import time

import pytest

from conftest import uniq
from mqtt_util import V5, Client, Raw, mqtt_str, packet, props, publish_packet
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.subscribeoptions import SubscribeOptions


def test_connack_announces_limits(broker):
    c = Client(broker.mqtt_port, uniq("c"), V5)
    p = c.connack[2]
    assert p.ReceiveMaximum == 1024
    assert p.TopicAliasMaximum == 64
    assert p.MaximumPacketSize == 16 * 1024 * 1024
    assert p.SharedSubscriptionAvailable == 1 and p.SubscriptionIdentifierAvailable == 1
    assert p.WildcardSubscriptionAvailable == 1 and p.RetainAvailable == 1
    c.close()


def test_shared_subscription_spreads_messages(broker):
    topic = uniq("shared")
    members = [Client(broker.mqtt_port, uniq("m"), V5) for _ in range(2)]
    for m in members:
        assert m.subscribe(f"$share/workers/{topic}/#", 1) == [1]
    pub = Client(broker.mqtt_port, uniq("pub"), V5)
    for i in range(20):
        pub.publish(f"{topic}/job", f"{i}".encode())
    deadline = time.monotonic() + 5
    while sum(len(m.messages) for m in members) < 20 and time.monotonic() < deadline:
        time.sleep(0.05)
    got = sorted(int(msg.payload) for m in members for msg in m.messages)
    assert got == list(range(20)), "each message to exactly one member"
    assert all(m.messages for m in members), "both members get work"
    for c in members + [pub]:
        c.close()


def test_subscription_identifiers_and_user_properties(broker):
    topic = uniq("sid")
    sub = Client(broker.mqtt_port, uniq("s"), V5)
    sub.subscribe(f"{topic}/#", 1, properties=props(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=7))
    sub.subscribe(f"{topic}/+", 1, properties=props(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=9))
    pub = Client(broker.mqtt_port, uniq("p"), V5)
    user = props(PacketTypes.PUBLISH, UserProperty=[("k", "v"), ("k", "w")], ContentType="text/plain")
    pub.publish(f"{topic}/a", b"x", properties=user)
    (m,) = sub.wait_messages(1)
    assert sorted(m.properties.SubscriptionIdentifier) == [7, 9], "one copy carrying both ids"
    assert m.properties.UserProperty == [("k", "v"), ("k", "w")]
    assert m.properties.ContentType == "text/plain"
    assert not sub.quiet_for(0.3)
    sub.close()
    pub.close()


def test_no_local_and_retain_as_published(broker):
    topic = uniq("nl")
    c = Client(broker.mqtt_port, uniq("c"), V5)
    c.subscribe(f"{topic}/own", options=SubscribeOptions(qos=1, noLocal=True))
    c.subscribe(f"{topic}/rap", options=SubscribeOptions(qos=1, retainAsPublished=True))
    c.publish(f"{topic}/own", b"mine")
    other = Client(broker.mqtt_port, uniq("o"), V5)
    other.publish(f"{topic}/own", b"theirs")
    other.publish(f"{topic}/rap", b"kept", retain=True)
    got = c.wait_messages(2)
    assert [(m.payload, m.retain) for m in got] == [(b"theirs", False), (b"kept", True)]
    assert not c.quiet_for(0.3), "no-local: own publish not delivered"
    other.close()
    c.close()


def test_retain_handling_options(broker):
    topic = uniq("rh")
    pub = Client(broker.mqtt_port, uniq("p"), V5)
    pub.publish(topic, b"r", retain=True)
    c = Client(broker.mqtt_port, uniq("c"), V5)
    c.subscribe(topic, options=SubscribeOptions(qos=1, retainHandling=2))
    assert not c.quiet_for(0.3), "2: never send retained"
    c.subscribe(topic, options=SubscribeOptions(qos=1, retainHandling=1))
    assert not c.quiet_for(0.3), "1: only for a new subscription"
    c.unsubscribe(topic)
    c.subscribe(topic, options=SubscribeOptions(qos=1, retainHandling=1))
    assert c.wait_messages(1)[0].payload == b"r"
    c.subscribe(topic, options=SubscribeOptions(qos=1, retainHandling=0))
    assert c.wait_messages(2)[1].retain, "0: sent at every subscribe"
    c.close()
    pub.close()


def test_message_expiry(broker):
    cid, topic = uniq("exp"), uniq("exp")
    session = props(PacketTypes.CONNECT, SessionExpiryInterval=60)
    c = Client(broker.mqtt_port, cid, V5, clean=False, connect_props=session)
    c.subscribe(topic, 1)
    c.close()
    pub = Client(broker.mqtt_port, uniq("p"), V5)
    pub.publish(topic, b"short", properties=props(PacketTypes.PUBLISH, MessageExpiryInterval=1))
    pub.publish(topic, b"long", properties=props(PacketTypes.PUBLISH, MessageExpiryInterval=100))
    time.sleep(1.5)
    back = Client(broker.mqtt_port, cid, V5, clean=False, connect_props=session)
    (m,) = back.wait_messages(1)
    assert m.payload == b"long"
    assert 1 <= m.properties.MessageExpiryInterval <= 99, "the remaining lifetime is sent"
    assert not back.quiet_for(0.3)
    back.close()
    pub.close()


def test_request_response(broker):
    base = uniq("rr")
    server = Client(broker.mqtt_port, uniq("srv"), V5)
    server.subscribe(f"{base}/requests", 1)
    client = Client(broker.mqtt_port, uniq("cli"), V5)
    client.subscribe(f"{base}/replies/me", 1)
    # Binary correlation data (a UUID's bytes, say) must come back exactly, not as UTF-8 text.
    correlation = b"req-42\x00\xff\xfe"
    req = props(PacketTypes.PUBLISH, ResponseTopic=f"{base}/replies/me", CorrelationData=correlation)
    client.publish(f"{base}/requests", b"ping", properties=req)
    (r,) = server.wait_messages(1)
    assert r.properties.ResponseTopic == f"{base}/replies/me"
    assert r.properties.CorrelationData == correlation
    server.publish(r.properties.ResponseTopic, b"pong",
                   properties=props(PacketTypes.PUBLISH, CorrelationData=r.properties.CorrelationData))
    (reply,) = client.wait_messages(1)
    assert (reply.payload, reply.properties.CorrelationData) == (b"pong", correlation)
    server.close()
    client.close()


def test_topic_aliases_both_ways(broker):
    topic = uniq("alias") + "/a/rather/long/topic/name"
    sub = Client(broker.mqtt_port, uniq("s"), V5, connect_props=props(PacketTypes.CONNECT, TopicAliasMaximum=5))
    sub.subscribe(topic, 1)
    pub = Client(broker.mqtt_port, uniq("p"), V5)
    pub.publish(topic, b"1", properties=props(PacketTypes.PUBLISH, TopicAlias=3))
    pub.publish("", b"2", properties=props(PacketTypes.PUBLISH, TopicAlias=3))
    got = sub.wait_messages(2)
    # The broker resolved the publisher's alias, then set its own towards the subscriber:
    # the topic once with alias 1, then only the alias (paho leaves resolving it to the app).
    assert [(m.topic, m.payload, m.properties.TopicAlias) for m in got] == [(topic, b"1", 1), ("", b"2", 1)]
    sub.close()
    pub.close()


def test_client_maximum_packet_size_is_respected(broker):
    topic = uniq("mps")
    small = Client(broker.mqtt_port, uniq("s"), V5, connect_props=props(PacketTypes.CONNECT, MaximumPacketSize=200))
    small.subscribe(topic, 1)
    pub = Client(broker.mqtt_port, uniq("p"), V5)
    pub.publish(topic, b"x" * 1000)
    pub.publish(topic, b"fits")
    (m,) = small.wait_messages(1)
    assert m.payload == b"fits", "a message over the client's maximum is not sent"
    small.close()
    pub.close()


def test_sys_topics_are_not_matched_by_leading_wildcards(broker):
    everything = Client(broker.mqtt_port, uniq("all"), V5)
    everything.subscribe("#", 0)
    sys = Client(broker.mqtt_port, uniq("sys"), V5)
    sys.subscribe("$SYS/#", 0)
    got = sys.wait_messages(1, timeout=12)
    assert got[0].topic.startswith("$SYS/broker/")
    assert not [m for m in everything.messages if m.topic.startswith("$")]
    everything.close()
    sys.close()


@pytest.mark.ferry(shards=2)
def test_sys_broker_totals_count_clients_on_every_shard(broker):
    """Mosquitto's $SYS/broker/clients/connected and /total sum every shard's clients (each
    client id has one registry shard): with 2 shards some of these clients live on each."""
    clients = [Client(broker.mqtt_port, uniq(f"c{i}"), V5) for i in range(6)]
    kept = Client(broker.mqtt_port, uniq("kept"), V5, clean=False,
                  connect_props=props(PacketTypes.CONNECT, SessionExpiryInterval=300))
    kept.close()   # a kept session counts in total, not in connected
    sys = Client(broker.mqtt_port, uniq("sys"), V5)
    sys.subscribe("$SYS/broker/clients/+", 0)
    # Figures are published every 10 s; each shard's may be one period old at the authority.
    want = {"$SYS/broker/clients/connected": b"7", "$SYS/broker/clients/total": b"8"}
    sys.wait(lambda: {m.topic: m.payload for m in sys.messages}.items() >= want.items(), 35,
             f"$SYS totals {want}")
    for c in clients + [sys]:
        c.close()


def test_session_expiry(broker):
    cid, topic = uniq("sx"), uniq("sx")
    short = props(PacketTypes.CONNECT, SessionExpiryInterval=2)
    c = Client(broker.mqtt_port, cid, V5, clean=False, connect_props=short)
    c.subscribe(topic, 1)
    c.close()
    again = Client(broker.mqtt_port, cid, V5, clean=False, connect_props=short)
    assert again.connack[0] is True, "within its expiry the session is present"
    again.close()
    time.sleep(2.6)
    late = Client(broker.mqtt_port, cid, V5, clean=False, connect_props=short)
    assert late.connack[0] is False, "after its expiry the session is gone"
    pub = Client(broker.mqtt_port, uniq("p"), V5)
    pub.publish(topic, b"x")
    assert not late.quiet_for(0.3)
    late.close()
    pub.close()
    # Expiry 0 (the 5.0 default): the session ends with the connection.
    c = Client(broker.mqtt_port, cid, V5, clean=False)
    c.subscribe(topic, 1)
    c.close()
    assert Client(broker.mqtt_port, cid, V5, clean=False).connack[0] is False


def test_retained_messages_expire(broker):
    base = uniq("rexp")
    pub = Client(broker.mqtt_port, uniq("p"), V5)
    pub.publish(f"{base}/short", b"s", retain=True, properties=props(PacketTypes.PUBLISH, MessageExpiryInterval=1))
    pub.publish(f"{base}/long", b"l", retain=True, properties=props(PacketTypes.PUBLISH, MessageExpiryInterval=100))
    time.sleep(1.5)
    c = Client(broker.mqtt_port, uniq("c"), V5)
    c.subscribe(f"{base}/#", 1)
    (m,) = c.wait_messages(1)
    assert (m.payload, m.retain) == (b"l", True)
    assert 1 <= m.properties.MessageExpiryInterval <= 99
    assert not c.quiet_for(0.3), "the expired retained message is gone"
    c.close()
    pub.close()


def test_server_keep_alive(broker_factory):
    broker = broker_factory(config="[limits]\nkeep_alive_s_max = 5\n")
    c = Client(broker.mqtt_port, uniq("ka"), V5, keepalive=60)
    assert c.connack[2].ServerKeepAlive == 5
    c.close()


def test_reason_codes_on_acknowledgements(broker):
    raw = Raw(broker.mqtt_port)
    raw.connect(level=5)
    # PUBACK 0x10: no subscriber matched.
    raw.send(publish_packet(uniq("nobody"), qos=1, packet_id=3, level=5))
    assert raw.read_packet() == (4, 0, b"\x00\x03\x10")
    # SUBACK: granted QoS per filter, 0x8F for an invalid filter.
    body = struct.pack("!H", 4) + b"\x00" + mqtt_str("ok/+") + b"\x02" + mqtt_str("bad/#/x") + b"\x01"
    raw.send(packet(0x82, body))
    assert raw.read_packet() == (9, 0, b"\x00\x04\x00\x02\x8f")
    # UNSUBACK: 0x00 for a subscription that existed, 0x11 for one that did not.
    body = struct.pack("!H", 5) + b"\x00" + mqtt_str("ok/+") + mqtt_str("never")
    raw.send(packet(0xA2, body))
    assert raw.read_packet() == (11, 0, b"\x00\x05\x00\x00\x11")
    raw.close()


def test_mqtt_3_1_and_3_1_1_suback_failure(broker):
    raw = Raw(broker.mqtt_port)
    # MQTT 3.1: protocol name MQIsdp, level 3.
    body = mqtt_str("MQIsdp") + bytes([3, 0xC2]) + struct.pack("!H", 30) + mqtt_str("old") + mqtt_str("guest") + mqtt_str("guest")
    raw.send(packet(0x10, body))
    assert raw.read_packet() == (2, 0, b"\x00\x00")
    raw.send(packet(0x82, struct.pack("!H", 1) + mqtt_str("a/#/b") + b"\x01"))
    assert raw.read_packet() == (9, 0, b"\x00\x01\x80"), "3.x failure return code"
    raw.close()


def test_topic_limits(broker_factory):
    broker = broker_factory(config="[limits]\ntopic_level_count_max = 3\ntopic_bytes_max = 32\nsubscription_count_max = 2\n")
    raw = Raw(broker.mqtt_port)
    raw.connect(level=5)
    raw.send(packet(0x82, struct.pack("!H", 1) + b"\x00" + mqtt_str("a/b/c/d") + b"\x01"
                    + mqtt_str("x" * 40) + b"\x01" + mqtt_str("a") + b"\x01" + mqtt_str("b") + b"\x01"
                    + mqtt_str("c") + b"\x01"))
    assert raw.read_packet() == (9, 0, b"\x00\x01\x00\x8f\x8f\x01\x01\x97"), "levels, length, then quota"
    raw.send(publish_packet("a/b/c/d", level=5))
    kind, _, body = raw.read_packet()
    assert (kind, body[:1]) == (14, b"\x90"), "a topic over the level limit is refused"
    assert raw.closed_within(2)


def test_a_publisher_cannot_forge_the_brokers_own_headers(broker):
    """A user property under the broker's `x-ferry-` namespace (here: the QoS 2 release-marker
    header) is dropped on the way in: the message reaches the subscriber, without it."""
    topic = uniq("forged")
    sub = Client(broker.mqtt_port, uniq("s"), V5)
    sub.subscribe(topic, 1)
    pub = Client(broker.mqtt_port, uniq("p"), V5)
    forged = props(PacketTypes.PUBLISH, UserProperty=[("x-ferry-mqtt-pubrel", "1"), ("k", "v")])
    pub.publish(topic, b"x", properties=forged)
    (m,) = sub.wait_messages(1)
    assert m.properties.UserProperty == [("k", "v")]
    sub.close()
    pub.close()
