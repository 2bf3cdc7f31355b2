"""MQTT helpers for the interop tests: a paho-mqtt 2.x client wrapper with bounded waits,
and a raw-socket MQTT client for the bad-input cases that no real client would send."""

import socket
import struct
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

V311 = mqtt.MQTTv311
V5 = mqtt.MQTTv5
HOST = "127.0.0.1"


def props(packet_type, **values):
    p = Properties(packet_type)
    for k, v in values.items():
        setattr(p, k, v)
    return p


class Client:
    """A paho client on its own network thread, recording what the broker sends."""

    def __init__(self, port, client_id="", protocol=V5, clean=True, keepalive=30,
                 connect_props=None, will=None, username="guest", password="guest", connect=True):
        kwargs = {}
        if protocol != V5:
            kwargs["clean_session"] = clean
        self.protocol = protocol
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol, **kwargs)
        if username is not None:
            self.c.username_pw_set(username, password)
        if will is not None:
            self.c.will_set(**will)
        self.cond = threading.Condition()
        self.messages = []
        self.connack = None
        self.disconnects = []
        self.c.on_connect = self._on_connect
        self.c.on_message = self._on_message
        self.c.on_disconnect = self._on_disconnect
        self.port = port
        self.clean = clean
        self.keepalive = keepalive
        self.connect_props = connect_props
        if connect:
            self.connect()

    def connect(self, expect_ok=True, timeout=5.0):
        kwargs = {}
        if self.protocol == V5:
            kwargs["clean_start"] = self.clean
            kwargs["properties"] = self.connect_props
        self.c.connect(HOST, self.port, self.keepalive, **kwargs)
        self.c.loop_start()
        self.wait(lambda: self.connack is not None, timeout, "CONNACK")
        if expect_ok:
            assert self.connack[1] == 0, f"CONNACK refused: {self.connack}"
        return self.connack

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        with self.cond:
            self.connack = (flags.session_present, reason_code.value, properties)
            self.cond.notify_all()

    def _on_message(self, client, userdata, msg):
        with self.cond:
            self.messages.append(msg)
            self.cond.notify_all()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        with self.cond:
            self.disconnects.append(reason_code.value if hasattr(reason_code, "value") else reason_code)
            self.cond.notify_all()

    def wait(self, pred, timeout=5.0, what="condition"):
        deadline = time.monotonic() + timeout
        with self.cond:
            while not pred():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
                self.cond.wait(left)

    def wait_messages(self, n, timeout=5.0):
        self.wait(lambda: len(self.messages) >= n, timeout, f"{n} messages (have {len(self.messages)})")
        return self.messages[:n]

    def quiet_for(self, seconds):
        before = len(self.messages)
        time.sleep(seconds)
        return self.messages[before:]

    def payloads(self):
        return [m.payload for m in self.messages]

    def subscribe(self, topic, qos=1, options=None, properties=None, timeout=5.0):
        """Subscribes and waits for SUBACK; returns the granted reason codes."""
        done = threading.Event()
        granted = []

        def on_subscribe(client, userdata, mid, reason_codes, properties):
            granted.extend(rc.value for rc in reason_codes)
            done.set()

        self.c.on_subscribe = on_subscribe
        target = (topic, options) if options is not None else topic
        if options is not None:
            self.c.subscribe(target, properties=properties)
        else:
            self.c.subscribe(topic, qos=qos, properties=properties)
        assert done.wait(timeout), "no SUBACK"
        return granted

    def unsubscribe(self, topic, timeout=5.0):
        done = threading.Event()
        codes = []

        def on_unsubscribe(client, userdata, mid, reason_codes, properties):
            codes.extend(getattr(rc, "value", rc) for rc in (reason_codes or []))
            done.set()

        self.c.on_unsubscribe = on_unsubscribe
        self.c.unsubscribe(topic)
        assert done.wait(timeout), "no UNSUBACK"
        return codes

    def publish(self, topic, payload, qos=1, retain=False, properties=None, timeout=5.0):
        info = self.c.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        info.wait_for_publish(timeout)
        assert info.is_published(), f"publish to {topic} not acknowledged"
        return info

    def close(self, disconnect=True):
        if disconnect:
            try:
                self.c.disconnect()
            except Exception:
                pass
        self.c.loop_stop()

    def drop(self):
        """Closes the socket without DISCONNECT (an abnormal end: the will is published)."""
        self.c.loop_stop()
        sock = self.c.socket()
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)
            sock.close()


# ----------------------------------------------------------------------------- raw client


def varint(n):
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def mqtt_str(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("!H", len(b)) + b


def packet(first_byte, body):
    return bytes([first_byte]) + varint(len(body)) + body


def connect_packet(client_id="raw", level=4, clean=True, keepalive=30, user="guest", password="guest",
                   session_expiry=None):
    flags = (0x02 if clean else 0) | (0x80 if user else 0) | (0x40 if password else 0)
    body = mqtt_str("MQTT") + bytes([level, flags]) + struct.pack("!H", keepalive)
    if level == 5:
        body += b"\x05\x11" + struct.pack("!I", session_expiry) if session_expiry else b"\x00"
    body += mqtt_str(client_id)
    if user:
        body += mqtt_str(user)
    if password:
        body += mqtt_str(password)
    return packet(0x10, body)


def publish_packet(topic, payload=b"x", qos=0, packet_id=1, level=4, dup=False):
    body = mqtt_str(topic)
    if qos:
        body += struct.pack("!H", packet_id)
    if level == 5:
        body += b"\x00"
    return packet(0x30 | (0x08 if dup else 0) | (qos << 1), body + payload)


class Raw:
    def __init__(self, port, timeout=5.0):
        self.s = socket.create_connection((HOST, port), timeout=timeout)
        self.buf = b""

    def send(self, data):
        self.s.sendall(data)

    def read_packet(self, timeout=5.0):
        """Returns (type, flags, body) or None when the broker closed the socket."""
        self.s.settimeout(timeout)
        while True:
            if len(self.buf) >= 2:
                n, mult, i = 0, 1, 1
                while i < len(self.buf):
                    b = self.buf[i]
                    n += (b & 0x7F) * mult
                    mult *= 128
                    i += 1
                    if not b & 0x80:
                        break
                else:
                    i = None
                if i is not None and len(self.buf) >= i + n:
                    first, body = self.buf[0], self.buf[i:i + n]
                    self.buf = self.buf[i + n:]
                    return first >> 4, first & 0x0F, body
            chunk = self.s.recv(65536)
            if not chunk:
                return None
            self.buf += chunk

    def closed_within(self, timeout):
        """True when the broker closes the connection within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.s.settimeout(max(0.01, deadline - time.monotonic()))
                if not self.s.recv(65536):
                    return True
            except socket.timeout:
                return False
            except OSError:
                return True
        return False

    def connect(self, level=4, **kw):
        self.send(connect_packet(level=level, **kw))
        kind, _, body = self.read_packet()
        assert kind == 2 and body[1] == 0, f"CONNACK {body!r}"
        return body

    def close(self):
        self.s.close()
