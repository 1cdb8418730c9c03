"""README **Health** and the shutdown paragraph of "### Server"; docs/protocol.md
"system.health" and "Shutdown"."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from pymprpc import RPC, Server
from pymprpc.errors import CancelledError, RequestError, RpcUnavailableException
from pymprpc.interceptors import AccessLog
from pymprpc.testing import serve_in_thread, sync_client_for

from .kit import Raw, Records, wait_until

ROOT = Path(__file__).resolve().parents[2]


def _server(**options: Any) -> Server:
    server = Server(("127.0.0.1", 0), **options)

    @server.register_function()
    async def nap(t: float) -> str:
        await asyncio.sleep(t)
        return "rested"

    @server.register_function()
    async def ok() -> str:
        return "ok"

    @server.register_function()
    async def shut() -> str:
        await server.close()
        return "closing"

    return server


def test_health_always_registered_without_introspection() -> None:
    """ "`system.health(service="")` is always registered: ... set per service with
    `server.health.set(name, status)`"; a name never set answers UNKNOWN."""
    server = _server()
    server.health.set("billing", "SERVING")
    server.health.set("search", "NOT_SERVING")
    with sync_client_for(server, RPC, timeout=10) as rpc:
        assert rpc.system.health() == "SERVING"
        assert rpc.system.health("") == "SERVING"
        assert rpc.system.health("billing") == "SERVING"
        assert rpc.system.health("search") == "NOT_SERVING"
        assert rpc.system.health("nobody-set-this") == "UNKNOWN"
        server.health.set("billing", "NOT_SERVING")
        assert rpc.system.health("billing") == "NOT_SERVING"


def test_health_set_refuses_unknown_status() -> None:
    """Statuses are "`"SERVING"`, `"NOT_SERVING"` or `"UNKNOWN"`": anything else is
    refused when set."""
    server = _server()
    with pytest.raises(ValueError):
        server.health.set("x", "READY")


def test_registering_a_service_leaves_it_unknown() -> None:
    """ "registering a service leaves its name `"UNKNOWN"` until you do"."""
    sys.path.insert(0, str(ROOT))
    try:
        from generated_examples.calculator.server import (  # type: ignore[import-not-found]
            CalculatorServicer,
            register_calculator,
        )
    finally:
        sys.path.remove(str(ROOT))

    class Impl(CalculatorServicer):  # type: ignore[misc]
        def add(self, a: int, b: int) -> int:
            return a + b

        async def slow_add(self, a: int, b: int = 1) -> int:
            return a + b

        async def count(self, n: int) -> Any:
            for i in range(n):
                yield i

        def area(self, shape: Any) -> float:
            return 0.0

        def old_add(self, a: int, b: int) -> int:
            return a + b

        def log(self, line: str) -> None:
            pass

        async def translate(self, shape: Any, dx: float = 0.0, dy: float = 0.0) -> Any:
            return shape

    server = Server(("127.0.0.1", 0), max_workers=1)
    register_calculator(server, Impl())
    with sync_client_for(server, RPC, timeout=10) as rpc:
        assert rpc.system.health("Calculator") == "UNKNOWN"
        assert rpc.add(1, 2) == 3


def test_health_service_not_a_string_is_400() -> None:
    """docs/protocol.md: "A `service` that is not a string is `400`"."""
    server = _server()
    with sync_client_for(server, RPC, timeout=10) as rpc:
        for bad in (1, None, ["x"], {"a": 1}, b"x"):
            with pytest.raises(RequestError):
                rpc.system.health(bad)
        assert rpc.system.health() == "SERVING"


def test_health_not_serving_once_shutting_down_for_every_name() -> None:
    """ "every name answers `"NOT_SERVING"` once the server starts shutting down", and
    system.health is answered, not refused with 503, meanwhile."""
    server = _server(grace_period=5)
    server.health.set("billing", "SERVING")
    with (
        serve_in_thread(server) as running,
        RPC(running.url, timeout=10) as rpc,
        RPC(running.url, timeout=10) as probe,
    ):
        out: list[Any] = []
        t = threading.Thread(target=lambda: out.append(rpc.nap(1.5)))
        t.start()
        wait_until(lambda: server.running_call_count == 1, 5, "the call")
        running.loop.call_soon_threadsafe(lambda: asyncio.ensure_future(server.close()))
        wait_until(lambda: server.draining, 5, "the drain")
        assert probe.system.health() == "NOT_SERVING"
        assert probe.system.health("billing") == "NOT_SERVING"
        assert probe.system.health("never-set") == "NOT_SERVING"
        with pytest.raises(RpcUnavailableException):
            probe.ok()
        t.join(10)
        assert out == ["rested"]


def _cut_at_shutdown(features: list[str] | None) -> tuple[Any, list[str]]:
    server = _server(grace_period=0.3, interceptors=[AccessLog()])
    options: dict[str, Any] = {"timeout": 10}
    if features is not None:
        options["features"] = features
    with Records("pymprpc.access", logging.INFO) as rec:
        with serve_in_thread(server) as running, RPC(running.url, **options) as rpc:
            out: list[Any] = []

            def call() -> None:
                try:
                    out.append(rpc.nap(30))
                except BaseException as exc:  # noqa: BLE001
                    out.append(exc)

            t = threading.Thread(target=call)
            t.start()
            wait_until(lambda: server.running_call_count == 1, 5, "the call")
            server.stop()
            t.join(10)
        wait_until(lambda: rec.records, 5, "the access record")
    return out[0], [r.getMessage() for r in rec.records]


def test_shutdown_cancels_leftover_with_407_and_accesslog_says_407() -> None:
    """ "then cancels what is left (answered 407...)" and AccessLog records "the code the
    client got"."""
    error, lines = _cut_at_shutdown(None)
    assert isinstance(error, CancelledError), error
    assert any("-> 407" in line for line in lines), lines


def test_shutdown_cancels_leftover_with_503_without_cancel_and_accesslog_says_503() -> None:
    """ "(answered 407, or 503 to clients without `cancel` ...)"; AccessLog: "one record
    per call" with the code its client got (README: "to record the code the client got,
    report from the call's end ... as `AccessLog` ... do[es]")."""
    error, lines = _cut_at_shutdown([])
    assert isinstance(error, RpcUnavailableException), error
    assert any("-> 503" in line for line in lines), lines


def test_close_from_handler_answers_that_call() -> None:
    """ "`close()` from a handler (it then starts the shutdown and returns, and the
    handler's call is answered like any other)"."""
    server = _server(grace_period=5)
    with serve_in_thread(server) as running, RPC(running.url, timeout=10) as rpc:
        assert rpc.shut() == "closing"
        wait_until(lambda: not server.running, 10, "the server to stop")


def test_calls_arriving_during_drain_get_503_with_their_id() -> None:
    """ "answers calls that arrive meanwhile with 503" (docs/protocol.md: "(carrying their
    ID)")."""
    server = _server(grace_period=5)
    with serve_in_thread(server) as running, RPC(running.url, timeout=10) as rpc:
        raw = Raw(server.port)
        raw.login()
        t = threading.Thread(target=lambda: rpc.nap(1.0))
        t.start()
        wait_until(lambda: server.running_call_count == 1, 5, "the call")
        running.loop.call_soon_threadsafe(lambda: asyncio.ensure_future(server.close()))
        wait_until(lambda: server.draining, 5, "the drain")
        reply = raw.call("late-1", "ok")
        raw.close()
        t.join(10)
    assert reply["CODE"] == 503 and reply["MESSAGE"]["ID"] == "late-1", reply


def test_healthcheck_prints_readme_lines() -> None:
    """The README's printed lines for `python -m pymprpc.healthcheck --user bob
    --password b-pw` are what it prints."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("its output, for a server with the account bob/b-pw) -->\n```\n", 1)[1]
    expected = block.split("```", 1)[0]
    env_path = str(ROOT / "runtime")
    out = subprocess.run(
        [sys.executable, "-m", "pymprpc.healthcheck", "--user", "bob", "--password", "b-pw"],
        capture_output=True,
        text=True,
        timeout=20,
        env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin"},
        check=True,
    ).stdout
    assert out == expected


def test_healthcheck_exchange_passes_only_on_serving() -> None:
    """ "pass only on a `"SERVING"` reply" (`--service NAME`): the check's bytes sent to a
    real server; the last expect matches SERVING and not NOT_SERVING/UNKNOWN."""
    from pymprpc.healthcheck import check_messages

    server = _server()
    server.health.set("up", "SERVING")
    server.health.set("down", "NOT_SERVING")
    needle = bytes.fromhex("a753455256494e47")
    with serve_in_thread(server):
        for service, passes in (("", True), ("up", True), ("down", False), ("unset", False)):
            auth, call = check_messages(service=service)
            with Raw(server.port) as raw:
                raw.sock.sendall(auth)
                raw.recv()
                start = len(raw.buf)
                raw.sock.sendall(call)
                time.sleep(0.05)
                reply = raw.recv()
                assert reply["CODE"] == 200
                del start
            import msgpack

            encoded = msgpack.packb(reply)
            assert (needle in encoded) is passes, (service, reply)
