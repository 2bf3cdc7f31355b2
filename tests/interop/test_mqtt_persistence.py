"""What MQTT keeps: persistent sessions (subscriptions and queued QoS 1/2 messages, the
latest Session Expiry Interval, wills waiting for their delay, and the outbound QoS 2 state:
packet ids of unacknowledged PUBLISHes, PUBRELs awaiting PUBCOMP) and retained messages
survive a broker restart on the same data directory, and the QoS 2 exactly-once handshake
survives a reconnect (a re-sent PUBLISH is not delivered twice)."""

import socket
import struct
import time

import pytest

from conftest import uniq
from mqtt_util import V5, V311, Client, Raw, mqtt_str, packet, props, publish_packet
from paho.mqtt.packettypes import PacketTypes


@pytest.mark.parametrize("proto", [V311, V5], ids=["v311", "v5"])
@pytest.mark.parametrize("shards", [1, 2])
def test_session_and_retained_survive_restart(broker_factory, tmp_path, proto, shards):
    data = tmp_path / "data"
    broker = broker_factory(shards=shards, data_dir=data, name="first")
    cid, topic = uniq("durable"), uniq("dur")
    session = props(PacketTypes.CONNECT, SessionExpiryInterval=3600) if proto == V5 else None
    c = Client(broker.mqtt_port, cid, proto, clean=False, connect_props=session)
    c.subscribe(f"{topic}/+", 2)
    c.close()
    pub = Client(broker.mqtt_port, uniq("pub"), proto)
    for i in range(5):
        pub.publish(f"{topic}/q", f"m{i}".encode(), qos=1 + i % 2)
    pub.publish(f"{topic}/state", b"retained-v1", qos=1, retain=True)
    pub.close()
    broker.kill()  # acknowledged means durable: no clean shutdown needed

    broker = broker_factory(shards=shards, data_dir=data, name="second")
    back = Client(broker.mqtt_port, cid, proto, clean=False, connect_props=session)
    assert back.connack[0] is True, "session present after restart"
    got = back.wait_messages(6)
    assert sorted(m.payload for m in got) == sorted([f"m{i}".encode() for i in range(5)] + [b"retained-v1"])
    back.close()
    late = Client(broker.mqtt_port, uniq("late"), proto)
    late.subscribe(f"{topic}/state", 1)
    (m,) = late.wait_messages(1)
    assert (m.payload, m.retain) == (b"retained-v1", True), "retained message survived"
    late.close()


@pytest.mark.parametrize("shards", [1, 2])
def test_a_session_still_expires_after_a_restart(broker_factory, tmp_path, shards):
    """A 5.0 session with a Session Expiry Interval ends that long after the restart even if
    its client never comes back (before, the restarted broker kept it, and everything its
    subscriptions matched, for ever)."""
    data = tmp_path / "data"
    broker = broker_factory(shards=shards, data_dir=data, name="first")
    short, kept = uniq("short"), uniq("kept")
    topic = uniq("sx")
    for cid, seconds in ((short, 2), (kept, 600)):
        c = Client(broker.mqtt_port, cid, V5, clean=False,
                   connect_props=props(PacketTypes.CONNECT, SessionExpiryInterval=seconds))
        c.subscribe(topic, 1)
        c.close()
    broker.kill()
    broker = broker_factory(shards=shards, data_dir=data, name="second")
    time.sleep(3)
    pub = Client(broker.mqtt_port, uniq("pub"), V5)
    pub.publish(topic, b"after", qos=1)
    pub.close()
    gone = Client(broker.mqtt_port, short, V5, clean=False,
                  connect_props=props(PacketTypes.CONNECT, SessionExpiryInterval=2))
    assert gone.connack[0] is False, "the 2 s session outlived its expiry across the restart"
    assert gone.quiet_for(0.5) == [], "an expired session's subscription still delivered"
    gone.close()
    back = Client(broker.mqtt_port, kept, V5, clean=False,
                  connect_props=props(PacketTypes.CONNECT, SessionExpiryInterval=600))
    assert back.connack[0] is True, "a session within its expiry is present after the restart"
    assert [m.payload for m in back.wait_messages(1)] == [b"after"]
    back.close()


@pytest.mark.parametrize("level", [4, 5])
def test_qos2_resend_after_reconnect_is_delivered_once(broker, level):
    topic = uniq("eo")
    sub = Client(broker.mqtt_port, uniq("sub"), V5)
    sub.subscribe(topic, 2)
    cid = uniq("eo-pub")
    raw = Raw(broker.mqtt_port)
    raw.connect(level=level, client_id=cid, clean=False, session_expiry=60)
    raw.send(publish_packet(topic, b"once", qos=2, packet_id=7, level=level))
    kind, _, body = raw.read_packet()
    assert (kind, body[:2]) == (5, b"\x00\x07"), "PUBREC"
    raw.close()  # PUBREL never sent: the client will re-send the PUBLISH
    raw = Raw(broker.mqtt_port)
    raw.connect(level=level, client_id=cid, clean=False, session_expiry=60)
    raw.send(publish_packet(topic, b"once", qos=2, packet_id=7, level=level, dup=True))
    kind, _, body = raw.read_packet()
    assert (kind, body[:2]) == (5, b"\x00\x07"), "PUBREC again"
    raw.send(packet(0x62, b"\x00\x07"))  # PUBREL
    kind, _, body = raw.read_packet()
    assert (kind, body[:2]) == (7, b"\x00\x07"), "PUBCOMP"
    (m,) = sub.wait_messages(1)
    assert m.payload == b"once"
    assert not sub.quiet_for(0.5), "delivered exactly once"
    raw.close()
    sub.close()


def _v5_session(port, cid, seconds, clean=False):
    return Client(port, cid, V5, clean=clean, connect_props=props(PacketTypes.CONNECT, SessionExpiryInterval=seconds))


@pytest.mark.parametrize("before,after,kept", [(300, 2, False), (300, 0, False), (2, 600, True)],
                         ids=["shortened", "ended", "lengthened"])
def test_an_expiry_changed_by_disconnect_holds_after_a_restart(broker_factory, tmp_path, before, after, kept):
    """A 5.0 DISCONNECT may change the Session Expiry Interval (§3.14.2.2.2); the restarted
    broker ends the session after the new interval, not the CONNECT's (before, the new one
    lived only in memory: a shortened session was kept, a lengthened one ended early)."""
    data = tmp_path / "data"
    broker = broker_factory(data_dir=data, name="first")
    cid, topic = uniq("dx"), uniq("dx")
    c = _v5_session(broker.mqtt_port, cid, before)
    c.subscribe(topic, 1)
    c.c.disconnect(properties=props(PacketTypes.DISCONNECT, SessionExpiryInterval=after))
    c.close(disconnect=False)
    time.sleep(0.3)
    broker.stop()
    broker = broker_factory(data_dir=data, name="second")
    time.sleep(3)
    back = _v5_session(broker.mqtt_port, cid, 600)
    assert back.connack[0] is kept, f"expiry {before} -> {after}: session present {back.connack[0]}"
    back.close()


def test_an_expiry_changed_by_a_resuming_connect_holds_after_a_restart(broker_factory, tmp_path):
    """The interval of the latest CONNECT that resumed the session is the one a restart keeps."""
    data = tmp_path / "data"
    broker = broker_factory(data_dir=data, name="first")
    cid, topic = uniq("rx"), uniq("rx")
    c = _v5_session(broker.mqtt_port, cid, 300)
    c.subscribe(topic, 1)
    c.close()
    c = _v5_session(broker.mqtt_port, cid, 2)
    assert c.connack[0] is True
    c.close()
    time.sleep(0.3)
    broker.stop()
    broker = broker_factory(data_dir=data, name="second")
    time.sleep(3)
    back = _v5_session(broker.mqtt_port, cid, 600)
    assert back.connack[0] is False, "the resumed 2 s session outlived its expiry across the restart"
    back.close()


def _will_setup(broker, topic, delay=3):
    """A kept-session subscriber of `topic` (disconnected, so the will waits in its queue) and
    a client whose will waits `delay` s, dropped without DISCONNECT. Returns their ids and
    when the drop happened (time.monotonic())."""
    watcher = uniq("watch")
    w = _v5_session(broker.mqtt_port, watcher, 600)
    w.subscribe(topic, 1)
    w.close()
    cid = uniq("willer")
    will = dict(topic=topic, payload=b"gone", qos=1,
                properties=props(PacketTypes.WILLMESSAGE, WillDelayInterval=delay))
    c = Client(broker.mqtt_port, cid, V5, clean=True, will=will,
               connect_props=props(PacketTypes.CONNECT, SessionExpiryInterval=60))
    c.drop()
    dropped = time.monotonic()
    time.sleep(0.5)
    return watcher, cid, dropped


@pytest.mark.parametrize("stop,down_s,shards", [("term", 0, 1), ("term", 0, 2), ("kill", 0, 1), ("term", 3.5, 1)],
                         ids=["sigterm", "sigterm-2-shards", "kill-9", "delay-passed-while-down"])
def test_a_delayed_will_survives_a_restart(broker_factory, tmp_path, stop, down_s, shards):
    """A will waiting for its 5.0 Will Delay Interval when the broker stops is published after
    the restart once the rest of the delay has passed (at once when it passed while the broker
    was down). Its record is synced milliseconds after the drop, so kill -9 keeps it too.
    Before, the will lived only in memory and a restart lost it."""
    data = tmp_path / "data"
    broker = broker_factory(shards=shards, data_dir=data, name="first")
    topic = uniq("will")
    watcher, _, dropped = _will_setup(broker, topic)
    broker.kill() if stop == "kill" else broker.stop()
    time.sleep(down_s)
    broker = broker_factory(shards=shards, data_dir=data, name="second")
    started = time.monotonic()
    w = _v5_session(broker.mqtt_port, watcher, 600)
    assert w.connack[0] is True
    (m,) = w.wait_messages(1, timeout=8)
    assert m.payload == b"gone"
    waited = time.monotonic() - started
    assert time.monotonic() - dropped > 2.8, "the will went before its 3 s delay"
    if down_s:
        assert waited < 2, f"the delay passed while the broker was down, yet the will took {waited:.1f} s"
    assert w.quiet_for(0.5) == [], "the will was published once"
    w.close()


def test_a_delayed_will_is_cancelled_by_a_reconnect_after_a_restart(broker_factory, tmp_path):
    data = tmp_path / "data"
    broker = broker_factory(data_dir=data, name="first")
    topic = uniq("will")
    watcher, cid, _ = _will_setup(broker, topic)
    broker.stop()
    broker = broker_factory(data_dir=data, name="second")
    back = _v5_session(broker.mqtt_port, cid, 60)
    w = _v5_session(broker.mqtt_port, watcher, 600)
    assert w.quiet_for(4) == [], "the will of a client that came back was published"
    back.close()
    w.close()
    broker.stop()
    broker = broker_factory(data_dir=data, name="third")
    w = _v5_session(broker.mqtt_port, watcher, 600)
    assert w.quiet_for(4) == [], "a cancelled will came back after another restart"
    w.close()


def _raw_subscriber(port, cid, topic, level, present=None):
    """A raw QoS 2 subscriber of a kept session; returns it after SUBACK (or CONNACK only when
    `topic` is None). `present`: the session-present flag the CONNACK must carry."""
    raw = Raw(port)
    connack = raw.connect(level=level, client_id=cid, clean=False, session_expiry=600 if level == 5 else None)
    if present is not None:
        assert bool(connack[0] & 1) is present, f"session present {connack!r}"
    if topic is not None:
        body = struct.pack("!H", 1) + (b"\x00" if level == 5 else b"") + mqtt_str(topic) + b"\x02"
        raw.send(packet(0x82, body))
        kind, _, _ = raw.read_packet()
        assert kind == 9, "SUBACK"
    return raw


def _read_publish(raw, level):
    """(packet id, dup, payload) of the next PUBLISH."""
    kind, flags, body = raw.read_packet()
    assert kind == 3, f"expected PUBLISH, got packet type {kind}"
    (tlen,) = struct.unpack("!H", body[:2])
    at = 2 + tlen
    (pid,) = struct.unpack("!H", body[at:at + 2])
    at += 2
    if level == 5:
        plen, shift = 0, 0
        while True:
            b = body[at]
            at += 1
            plen |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        at += plen
    return pid, bool(flags & 0x08), body[at:]


def _next_packet(raw, timeout):
    """The next packet, or None when nothing comes within `timeout` s."""
    try:
        return raw.read_packet(timeout=timeout)
    except socket.timeout:
        return None


def _restart(broker_factory, broker, data, how, name):
    """Restarts the broker (SIGTERM or kill -9); `how == "none"`: no restart, a reconnect."""
    if how == "none":
        return broker
    broker.kill() if how == "kill" else broker.stop()
    return broker_factory(data_dir=data, name=name)


@pytest.mark.parametrize("level", [4, 5], ids=["v311", "v5"])
@pytest.mark.parametrize("how", ["term", "kill", "none"])
def test_an_unacknowledged_qos2_publish_is_resent_with_its_packet_id_after_a_restart(broker_factory, tmp_path, level, how):
    """§4.4: after the session resumes, an unacknowledged PUBLISH goes again with DUP=1 and
    its original packet id (before: a new id, which a client that stored the old one as
    received would deliver a second time; after a plain reconnect too)."""
    data = tmp_path / "data"
    broker = broker_factory(data_dir=data, name="first")
    cid, topic = uniq("q2a"), uniq("q2a")
    raw = _raw_subscriber(broker.mqtt_port, cid, topic, level)
    pub = Client(broker.mqtt_port, uniq("pub"), V5)
    pub.publish(topic, b"m1", qos=2)
    pid1, _, payload = _read_publish(raw, level)
    assert payload == b"m1"
    raw.send(packet(0x50, struct.pack("!H", pid1)))  # PUBREC
    assert raw.read_packet()[0] == 6, "PUBREL"
    raw.send(packet(0x70, struct.pack("!H", pid1)))  # PUBCOMP
    pub.publish(topic, b"m2", qos=2)
    pid2, dup, payload = _read_publish(raw, level)
    assert (payload, dup) == (b"m2", False)
    raw.close()  # no PUBREC: the client may have stored pid2 as received (method B)
    pub.close()
    time.sleep(0.3)
    broker = _restart(broker_factory, broker, data, how, "second")
    raw = _raw_subscriber(broker.mqtt_port, cid, None, level, present=True)
    got = _read_publish(raw, level)
    assert got == (pid2, True, b"m2"), f"resent as {got}, sent first as packet id {pid2}"
    raw.send(packet(0x50, struct.pack("!H", pid2)))
    assert raw.read_packet()[0] == 6, "PUBREL"
    raw.send(packet(0x70, struct.pack("!H", pid2)))
    raw.close()


@pytest.mark.parametrize("level", [4, 5], ids=["v311", "v5"])
@pytest.mark.parametrize("how", ["term", "kill"])
def test_a_pubrel_the_client_never_completed_is_resent_after_a_restart(broker_factory, tmp_path, level, how):
    """§4.4: a delivery the client PUBREC'd but never PUBCOMP'd gets its PUBREL again after
    the restart, and the message is not sent again (before: nothing was resent, so a client
    that delivers on PUBREL lost the message and kept the packet id in use for ever)."""
    data = tmp_path / "data"
    broker = broker_factory(data_dir=data, name="first")
    cid, topic = uniq("q2b"), uniq("q2b")
    raw = _raw_subscriber(broker.mqtt_port, cid, topic, level)
    pub = Client(broker.mqtt_port, uniq("pub"), V5)
    pub.publish(topic, b"m1", qos=2)
    pub.close()
    pid, _, payload = _read_publish(raw, level)
    assert payload == b"m1"
    raw.send(packet(0x50, struct.pack("!H", pid)))  # PUBREC
    kind, _, body = raw.read_packet()
    assert (kind, body[:2]) == (6, struct.pack("!H", pid)), "PUBREL"
    raw.close()  # no PUBCOMP
    time.sleep(0.3)
    broker = _restart(broker_factory, broker, data, how, "second")
    raw = _raw_subscriber(broker.mqtt_port, cid, None, level, present=True)
    got = _next_packet(raw, 3)
    assert got is not None and (got[0], got[2][:2]) == (6, struct.pack("!H", pid)), f"PUBREL again, got {got}"
    raw.send(packet(0x70, struct.pack("!H", pid)))  # PUBCOMP
    assert _next_packet(raw, 0.5) is None, "nothing else is sent (m1 is not sent again)"
    raw.close()
    broker = _restart(broker_factory, broker, data, "term", "third")
    raw = _raw_subscriber(broker.mqtt_port, cid, None, level, present=True)
    assert _next_packet(raw, 0.5) is None, "a completed release is not resent"
    raw.close()
