"""Server and client options as documented: offered features, welcome fields, compression,
heartbeats against the idle timeout, deadlines and cancellation reaching pool workers,
interceptors seeing kept and oneway calls."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from pymprpc import RPC, AsyncRPC, errors
from pymprpc.context import CallContext
from pymprpc.testing import RunningServer

from .clients import CLIENTS
from .wire import ALL_FEATURES, Wire, new_id, ok

pytestmark = pytest.mark.timeout(60)


def test_server_features_restrict_what_is_offered(serve: Callable[..., RunningServer]) -> None:
    port = serve(features=["cancel", "deadline"]).server.address[1]
    with Wire(port, features=ALL_FEATURES) as w:
        assert w.welcome is not None and sorted(w.welcome["FEATURES"]) == ["cancel", "deadline"]
        assert not w.length
        id = new_id()
        w.send(w.request("add", 1, 2, id=id, ONEWAY=True, METADATA={"want": "x"}))
        assert w.recv() == ok(id, 3)  # oneway and metadata not negotiated: ignored


def test_welcome_version_and_description(serve: Callable[..., RunningServer]) -> None:
    port = serve(version="1.2.3", description="a service", idle_timeout=0).server.address[1]
    with Wire(port) as w:
        assert w.welcome is not None
        assert (w.welcome["VERSION"], w.welcome["DESC"], w.welcome["TIMEOUT"]) == (
            "1.2.3",
            "a service",
            0,
        )


@pytest.mark.parametrize("kind", list(CLIENTS))
@pytest.mark.parametrize("compression", ["zlib", "bz2", "lzma"])
def test_compressed_clients(server: RunningServer, kind: str, compression: str) -> None:
    client = CLIENTS[kind](server.url, compression=compression)
    try:
        assert client.run(lambda rpc: rpc.echo("é" * 3000, b"\x00" * 100)) == [
            ["é" * 3000, b"\x00" * 100],
            {},
        ]
        assert client.run(lambda rpc: rpc.count(3)) == [0, 1, 2]
        with pytest.raises(errors.NotFindError):
            client.run(lambda rpc: rpc.nope())
        fields = client.run(lambda rpc: rpc.ctx_coro())
        assert fields["method"] == "ctx_coro"
    finally:
        client.close()


@pytest.mark.parametrize("method", ["nap_thread", "nap_process"])
def test_deadline_answers_408_for_pool_calls(server: RunningServer, method: str) -> None:
    with Wire(server.server.address[1], features=ALL_FEATURES) as w:
        id = new_id()
        w.send(w.request(method, 5.0, id=id, DEADLINE=0.2))
        reply = w.recv()
        assert reply["CODE"] == 408 and reply["MESSAGE"]["ID"] == id
        id2 = new_id()
        w.send(w.request(method.replace("nap", "add"), 1, 2, id=id2))
        assert w.recv() == ok(id2, 3)  # the pool serves on (a killed worker is replaced)


@pytest.mark.parametrize("method", ["nap_thread", "nap_process"])
def test_cancel_of_pool_calls_sends_nothing(server: RunningServer, method: str) -> None:
    with Wire(server.server.address[1], features=ALL_FEATURES) as w:
        id = new_id()
        w.send(w.request(method, 0.5, id=id))
        w.send({"MPRPC": "0.1", "ID": id, "CANCEL": True})
        # The nap would have ended by now; nothing may come for its ID.
        assert w.call("sleep", 0.8)["MESSAGE"]["RESULT"] == 0.8
        assert w.ping() == {"MPRPC": "0.1", "CODE": 101, "HEARTBEAT": "pong"}


def test_heartbeat_keeps_the_same_connection(serve: Callable[..., RunningServer]) -> None:
    # Generous margins: a pong later than heart_beat would mark the connection dead.
    running = serve(idle_timeout=1.5)
    with RPC(running.url, heart_beat=0.5) as rpc:
        before = rpc.ctx_coro()["peer"]
        time.sleep(2.5)  # the condition under test: longer than the idle timeout
        assert rpc.ctx_coro()["peer"] == before

    async def main() -> tuple[Any, Any]:
        async with AsyncRPC(running.url, heart_beat=0.5) as arpc:
            first = (await arpc.ctx_coro())["peer"]
            await asyncio.sleep(2.5)
            return first, (await arpc.ctx_coro())["peer"]

    first, second = asyncio.run(asyncio.wait_for(main(), 30))
    assert first == second


@pytest.mark.parametrize("kind", list(CLIENTS))
def test_idle_close_between_calls_reconnects_transparently(
    serve: Callable[..., RunningServer], kind: str
) -> None:
    # 1 s: long enough that the calls after the reconnection are not themselves cut by
    # the timeout on a loaded machine (0.3 s was, once in a full run).
    running = serve(idle_timeout=1.0)
    client = CLIENTS[kind](running.url)
    try:
        before = client.run(lambda rpc: rpc.ctx_coro())["peer"]
        # Wait on the server, bounded, for the idle connection to be closed. The observer
        # is itself subject to the idle timeout: on a loaded machine it may be closed
        # between two of its calls, so each check opens a fresh one (counted as 1).
        closed = False
        for _ in range(300):
            with Wire(running.server.address[1]) as observer:
                n = observer.call("system.lenConnections")
                if n.get("CODE") == 200 and n["MESSAGE"]["RESULT"] == 1:
                    closed = True
                    break
                observer.call("wait_event", "never:" + new_id(), 0.05)
        assert closed, "the idle client connection was never closed by the server"
        after = client.run(lambda rpc: rpc.ctx_coro())["peer"]
        assert after != before and client.run(lambda rpc: rpc.add(1, 2)) == 3
    finally:
        client.close()


def test_server_interceptors_see_kept_and_oneway_calls(serve: Callable[..., RunningServer]) -> None:
    seen: list[tuple[str, bool]] = []

    async def record(ctx: CallContext, call_next: Any) -> Any:
        seen.append((ctx.method, ctx.returns))
        return await call_next(ctx)

    running = serve(interceptors=[record])
    key = new_id()
    with RPC(running.url) as rpc:
        kept = rpc.delay("add", 1, 2)
        rpc.notify("bump", key)
        assert rpc.wait_event("bumped:" + key) is True
        assert rpc.system.getresult(kept) == 3
    methods = [m for m, _ in seen]
    assert methods == ["add", "bump", "wait_event", "system.getresult"]
    assert seen[0] == ("add", False)


def test_client_interceptors_see_delay_and_notify(server: RunningServer) -> None:
    # "Around every outgoing call": a delay() and a notify() too, told apart by ctx.kind.
    seen: list[tuple[str, str]] = []

    def record(ctx: Any, call_next: Any) -> Any:
        seen.append((ctx.kind, ctx.method))
        return call_next(ctx)

    with RPC(server.url, interceptors=[record]) as rpc:
        kept = rpc.delay("add", 1, 2)
        assert seen == [("delay", "add")]
        assert rpc.system.getresult(kept) == 3
        assert seen[1] == ("call", "system.getresult")
        assert rpc.notify("add", 3, 4) is None
        assert seen[2] == ("notify", "add")
