"""Feature `oneway`: a fire-and-forget call is sent with ONEWAY, runs, and occupies no
kept-results slot (issue 11: a busy oneway method must not evict results other callers
deliberately kept). Without the feature (an older peer) it falls back to RETURN false."""

from __future__ import annotations

import asyncio
import threading

import pytest

from helpers import ServerThread, arun, wait_for
from pymprpc.client import RPC, AsyncRPC
from pymprpc.protocol import Feature
from pymprpc.server import Server


@pytest.fixture
def srv() -> ServerThread:
    server = Server(("127.0.0.1", 0), kept_results=2)
    seen: list[int] = []
    lock = threading.Lock()

    @server.register_function(executor="thread")
    def record(n: int) -> int:
        with lock:
            seen.append(n)
        return n

    server.seen = seen  # type: ignore[attr-defined]
    server.register_introspection_functions()
    return ServerThread(server)


def test_oneway_calls_do_not_evict_kept_results(srv: ServerThread) -> None:
    with srv, RPC(srv.url) as rpc:
        assert rpc._conn is not None and Feature.ONEWAY in rpc._conn.features
        kept = rpc.delay("record", -1)
        wait_for(lambda: -1 in srv.server.seen)  # type: ignore[attr-defined]
        for n in range(20):  # with RETURN false, these would take both slots many times
            rpc.notify("record", n)
        wait_for(lambda: len(srv.server.seen) == 21)  # type: ignore[attr-defined]
        assert rpc.system.getresult(kept) == -1


def test_async_client_notifies_too(srv: ServerThread) -> None:
    async def main() -> None:
        async with AsyncRPC(srv.url) as rpc:
            kept = await rpc.delay("record", -1)
            for n in range(10):
                assert await rpc.notify("record", n) is None
            await rpc.record(99)  # calls on one connection start in order
            assert await rpc.system.getresult(kept) == -1
            # They run on threads, so record(99) may finish first: waited for while
            # connected, as a disconnect cancels those past kept_results=2 that have not
            # started yet (docs/protocol.md, oneway).
            seen = srv.server.seen  # type: ignore[attr-defined]
            await asyncio.to_thread(wait_for, lambda: len(seen) == 12)

    with srv:
        arun(main())


def test_without_the_feature_notify_falls_back_to_return_false(srv: ServerThread) -> None:
    no_oneway = [f for f in Feature if f is not Feature.ONEWAY]
    with srv, RPC(srv.url, features=no_oneway) as rpc:
        assert rpc._conn is not None and Feature.ONEWAY not in rpc._conn.features
        rpc.notify("record", 7)
        wait_for(lambda: 7 in srv.server.seen)  # type: ignore[attr-defined]


def test_the_request_carries_oneway_only_when_negotiated() -> None:
    from pymprpc.protocol import messages

    assert messages.call("i", "m", [], {}, False, None, oneway=True)["ONEWAY"] is True
    assert "RETURN" not in messages.call("i", "m", [], {}, False, None, oneway=True)
    raw = {"ID": "i", "METHOD": "m", "ONEWAY": True}
    request = messages.parse_call(raw, False, accept_oneway=False)
    assert not request.oneway and request.returns  # not negotiated: an ordinary call
    request = messages.parse_call(raw, False, accept_oneway=True)
    assert request.oneway and not request.returns
