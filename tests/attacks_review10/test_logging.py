"""The server's log: a result that cannot be sent (405) logged at ERROR, peer-chosen
IDs and method names escaped and cut (README, "Logging")."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest
from attacks_review9.kit import Raw

from attacks_review10.kit import kept_log
from pymprpc import RPC, Server
from pymprpc.errors import ResultLimitError
from pymprpc.interceptors import AccessLog
from pymprpc.testing import serve_in_thread


def _server(**options: Any) -> Server:
    options.setdefault("grace_period", 1.0)
    server = Server(("127.0.0.1", 0), **options)

    @server.register_function()
    async def ping() -> str:
        return "pong"

    @server.register_function()
    async def unencodable() -> Any:
        return object()

    @server.register_function()
    async def oversized() -> str:
        return "x" * 200_000

    return server


def _errors(kept: Any) -> list[str]:
    return [r.getMessage() for r in kept.records if r.levelno >= logging.ERROR]


@pytest.mark.timeout(20)
@pytest.mark.logs_errors
def test_unsendable_result_logged_once_naming_the_call() -> None:
    with kept_log("pymprpc.server.handler") as log:
        with serve_in_thread(_server()) as running, RPC(running.url, timeout=5) as rpc:
            with pytest.raises(ResultLimitError):
                rpc.unencodable()
            assert rpc.ping() == "pong"
        errors = _errors(log)
    assert len(errors) == 1 and "call unencodable id=" in errors[0], errors


@pytest.mark.timeout(20)
@pytest.mark.logs_errors
def test_unencodable_kept_result_is_logged() -> None:
    with kept_log("pymprpc.server.handler") as log:
        with serve_in_thread(_server()) as running, RPC(running.url, timeout=5) as rpc:
            id = rpc.delay("unencodable")
            time.sleep(0.2)
            with pytest.raises(ResultLimitError):
                rpc.call("system.getresult", id)
        errors = _errors(log)
    assert any("unencodable" in e for e in errors), errors


@pytest.mark.timeout(20)
@pytest.mark.logs_errors
def test_oversized_kept_result_log_names_its_method() -> None:
    with kept_log("pymprpc.server.handler") as log:
        server = _server(max_message_size=100_000)
        with serve_in_thread(server) as running, RPC(running.url, timeout=5) as rpc:
            id = rpc.delay("oversized")
            time.sleep(0.2)
            with pytest.raises(ResultLimitError):
                rpc.call("system.getresult", id)
        errors = _errors(log)
    assert len(errors) == 1, errors
    assert "oversized" in errors[0] and id in errors[0], errors


@pytest.mark.timeout(20)
def test_access_log_escapes_id_and_method() -> None:
    with kept_log("review10.access") as access:
        server = _server(interceptors=[AccessLog(logger=access.logger)])
        with serve_in_thread(server), Raw(server.address[1]) as raw:
            raw.login(features=["length-framing"])
            forged = "x -> 200 in 0.1ms\nping id=forged peer=10.0.0.1:1 user=admin"
            raw.call(forged + "\u2028" + "y" * 1000, "ping")
            assert raw.recv()["CODE"] == 200
            time.sleep(0.2)
        lines = access.messages()
    assert len(lines) == 1
    assert "\n" not in lines[0] and "\u2028" not in lines[0]
    assert "(1060 characters)" in lines[0]


@pytest.mark.timeout(20)
def test_oneway_failure_line_is_cut() -> None:
    with kept_log("pymprpc.server.handler") as log:
        server = _server()
        with serve_in_thread(server), Raw(server.address[1]) as raw:
            raw.login(features=["oneway", "length-framing"])
            raw.call("i1", "no.such." + "x" * 50_000, ONEWAY=True)
            raw.call("i2", "ping")
            assert raw.recv()["CODE"] == 200
            time.sleep(0.2)
        lines = [m for m in log.messages() if "oneway" in m]
    assert len(lines) == 1
    assert len(lines[0]) < 2000, len(lines[0])
