"""Contracts 4 and 5: login back-off per address and per user, WARNING logs without the
password; idle means no complete message (partial frames do not keep a connection)."""

from __future__ import annotations

import socket
import time

import pytest

from .kit import SEP, Raw, Srv, code, pack

pytestmark = pytest.mark.timeout(60)
PW = "Sup3r-S3cret-pw"
BAD = "Wr0ng-pw-XYZZY"


def login_from(port: int, src: str, user: str, pw: str) -> int:
    s = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(src, 0))
    c = Raw.__new__(Raw)
    c.sock, c.buf, c.length, c.enc = s, b"", False, "msgpack"
    try:
        return code(c.login(user, pw))
    finally:
        c.close()


def test_backoff_per_address_and_logged_without_password() -> None:
    with Srv(auth=[["admin", PW], ["bob", PW]], login_attempts=2, login_backoff=1) as s:
        for _ in range(3):
            assert login_from(s.port, "127.0.0.2", "nosuch", BAD) == 501
        # same address, right password for another user: blocked during back-off
        t0 = time.monotonic()
        assert login_from(s.port, "127.0.0.2", "bob", PW) == 501
        # other address, other user: fine
        assert login_from(s.port, "127.0.0.3", "bob", PW) == 100
        time.sleep(max(0.0, 2.2 - (time.monotonic() - t0)))
        assert login_from(s.port, "127.0.0.2", "bob", PW) == 100
        err = s.stderr()
    assert "WARNING" in err
    assert BAD not in err and PW not in err


def test_backoff_per_user() -> None:
    with Srv(auth=[["admin", PW], ["bob", PW]], login_attempts=2, login_backoff=1) as s:
        for i in range(3):
            assert login_from(s.port, f"127.0.1.{i + 1}", "admin", BAD) == 501
        assert login_from(s.port, "127.0.2.1", "admin", PW) == 501  # user blocked
        assert login_from(s.port, "127.0.2.1", "bob", PW) == 100


def test_backoff_password_in_username_field_not_logged() -> None:
    """A user who types the password in the user name field must not get it logged."""
    with Srv(auth=[["admin", PW]], login_attempts=1, login_backoff=1) as s:
        for _ in range(3):
            login_from(s.port, "127.0.0.5", PW, PW)
        err = s.stderr()
    assert PW not in err, [line for line in err.splitlines() if PW in line][:3]


def test_many_distinct_failed_users_bounded_memory() -> None:
    with Srv(auth=[["admin", PW]], login_attempts=1, login_backoff=1) as s:
        base = s.rss()
        big = "u" * 60_000
        for i in range(600):
            login_from(s.port, f"127.{(i >> 8) & 255}.{i & 255}.9", f"{big}{i}", BAD)
        grown = s.rss() - base
        print(f"600 failed logins with 60 KB user names: +{grown >> 20} MiB")
        assert grown < 16 << 20


def test_idle_partial_frame_does_not_keep_alive() -> None:
    with Srv(idle_timeout=1) as s, Raw(s.port, timeout=5) as c:
        c.login()
        t0 = time.monotonic()
        partial = pack({"MPRPC": "0.1", "ID": "x", "METHOD": "echo", "ARGS": ["a" * 50]})
        closed = False
        for b in partial[:40]:
            try:
                c.send_raw(bytes([b]))
            except OSError:
                closed = True
                break
            time.sleep(0.2)
            if time.monotonic() - t0 > 4:
                break
        if not closed:
            c.sock.settimeout(0.1)
            try:
                closed = c.sock.recv(100) == b"" or True
            except TimeoutError:
                closed = False
            except OSError:
                closed = True
        assert closed or c.buf, "connection still open after 4 s of partial frame"
        assert time.monotonic() - t0 < 3.5, "closed too late"


def test_idle_partial_frame_length_framing() -> None:
    with Srv(idle_timeout=1) as s, Raw(s.port, timeout=5) as c:
        c.login(features=["length-framing"])
        c.send_raw(b"\x00\x00\x10")  # 3 of 4 length bytes
        t0 = time.monotonic()
        c.sock.settimeout(3)
        data = b""
        try:
            while True:
                d = c.sock.recv(100)
                if not d:
                    break
                data += d
        except TimeoutError:
            pass
        assert time.monotonic() - t0 < 2.5, "not closed within idle timeout"
        assert b"\xcd\x01\xf8" in data, f"no 504 before close: {data!r}"


def test_slowloris_auth() -> None:
    with Srv(auth_timeout=1, idle_timeout=0) as s:
        k = socket.create_connection(("127.0.0.1", s.port), timeout=5)
        auth = pack({"MPRPC": "0.1", "AUTH": {"USERNAME": None, "PASSWORD": None}}) + SEP
        t0 = time.monotonic()
        dead = False
        for b in auth:
            try:
                k.sendall(bytes([b]))
            except OSError:
                dead = True
                break
            time.sleep(0.15)
        k.settimeout(2)
        try:
            data = k.recv(1000)
        except OSError:
            data = b""
        assert dead or b"\xcd\x01\xf8" in data or data == b"", data
        assert b"\xcd\x01\xf4" not in data, "logged in despite slowloris past auth_timeout"
        assert time.monotonic() - t0 < 6


def test_running_call_is_not_idle() -> None:
    with Srv(idle_timeout=1) as s, Raw(s.port, timeout=5) as c:
        c.login()
        assert c.rpc("asleep", 2)["MESSAGE"]["RESULT"] == 2


def test_running_stream_is_not_idle() -> None:
    with Srv(idle_timeout=1) as s, Raw(s.port, timeout=5) as c:
        c.login()
        c.call("s", "aendless")
        t0 = time.monotonic()
        n = 0
        while time.monotonic() - t0 < 2.5:
            r = c.recv()
            assert code(r) in (201, 202), r
            n += 1
        assert n > 10


def test_pings_keep_alive_and_idle_after() -> None:
    with Srv(idle_timeout=1) as s, Raw(s.port, timeout=5) as c:
        c.login()
        for _ in range(5):
            c.send({"MPRPC": "0.1", "HEARTBEAT": "ping"})
            assert code(c.recv()) == 101
            time.sleep(0.4)
        r = c.recv()
        assert code(r) == 504
