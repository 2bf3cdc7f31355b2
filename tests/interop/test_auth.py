"""Authentication: config-file users, bad credentials."""

import pytest

from conftest import connect_frame, send_sync, subscribe_sync, uniq

USERS = """
[[users]]
name = "alice"
password = "secret"
"""

pytestmark = pytest.mark.ferry(config=USERS)


def test_config_user_can_connect(stomp_client):
    c, lis = stomp_client(login="alice", passcode="secret")
    q = f"/queue/{uniq('q')}"
    subscribe_sync(c, lis, q)
    send_sync(c, lis, q, "hi alice")
    assert lis.wait_messages(1)[0].body == "hi alice"


def test_guest_still_accepted_from_loopback(stomp_client):
    c, lis = stomp_client(login="guest", passcode="guest")
    assert c.is_connected()


@pytest.mark.parametrize(
    "login,passcode",
    [("alice", "wrong"), ("alice", ""), ("mallory", "secret"), ("guest", "not-guest")],
    ids=["wrong-password", "empty-password", "unknown-user", "guest-wrong-password"],
)
def test_bad_credentials_raw(raw, stomp_client, login, passcode):
    healthy, hlis = stomp_client(login="alice", passcode="secret")
    c = raw(connect=False)
    c.send(connect_frame("1.2", login=login, passcode=passcode))
    try:
        f = c.read_frame(timeout=1.0)
    except TimeoutError:
        raise AssertionError("no answer to CONNECT with bad credentials within 1 s")
    assert f is not None, f"closed without ERROR ({c.eof_reason})"
    assert f.cmd == "ERROR", f"bad credentials {login}/{passcode!r} got {f!r}"
    assert f.headers.get("message"), f.headers
    c.wait_eof(1.0)
    q = f"/queue/{uniq('q')}"
    subscribe_sync(healthy, hlis, q)
    send_sync(healthy, hlis, q, "unaffected")
    assert hlis.wait_messages(1)[0].body == "unaffected"


def test_bad_credentials_stomp_py(stomp_client):
    c, lis = stomp_client(login="alice", passcode="nope", expect_connected=False)
    err = lis.wait_error(timeout=2)
    assert err.headers.get("message")
    lis.wait_disconnected(timeout=2)
    assert not c.is_connected()


def test_missing_credentials_rejected(raw):
    c = raw(connect=False)
    c.send(b"CONNECT\naccept-version:1.2\nhost:/\nlogin:alice\n\n\x00")
    f = c.read_frame(timeout=1.0)
    assert f is not None and f.cmd == "ERROR", f"CONNECT as alice without passcode got {f!r}"
    c.wait_eof(1.0)
