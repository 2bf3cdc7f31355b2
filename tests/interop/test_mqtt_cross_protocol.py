"""One topic space for every protocol: MQTT publishes reach STOMP and AMQP 0-9-1 (pika)
subscribers and back, with the documented mapping (`/` ↔ `.`, `+` ↔ `*`, `#` ↔ `#`) and
properties (QoS ≥ 1 ↔ persistent, content type, correlation data ↔ correlation-id,
response topic ↔ reply-to, user properties ↔ headers)."""

import pika
import pytest

from conftest import BOTH_SHARDS, send_sync, subscribe_sync, uniq
from mqtt_util import V5, V311, Client, props
from paho.mqtt.packettypes import PacketTypes

pytestmark = BOTH_SHARDS


def amqp_channel(broker):
    params = pika.ConnectionParameters(host="127.0.0.1", port=broker.amqp_port,
                                       credentials=pika.PlainCredentials("guest", "guest"))
    conn = pika.BlockingConnection(params)
    return conn, conn.channel()


@pytest.mark.parametrize("proto", [V311, V5], ids=["v311", "v5"])
def test_mqtt_to_stomp(broker, stomp_client, proto):
    base = uniq("m2s").replace("-", "")
    s, listener = stomp_client()
    subscribe_sync(s, listener, f"/topic/{base}.*.temp")
    pub = Client(broker.mqtt_port, uniq("pub"), proto)
    user = props(PacketTypes.PUBLISH, ContentType="text/plain", UserProperty=[("site", "north")]) if proto == V5 else None
    pub.publish(f"{base}/kitchen/temp", b"21.5", qos=1, properties=user)
    (m,) = listener.wait_messages(1)
    assert m.body == "21.5"
    assert m.headers["destination"] == f"/topic/{base}.kitchen.temp"
    assert m.headers.get("persistent") == "true", "QoS 1 is persistent"
    if proto == V5:
        assert m.headers["content-type"] == "text/plain"
        assert m.headers["site"] == "north"
    pub.close()


@pytest.mark.parametrize("proto", [V311, V5], ids=["v311", "v5"])
def test_stomp_to_mqtt(broker, stomp_client, proto):
    base = uniq("s2m").replace("-", "")
    sub = Client(broker.mqtt_port, uniq("sub"), proto)
    sub.subscribe(f"{base}/#", 2)
    s, listener = stomp_client()
    send_sync(s, listener, f"/topic/{base}.a.b", "persistent", headers={"persistent": "true", "k": "v"})
    send_sync(s, listener, f"/topic/{base}.c", "transient")
    got = sub.wait_messages(2)
    assert [(m.topic, m.payload, m.qos) for m in got] == [
        (f"{base}/a/b", b"persistent", 1), (f"{base}/c", b"transient", 0)]
    if proto == V5:
        assert ("k", "v") in got[0].properties.UserProperty
    sub.close()


def test_mqtt_to_amqp_and_back(broker):
    base = uniq("m2a").replace("-", "")
    conn, ch = amqp_channel(broker)
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, "amq.topic", f"{base}.#")
    pub = Client(broker.mqtt_port, uniq("pub"), V5)
    req = props(PacketTypes.PUBLISH, ResponseTopic=f"{base}/replies", CorrelationData=b"c-1", ContentType="application/json")
    pub.subscribe(f"{base}/replies", 1)
    pub.publish(f"{base}/orders/new", b'{"id": 1}', qos=1, properties=req)
    method, properties, body = None, None, None
    for _ in range(50):
        method, properties, body = ch.basic_get(q, auto_ack=True)
        if method:
            break
        conn.sleep(0.05)
    assert method is not None, "AMQP consumer got the MQTT publish"
    assert method.routing_key == f"{base}.orders.new"
    assert body == b'{"id": 1}'
    assert properties.delivery_mode == 2
    assert properties.content_type == "application/json"
    assert properties.correlation_id == "c-1"
    assert properties.reply_to == f"{base}.replies"
    # The AMQP side answers on amq.topic with the reply-to key: the MQTT client gets it.
    ch.basic_publish("amq.topic", properties.reply_to, b"done",
                     pika.BasicProperties(correlation_id=properties.correlation_id, delivery_mode=2))
    (reply,) = pub.wait_messages(1)
    assert (reply.topic, reply.payload, reply.qos) == (f"{base}/replies", b"done", 1)
    assert reply.properties.CorrelationData == b"c-1"
    pub.close()
    conn.close()
