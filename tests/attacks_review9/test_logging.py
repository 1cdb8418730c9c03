"""Logging rules: a handler's exception once at ERROR (method, call ID, peer, traceback);
failed logins at WARNING without the password; peer mistakes are not ERRORs."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import pytest

from attacks_review9 import handlers
from attacks_review9.kit import SEP, Raw, new_server, pack, serving
from pymprpc import RPC, Server
from pymprpc.errors import LoginError, RPCRuntimeError
from pymprpc.interceptors import AccessControl, AccessLog, RateLimit

pytestmark = pytest.mark.timeout(30)

PASSWORD = "Pw-Secret-9f3a"


def build(**options: Any) -> Server:
    server = new_server(
        auth=[("bob", PASSWORD), ("eve", "e")],
        login_attempts=2,
        login_backoff=0.05,
        max_auth_message_size=2000,
        interceptors=[AccessLog(), RateLimit(rate=1000), AccessControl({"*": ["*"]})],
        **options,
    )

    @server.register_function()
    async def boom() -> None:
        raise ValueError("boom " + "x")

    server.register_function("boom_process", executor="process")(handlers.fail)
    return server


@pytest.fixture
def everything(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    return caplog


def attempt(port: int, data: bytes) -> None:
    with Raw(port, timeout=3) as raw:
        raw.sock.sendall(data)
        with contextlib.suppress(EOFError, ConnectionError, TimeoutError):
            raw.frame()


def auth(user: Any, password: Any, **extra: Any) -> bytes:
    return pack({"MPRPC": "0.1", "AUTH": {"USERNAME": user, "PASSWORD": password}, **extra}) + SEP


def test_password_never_logged(everything: pytest.LogCaptureFixture) -> None:
    with serving(build()) as running:
        port = running.server.port
        for data in [
            auth("bob", PASSWORD + "x"),
            auth(PASSWORD, PASSWORD),  # the password typed as the user name
            auth("bob", PASSWORD + "\n" + PASSWORD),
            auth("bob", [PASSWORD]),
            auth("bob", PASSWORD * 300),  # over max_auth_message_size
            auth("bob", PASSWORD, FEATURES=[PASSWORD, 5]),
            pack({"MPRPC": "9.9", "AUTH": {"USERNAME": "bob", "PASSWORD": PASSWORD}}) + SEP,
            b"\x82\xa5MPRPC\xa30.1\xa4AUTH\x82\xa8USERNAME\xa3bob\xa8PASSWORD\xae"
            + PASSWORD.encode()
            + b"\xc1"
            + SEP,
            ('{"MPRPC": "0.1", "AUTH": {"USERNAME": "bob", "PASSWORD": "' + PASSWORD + '"').encode()
            + SEP,
        ] + [auth("bob", PASSWORD + "y")] * 4:
            attempt(port, data)
        with pytest.raises(LoginError) as info:
            RPC(f"tcp://eve:{PASSWORD}@127.0.0.1:{port}", timeout=3).connect()
        assert PASSWORD not in str(info.value) and PASSWORD not in repr(info.value)
    text = "\n".join(
        r.getMessage() + (str(r.exc_info) if r.exc_info else "") for r in everything.records
    )
    assert "failed login" in text
    assert PASSWORD not in text


def test_handler_exception_logged_once_with_call_details(
    everything: pytest.LogCaptureFixture,
) -> None:
    with serving(build()) as running, RPC(running.url_for("bob", PASSWORD), timeout=10) as rpc:
        for name in ("boom", "boom_process"):
            with pytest.raises(RPCRuntimeError):
                rpc.method(name)()
    errors = [r for r in everything.records if r.levelno >= logging.ERROR]
    assert len(errors) == 2
    for record, name in zip(errors, ("boom", "boom_process"), strict=True):
        message = record.getMessage()
        assert message.startswith(f"call {name} id=") and " from 127.0.0.1:" in message
        assert "Traceback" in message or record.exc_info


def test_peer_and_user_mistakes_are_not_errors(everything: pytest.LogCaptureFixture) -> None:
    with serving(build()) as running, Raw(running.server.port) as raw:
        raw.login("bob", PASSWORD, features=["metadata", "deadline", "cancel"])
        raw.call("a", "nope")  # 401
        raw.call("b", "boom", 1, 2)  # 402
        raw.call("c", "boom", METADATA={"k": 1})  # 400
        raw.call("d", "boom", DEADLINE=-1)  # 400
        raw.send({"ID": "e", "CANCEL": True})  # cancel of an unknown call
        raw.call("f", "system.nope")  # 406
        raw.call("g", "system.health", "x")
        codes = set()
        for _ in range(6):
            codes.add(raw.recv()["CODE"])
        assert {401, 402, 400, 406} <= codes
    assert not [r for r in everything.records if r.levelno >= logging.ERROR]


def test_nothing_per_call_without_accesslog(everything: pytest.LogCaptureFixture) -> None:
    server = new_server()

    @server.register_function()
    async def ping() -> str:
        return "pong"

    with serving(server) as running, RPC(running.url, timeout=5) as rpc:
        everything.clear()
        for _ in range(20):
            assert rpc.ping() == "pong"
        per_call = [r for r in everything.records if r.name.startswith("pymprpc")]
    assert per_call == []


@pytest.mark.logs_errors
def test_call_id_cannot_forge_lines_in_the_error_log(everything: pytest.LogCaptureFixture) -> None:
    forged = "x\nCRITICAL pymprpc.server: forged by the peer"
    with serving(build()) as running, Raw(running.server.port) as raw:
        raw.login("bob", PASSWORD)
        raw.call(forged, "boom")
        assert raw.recv()["CODE"] == 404
    errors = [r for r in everything.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    first_line = errors[0].getMessage().split("Traceback")[0]
    assert "\n" not in first_line.strip()
