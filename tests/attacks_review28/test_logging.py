"""README "Logging": what is logged, where, at which level, and what never is."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import pytest

from pymprpc import RPC, Server
from pymprpc.errors import LoginError
from pymprpc.interceptors import AccessLog
from pymprpc.testing import serve_in_thread, sync_client_for

from .kit import Raw, Records, wait_until

PASSWORD = "s3cr3t-PW-xyzzy"


def _server(**options: Any) -> Server:
    server = Server(("127.0.0.1", 0), auth=[("bob", PASSWORD)], login_backoff=0, **options)

    @server.register_function()
    async def boom() -> None:
        raise ValueError("kaboom")

    @server.register_function()
    async def unsendable() -> Any:
        return {1, 2}

    @server.register_function()
    async def ok() -> str:
        return "ok"

    @server.register_function("weird\nname" + "m" * 400)
    async def weird() -> None:
        raise ValueError("weird")

    return server


def test_null_handler_on_pymprpc() -> None:
    """ "a `NullHandler` sits on `pymprpc`"."""
    handlers = logging.getLogger("pymprpc").handlers
    assert any(isinstance(h, logging.NullHandler) for h in handlers)


@pytest.mark.logs_errors
def test_handler_exception_logged_once_at_error_with_details() -> None:
    """ "A handler's exception is logged once at ERROR with its traceback, method, call ID
    and peer"."""
    server = _server()
    with Records() as rec, serve_in_thread(server), Raw(server.port) as raw:
        raw.login("bob", PASSWORD)
        reply = raw.call("the-call-id", "boom")
        assert reply["CODE"] == 404
        port = raw.sock.getsockname()[1]
        wait_until(lambda: any(r.levelno >= logging.ERROR for r in rec.records))
    errors = [r for r in rec.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, rec.texts()
    record = errors[0]
    text = record.getMessage()
    assert record.exc_info and isinstance(record.exc_info[1], ValueError)
    assert "boom" in text and "the-call-id" in text and str(port) in text, text


@pytest.mark.logs_errors
def test_unsendable_result_logged_at_error() -> None:
    """ "and so is a result ... it returned that cannot be sent (not encodable ...: the
    client gets 405)"."""
    server = _server()
    with Records() as rec, serve_in_thread(server), Raw(server.port) as raw:
        raw.login("bob", PASSWORD)
        reply = raw.call("u-1", "unsendable")
        assert reply["CODE"] == 405
        wait_until(lambda: any(r.levelno >= logging.ERROR for r in rec.records))
    errors = [r for r in rec.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, rec.texts()
    assert "unsendable" in errors[0].getMessage() and "u-1" in errors[0].getMessage()


def _forged_lines_ok(rec: Records, needle: str) -> None:
    """No record shows a raw line break from the peer's text, nor more than 256
    characters of it in a row."""
    for r in rec.records:
        text = r.getMessage()
        assert "FORGED" not in text.split("\n", 1)[-1] or "\n" not in text, text
        assert needle * 257 not in text, f"uncut: {text[:400]}"


@pytest.mark.logs_errors
def test_peer_call_id_escaped_and_cut_in_error_line() -> None:
    """ "A call ID or method name a peer chose is escaped and cut to 256 characters in
    every line, so it cannot forge one" (the handler's ERROR line, AccessLog's line)."""
    server = _server(interceptors=[AccessLog()])
    forged = "x\nFORGED pymprpc ERROR: fake line " + "q" * 1000
    with Records() as rec, serve_in_thread(server), Raw(server.port) as raw:
        raw.login("bob", PASSWORD)
        assert raw.call(forged, "boom")["CODE"] == 404
        wait_until(lambda: any(r.name == "pymprpc.access" for r in rec.records))
    assert any(r.levelno >= logging.ERROR for r in rec.records)
    for r in rec.records:
        text = r.getMessage()
        assert "\nFORGED" not in text, text
        assert "q" * 257 not in text, f"uncut in {r.name}: {text[:300]}"


@pytest.mark.logs_errors
def test_method_name_escaped_and_cut_in_error_line() -> None:
    """ "A call ID or method name a peer chose is escaped and cut to 256 characters in
    every line" (a registered method whose name has a line break and 400+ characters)."""
    server = _server(interceptors=[AccessLog()])
    with Records() as rec, serve_in_thread(server), Raw(server.port) as raw:
        raw.login("bob", PASSWORD)
        assert raw.call("w-1", "weird\nname" + "m" * 400)["CODE"] == 404
        wait_until(lambda: any(r.name == "pymprpc.access" for r in rec.records))
    for r in rec.records:
        text = r.getMessage()
        assert "\nname" not in text, text
        assert "m" * 257 not in text, f"uncut in {r.name}: {text[:300]}"


def test_peer_id_escaped_in_oneway_failure_and_request_errors() -> None:
    """Every line: a RETURN-false call with a forged ID, and a duplicate/invalid call
    (400) with a forged ID, log nothing with a raw line break or 257+ characters of it."""
    server = _server()
    forged = "y\nFORGED " + "z" * 600
    with Records() as rec, serve_in_thread(server), Raw(server.port) as raw:
        raw.login("bob", PASSWORD)
        raw.call(forged, "ok", RETURN=False)
        raw.send({"MPRPC": "0.1", "ID": forged + "2", "METHOD": "ok", "ARGS": "notalist"})
        raw.recv()
        raw.send({"MPRPC": "0.1", "ID": forged + "3", "METHOD": "no\nsuch" + "z" * 600})
        raw.recv()
        assert raw.call("fin", "ok")["CODE"] == 200
    for r in rec.records:
        text = r.getMessage()
        assert "\nFORGED" not in text and "\nsuch" not in text, text
        assert "z" * 257 not in text, f"uncut in {r.name}: {text[:300]}"


def _all_text(rec: Records) -> str:
    out = []
    for r in rec.records:
        out.append(r.getMessage())
        if r.exc_info and r.exc_info[1] is not None:
            out.append(repr(r.exc_info[1]))
    return "\n".join(out)


def test_failed_login_warning_has_peer_and_configured_user_not_password() -> None:
    """ "failed logins are WARNING with the peer and user name, never the password"."""
    server = _server()
    with Records() as rec, serve_in_thread(server), Raw(server.port) as raw:
        reply = raw.login("bob", PASSWORD + "-wrong")
        assert reply["CODE"] == 501
        port = raw.sock.getsockname()[1]
        wait_until(lambda: any(r.levelno == logging.WARNING for r in rec.records))
    warnings = [r.getMessage() for r in rec.records if r.levelno == logging.WARNING]
    assert port
    assert any("bob" in w and "127.0.0.1" in w for w in warnings), warnings
    assert PASSWORD not in _all_text(rec)


@pytest.mark.parametrize(
    "auth",
    [
        {"USERNAME": "bob", "PASSWORD": PASSWORD + "-wrong"},
        {"USERNAME": PASSWORD, "PASSWORD": "bob"},  # typed in the wrong field
        {"USERNAME": "bob", "PASSWORD": [PASSWORD]},
        {"USERNAME": "bob", "PASSWORD": {PASSWORD: 1}},
        {"USERNAME": "bob", "PASSWORD": PASSWORD * 5000},
        {"USERNAME": "bob", "PASSWORD": PASSWORD, "EXTRA": 1},
        {"USERNAME": "bob"},
        {"PASSWORD": PASSWORD},
    ],
)
def test_password_never_logged_at_any_level(auth: dict[str, Any]) -> None:
    """ "never the password" (nor in DEBUG lines, nor for malformed auth requests; and
    not a password typed in the user-name field: "other text may be a password typed in
    the wrong field, so it shows as a keyed digest")."""
    server = _server()
    with Records(level=logging.DEBUG) as rec, serve_in_thread(server), Raw(server.port) as raw:
        raw.send({"MPRPC": "0.1", "AUTH": auth})
        with contextlib.suppress(EOFError, OSError):
            raw.recv()
    assert PASSWORD not in _all_text(rec)


def test_successful_login_debug_lines_have_no_password() -> None:
    """A successful login logs no password either (at DEBUG)."""
    server = _server()
    with (
        Records(level=logging.DEBUG) as rec,
        sync_client_for(server, RPC, user="bob", password=PASSWORD, timeout=10) as rpc,
    ):
        assert rpc.ok() == "ok"
    assert PASSWORD not in _all_text(rec)


def test_connections_accepted_and_closed_are_info() -> None:
    """ "Connections accepted and closed are INFO" on `pymprpc.server.handler`."""
    server = _server()
    with Records(level=logging.DEBUG) as rec, serve_in_thread(server):
        with Raw(server.port) as raw:
            raw.login("bob", PASSWORD)
            port = raw.sock.getsockname()[1]
        wait_until(
            lambda: (
                sum(
                    1
                    for r in rec.records
                    if r.name == "pymprpc.server.handler" and str(port) in r.getMessage()
                )
                >= 2
            )
        )
    mine = [
        r
        for r in rec.records
        if r.name == "pymprpc.server.handler"
        and str(port) in r.getMessage()
        and (" accepted" in r.getMessage() or " closed" in r.getMessage())
    ]
    assert len(mine) == 2, rec.texts()
    assert {r.levelno for r in mine} == {logging.INFO}, [r.getMessage() for r in mine]


def test_protocol_error_closing_connection_is_info() -> None:
    """ "protocol errors closing a connection are INFO"."""
    server = _server()
    with Records(level=logging.DEBUG) as rec, serve_in_thread(server), Raw(server.port) as raw:
        raw.login("bob", PASSWORD)
        raw.sock.sendall(b"\xc1garbage" + b"##PRO-END##")
        with pytest.raises((EOFError, OSError)):
            while True:
                raw.recv()
        wait_until(lambda: any("clos" in r.getMessage() for r in rec.records))
    assert all(r.levelno <= logging.INFO for r in rec.records), rec.texts()


def test_nothing_logged_per_call_without_accesslog() -> None:
    """ "Nothing is logged per call unless you install `AccessLog`" (at any level)."""
    server = _server()
    with sync_client_for(server, RPC, user="bob", password=PASSWORD, timeout=10) as rpc:
        rpc.ok()
        with Records(level=logging.DEBUG) as rec:
            for _ in range(5):
                assert rpc.ok() == "ok"
            rpc.system.health()
    assert rec.records == [], rec.texts()


def test_accesslog_one_record_per_call() -> None:
    """ "`AccessLog` (one record per call on the `pymprpc.access` logger)"."""
    server = _server(interceptors=[AccessLog()])
    with (
        Records("pymprpc.access", logging.INFO) as rec,
        sync_client_for(server, RPC, user="bob", password=PASSWORD, timeout=10) as rpc,
    ):
        for _ in range(3):
            rpc.ok()
        wait_until(lambda: len(rec.records) >= 3)
        assert rpc.ok() == "ok"
        wait_until(lambda: len(rec.records) >= 4)
    assert len(rec.records) == 4, rec.texts()
    assert all("ok" in r.getMessage() and "-> 200" in r.getMessage() for r in rec.records)


@pytest.mark.logs_errors
def test_accesslog_records_unsendable_as_405() -> None:
    """ "`AccessLog` and `ServerTelemetry` record such a call as 405, the code its client
    got"."""
    server = _server(interceptors=[AccessLog()])
    with (
        Records("pymprpc.access", logging.INFO) as rec,
        sync_client_for(server, RPC, user="bob", password=PASSWORD, timeout=10) as rpc,
    ):
        with pytest.raises(Exception) as exc:
            rpc.unsendable()
        assert getattr(exc.value, "code", None) == 405
        wait_until(lambda: len(rec.records) >= 1)
    assert "-> 405" in rec.records[0].getMessage(), rec.texts()


def test_login_error_client_side() -> None:
    """Sanity: a wrong password is a LoginError (501) for the client."""
    server = _server()
    with serve_in_thread(server) as running, pytest.raises(LoginError):
        RPC(running.url_for("bob", "nope"), timeout=5).connect()
