"""Process lifecycle: SIGTERM with live connections exits cleanly."""

import threading

from conftest import BOTH_SHARDS, port_accepts, send_sync, subscribe_sync, uniq


@BOTH_SHARDS
def test_sigterm_clean_exit_with_open_connections(broker, stomp_client, raw):
    q = f"/queue/{uniq('q')}"
    c, lis = stomp_client()
    subscribe_sync(c, lis, q, ack="client-individual")
    send_sync(c, lis, q, "unacked at shutdown")
    lis.wait_messages(1)
    r = raw()
    code = broker.stop(term_timeout=5.0)
    assert code == 0, f"exit after SIGTERM: {code}\n{broker.log_tail()}"
    lis.wait_disconnected(timeout=2)
    r.wait_eof(timeout=1.0)
    # The process exited (code above), so its listeners are closed; probing the port instead
    # would race with any other process that picks the freed port.


def test_only_listed_listener_is_open(broker_factory):
    """With --listen given, only the listed listener opens (no default AMQP/MQTT/STOMP ports)."""
    defaults = (61613, 5672, 1883, 61616, 15674)
    before = {p for p in defaults if port_accepts(p)}
    b = broker_factory()
    after = {p for p in defaults if port_accepts(p)}
    assert after - before == set(), f"unexpected listeners on {sorted(after - before)}"
    assert port_accepts(b.port)


@BOTH_SHARDS
def test_sigterm_under_load_exits_cleanly(broker, stomp_client):
    q = f"/queue/{uniq('q')}"
    cons, clis = stomp_client()
    subscribe_sync(cons, clis, q)
    prods = [stomp_client() for _ in range(3)]
    stop = threading.Event()

    def pump(conn):
        i = 0
        while not stop.is_set() and conn.is_connected():
            try:
                conn.send(q, f"load{i}", headers={"persistent": "true"})
            except Exception:
                return
            i += 1

    threads = [threading.Thread(target=pump, args=(c,), daemon=True) for c, _ in prods]
    for t in threads:
        t.start()
    clis.wait_messages(50, timeout=10)
    code = broker.stop(term_timeout=5.0)
    stop.set()
    for t in threads:
        t.join(timeout=5)
    assert code == 0, f"exit after SIGTERM under load: {code}\n{broker.log_tail()}"
