"""Active/standby on one data directory, with real processes (issue 4). One run of each
scenario of `tests/ha/ha_run.py` (which reports the figures over many runs), plus pika's own
host-list reconnect against a kill. Lease duration 1 s here to keep the suite short; the
scenarios scale every wait with it."""

import argparse
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import pika
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "tests" / "ha"))
import ha_run  # noqa: E402
from conftest import send_sync, subscribe_sync, uniq, wait_for  # noqa: E402

LEASE_MS = 1000
pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def args():
    binary = os.environ.get("FERRY_BIN", str(REPO_ROOT / "target" / "debug" / "ferry"))
    return argparse.Namespace(bin=binary, shards=2, lease_ms=LEASE_MS)


@pytest.fixture
def log():
    """The brokers' stderr, in a named file so that a failure can show its end."""
    with tempfile.NamedTemporaryFile(prefix="ferry-ha-test-", suffix=".log") as f:
        yield f


def test_kill_of_the_active_under_confirmed_load_loses_nothing(args, log):
    r = ha_run.run_kill(args, random.Random(1), log)
    assert r["confirmed"] > 100, r
    assert (r["lost"], r["resurrected"], r["duplicates"]) == (0, 0, 0), r


def test_a_paused_active_acks_nothing_after_the_takeover_and_exits(args, log):
    r = ha_run.run_stop(args, random.Random(2), log)
    assert r["zombie_receipts"] == 0, r
    assert r["zombie_delivered"] == 0, r
    assert r["old_active_exit"] == 75, r
    assert (r["lost"], r["resurrected"]) == (0, 0), r


def test_planned_handover_under_load_loses_nothing(args, log):
    r = ha_run.run_handover(args, random.Random(3), log)
    assert r["confirmed"] > 100, r
    assert (r["lost"], r["resurrected"], r["duplicates"]) == (0, 0, 0), r
    assert r["old_active_exit"] == 0, r
    assert "handed over from epoch 1" in r["ctl"], r


def test_a_standby_refuses_clients_then_serves_when_the_active_dies(args, log):
    r = ha_run.run_standby(args, random.Random(4), log)
    assert r["standby_refused"], r


def test_two_processes_started_together_elect_exactly_one(args, log):
    for seed in range(3):
        r = ha_run.run_race(args, random.Random(seed), log)
        assert r["serving"] == 1 and r["epochs_claimed"] == 1, r


def amqp_params(port):
    return pika.ConnectionParameters(host="127.0.0.1", port=port, connection_attempts=1, retry_delay=0,
                                     socket_timeout=2, blocked_connection_timeout=5)


def test_pika_reconnects_through_its_host_list_to_the_new_active(args, log):
    data = tempfile.mkdtemp(prefix="ferry-ha-pika-")
    amqp_ports = [ha_run.free_port(), ha_run.free_port()]
    brokers = []
    try:
        for port in amqp_ports:
            brokers.append(ha_run.Broker(args.bin, data, ha_run.free_port(), 1, LEASE_MS, log,
                                         extra=["--listen", f"amqp=127.0.0.1:{port}"]))
            if len(brokers) == 1:
                brokers[0].wait_serving()
        hosts = [amqp_params(p) for p in amqp_ports]
        conn = pika.BlockingConnection(hosts)
        ch = conn.channel()
        ch.confirm_delivery()
        ch.queue_declare("ha-pika", durable=True)
        for i in range(20):
            ch.basic_publish("", "ha-pika", f"m{i}".encode(), pika.BasicProperties(delivery_mode=2))
        brokers[0].proc.send_signal(signal.SIGKILL)
        brokers[0].proc.wait(5)
        # The application's usual reconnect: the same host list, tried until one answers.
        deadline = time.monotonic() + 20
        while True:
            try:
                conn = pika.BlockingConnection(hosts)
                break
            except pika.exceptions.AMQPConnectionError:
                assert time.monotonic() < deadline, "no broker of the pair answered"
                time.sleep(0.1)
        ch = conn.channel()
        got = []
        for _ in range(20):
            method, _, body = ch.basic_get("ha-pika", auto_ack=True)
            assert method is not None, f"confirmed message missing after failover; got {got}"
            got.append(body.decode())
        assert got == [f"m{i}" for i in range(20)]
        conn.close()
    finally:
        for b in brokers:
            b.stop()
        shutil.rmtree(data, ignore_errors=True)


def admin_status(port):
    """(HTTP status of /healthz, role and epoch from /api/status) of a broker's admin endpoint."""
    import json
    import urllib.error
    import urllib.request
    try:
        health = urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5).status
    except urllib.error.HTTPError as e:
        health = e.code
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=5) as r:
        status = json.load(r)
    return health, status["role"], status["epoch"]


def paho_connack(port, protocol):
    """Connects with paho-mqtt (blocking, no network thread) and returns the CONNACK's reason
    code and properties, or raises when the port is closed."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    got = {}
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="ha-probe", protocol=protocol)
    c.username_pw_set("guest", "guest")
    c.on_connect = lambda client, userdata, flags, reason, properties: got.update(reason=reason, props=properties)
    c.connect("127.0.0.1", port, keepalive=10)
    deadline = time.monotonic() + 5
    while "reason" not in got and time.monotonic() < deadline:
        c.loop(timeout=0.1)
    c.disconnect()
    assert "reason" in got, f"no CONNACK from {port}"
    return got["reason"], got["props"]


def test_a_standby_sends_mqtt_clients_to_the_active_then_serves_them_itself(args, log):
    """MQTT 5 clients reaching the standby get CONNACK 'Use another server' naming the active's
    MQTT address (3.1.1 clients: 'Server unavailable'); after the active dies the same port
    accepts them. The admin endpoint reports each process's role and epoch throughout."""
    import paho.mqtt.client as mqtt
    data = tempfile.mkdtemp(prefix="ferry-ha-mqtt-")
    mqtt_ports = [ha_run.free_port(), ha_run.free_port()]
    admin_ports = [ha_run.free_port(), ha_run.free_port()]
    brokers = []
    try:
        for port, admin in zip(mqtt_ports, admin_ports):
            brokers.append(ha_run.Broker(args.bin, data, ha_run.free_port(), 1, LEASE_MS, log,
                                         extra=["--listen", f"mqtt=127.0.0.1:{port}",
                                                "--listen", f"admin=127.0.0.1:{admin}"]))
            brokers[0].wait_serving()
        active, standby = mqtt_ports
        assert paho_connack(active, mqtt.MQTTv5)[0] == "Success"
        assert admin_status(admin_ports[0]) == (200, "active", 1)
        deadline = time.monotonic() + 10
        while True:
            try:
                reason, props = paho_connack(standby, mqtt.MQTTv5)
                break
            except (ConnectionRefusedError, AssertionError):
                assert time.monotonic() < deadline, "the standby never answered MQTT"
                time.sleep(0.1)
        assert reason == "Use another server", reason
        assert props.ServerReference == f"127.0.0.1:{active}", props
        assert admin_status(admin_ports[1]) == (503, "standby", 0)
        reason, _ = paho_connack(standby, mqtt.MQTTv311)
        assert reason == "Server unavailable", f"3.1.1 CONNACK return code {reason}"   # 3 on the wire
        brokers[0].proc.send_signal(signal.SIGKILL)
        brokers[0].proc.wait(5)
        brokers[1].wait_serving()
        deadline = time.monotonic() + 10
        while True:
            reason, _ = paho_connack(standby, mqtt.MQTTv5)
            if reason == "Success":
                break
            assert time.monotonic() < deadline, f"the new active still redirects: {reason}"
            time.sleep(0.05)
        assert admin_status(admin_ports[1]) == (200, "active", 2)
    finally:
        for b in brokers:
            b.stop()
        shutil.rmtree(data, ignore_errors=True)


@pytest.mark.ferry(config=f"lease_duration_ms = {LEASE_MS}\n")
def test_the_fence_holds_receipts_while_its_lookup_fails_then_stops_the_broker(broker, broker_factory, stomp_client):
    """The owner may acknowledge only after a lookup that *answered* "no epoch N+1". With the
    lease directory replaced by a plain file, that lookup fails (ENOTDIR) instead: the receipt
    must wait, and after a lease duration of failures the broker stops (75). Renewals still
    work meanwhile (the heartbeat file is already open), so nothing else would stop it."""
    c, lis = stomp_client()
    q = f"/queue/{uniq('fence')}"
    send_sync(c, lis, q, "before", headers={"persistent": "true"})
    data = broker.data_dir
    (data / "lease").rename(data / "lease-aside")
    (data / "lease").write_text("")
    c.send(q, "during", headers={"persistent": "true", "receipt": "r-during"})
    wait_for(lambda: broker.proc.poll() is not None, timeout=10 * LEASE_MS / 1000, what="the broker to stop")
    assert "r-during" not in lis.receipts, "a receipt was released without a fence lookup"
    assert broker.stop() == 75, broker.log_tail()
    assert "cannot look for" in broker.log_tail()
    # The data dir is intact: with the lease dir back, the acknowledged message is there.
    (data / "lease").unlink()
    (data / "lease-aside").rename(data / "lease")
    b2 = broker_factory(data_dir=data, name="after-fence")
    c2, l2 = stomp_client(target=b2)
    subscribe_sync(c2, l2, q)
    got = [m.body for m in l2.quiet_for(0.5)]
    assert got[:1] == ["before"] and set(got) <= {"before", "during"} and len(got) == len(set(got)), got
