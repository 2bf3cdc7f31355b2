"""Bad MQTT input on raw sockets: each gets the protocol's own answer (5.0 DISCONNECT reason
code, 3.1.1 a plain close) within a bounded time, and other clients are unaffected."""

import struct

import pytest

from conftest import uniq
from mqtt_util import V5, Client, Raw, connect_packet, mqtt_str, packet, publish_packet


def disconnect_reason(raw):
    got = raw.read_packet(timeout=3)
    assert got is not None and got[0] == 14, f"expected DISCONNECT, got {got!r}"
    return got[2][0]


@pytest.mark.parametrize("level", [4, 5])
def test_oversize_packet_is_refused_from_its_header(broker_factory, level):
    broker = broker_factory(config="[limits]\nframe_size_bytes_max = 1024\nconnection_input_bytes_max = 70000\n")
    raw = Raw(broker.mqtt_port)
    raw.connect(level=level)
    # Announces 100 MB; only the header is sent.
    raw.send(bytes([0x30]) + bytes([0x80, 0x80, 0x80, 0x30]))
    if level == 5:
        assert disconnect_reason(raw) == 0x95
    assert raw.closed_within(2)


@pytest.mark.parametrize("level", [4, 5])
def test_malformed_remaining_length(broker, level):
    raw = Raw(broker.mqtt_port)
    raw.connect(level=level)
    raw.send(bytes([0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]))
    if level == 5:
        assert disconnect_reason(raw) == 0x81
    assert raw.closed_within(2)


@pytest.mark.parametrize("level", [4, 5])
def test_invalid_utf8_topic(broker, level):
    raw = Raw(broker.mqtt_port)
    raw.connect(level=level)
    raw.send(publish_packet(b"\xc3\x28/bad", level=level))
    if level == 5:
        assert disconnect_reason(raw) == 0x81
    assert raw.closed_within(2)


@pytest.mark.parametrize("level", [4, 5])
def test_wildcard_in_publish_topic(broker, level):
    raw = Raw(broker.mqtt_port)
    raw.connect(level=level)
    raw.send(publish_packet("a/+/c", level=level))
    if level == 5:
        assert disconnect_reason(raw) == 0x90
    assert raw.closed_within(2)


def test_packet_before_connect_closes(broker):
    raw = Raw(broker.mqtt_port)
    raw.send(publish_packet("a/b"))
    assert raw.closed_within(2)


@pytest.mark.parametrize("level", [4, 5])
def test_second_connect(broker, level):
    raw = Raw(broker.mqtt_port)
    raw.connect(level=level)
    raw.send(connect_packet(level=level))
    if level == 5:
        assert disconnect_reason(raw) == 0x82
    assert raw.closed_within(2)


def test_reserved_flags_and_unknown_packet_type(broker):
    raw = Raw(broker.mqtt_port)
    raw.connect(level=5)
    raw.send(packet(0x80, struct.pack("!H", 1) + b"\x00" + mqtt_str("a") + b"\x01"))  # SUBSCRIBE flags 0
    assert disconnect_reason(raw) == 0x81
    raw = Raw(broker.mqtt_port)
    raw.connect(level=4)
    raw.send(bytes([0x00, 0x00]))
    assert raw.closed_within(2)


def test_receive_maximum_exceeded(broker_factory):
    broker = broker_factory(config="[limits]\ninflight_count_max = 2\n")
    raw = Raw(broker.mqtt_port)
    raw.connect(level=5)
    # No subscriber: the broker answers at once, so keep three unanswered by never reading
    # — the broker still answers, but QoS 2 ids stay held until PUBREL.
    for pid in (1, 2, 3):
        raw.send(publish_packet("rm/x", qos=2, packet_id=pid, level=5))
    kinds = []
    while True:
        got = raw.read_packet(timeout=3)
        if got is None:
            break
        kinds.append((got[0], got[2][:1] if got[0] == 14 else None))
        if got[0] == 14:
            break
    assert (14, b"\x93") in kinds, kinds


def test_bad_input_leaves_other_clients_alone(broker):
    good = Client(broker.mqtt_port, uniq("good"), V5)
    topic = uniq("ok")
    good.subscribe(topic, 1)
    for junk in [b"\xff" * 64, bytes([0x10, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]), b"GET / HTTP/1.1\r\n\r\n"]:
        raw = Raw(broker.mqtt_port)
        raw.send(junk)
        assert raw.closed_within(3)
    good.publish(topic, b"still here")
    assert good.wait_messages(1)[0].payload == b"still here"
    good.close()
