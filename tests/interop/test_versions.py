"""STOMP version negotiation (1.0 / 1.1 / 1.2)."""

import pytest

from conftest import connect_frame, send_sync, subscribe_sync, uniq


@pytest.mark.parametrize("version", ["1.0", "1.1", "1.2"])
def test_stomp_py_version(stomp_client, version):
    c, lis = stomp_client(version)
    got = lis.connected_frame.headers.get("version")
    if version == "1.0":
        assert got in (None, "1.0"), f"1.0 client got version:{got}"
    else:
        assert got == version, f"asked for {version}, CONNECTED says version:{got}"
    q = f"/queue/{uniq('q')}"
    subscribe_sync(c, lis, q, version=version)
    send_sync(c, lis, q, f"hi {version}")
    assert lis.wait_messages(1)[0].body == f"hi {version}"


@pytest.mark.parametrize("version", ["1.1", "1.2"])
def test_connect_command_instead_of_stomp(stomp_client, version):
    c, lis = stomp_client(version, with_connect_command=True)
    assert lis.connected_frame.headers.get("version") == version


@pytest.mark.parametrize(
    "accept,want",
    [("1.0,1.1,1.2", "1.2"), ("1.2,1.1,1.0", "1.2"), ("1.0,1.1", "1.1"), ("1.1,2.0", "1.1"),
     ("1.0", "1.0"), (None, "1.0")],
)
def test_raw_negotiation_picks_highest_common(raw, accept, want):
    c = raw(connect=False)
    c.send(connect_frame(accept))
    f = c.expect_frame("CONNECTED")
    got = f.headers.get("version")
    if want == "1.0":
        assert got in (None, "1.0"), f"accept-version:{accept} -> version:{got}"
    else:
        assert got == want, f"accept-version:{accept} -> version:{got}"


def test_raw_unsupported_version_gets_error(raw, stomp_client):
    c = raw(connect=False)
    c.send(connect_frame("9.9"))
    f = c.expect_frame("ERROR", timeout=1.0)
    assert f.headers.get("message"), f.headers
    # STOMP 1.2 says the ERROR should list the supported versions
    assert "1.2" in f.headers.get("version", ""), f"ERROR lacks version header: {f.headers}"
    c.wait_eof(1.0)
    # unaffected
    ok, lis = stomp_client()
    assert ok.is_connected()


def test_stomp_command_with_1_2(raw):
    c = raw(connect=False)
    c.send(b"STOMP\naccept-version:1.2\nhost:/\nlogin:guest\npasscode:guest\n\n\x00")
    f = c.expect_frame("CONNECTED")
    assert f.headers.get("version") == "1.2"


def test_crlf_line_endings_1_2(raw):
    q = f"/queue/{uniq('q')}"
    c = raw(connect=False)
    c.send(b"CONNECT\r\naccept-version:1.2\r\nhost:/\r\nlogin:guest\r\npasscode:guest\r\n\r\n\x00")
    c.expect_frame("CONNECTED")
    c.send(f"SUBSCRIBE\r\ndestination:{q}\r\nid:s\r\nreceipt:r1\r\n\r\n\x00")
    c.expect_frame("RECEIPT")
    c.send(f"SEND\r\ndestination:{q}\r\n\r\ncrlf\x00")
    f = c.expect_frame("MESSAGE")
    assert f.body == b"crlf"
