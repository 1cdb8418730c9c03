"""Connections that end between calls, and heartbeats, for both clients."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from service import url

from helpers import OldServer, ServerThread, arun, send, tls_contexts, wait_for
from pymprpc.client import RPC, AsyncRPC
from pymprpc.errors import ConnectionLostError, TimeoutException


def connections(srv: ServerThread) -> int:
    return srv.call_in_loop(lambda: srv.server.connection_count)


def test_sync_client_reconnects_after_an_idle_close(serve: Callable[..., ServerThread]) -> None:
    from concurrent.futures import ThreadPoolExecutor

    srv = serve(timeout=0.3)
    with RPC(url(srv)) as rpc:
        assert rpc.add(1, 2) == 3
        wait_for(lambda: not rpc.connected)
        with ThreadPoolExecutor(4) as pool:  # threads arriving together share one
            assert list(pool.map(lambda i: rpc.add(i, i), range(8))) == [2 * i for i in range(8)]
        assert connections(srv) == 1
        wait_for(lambda: not rpc.connected)  # the server closed it: idle
        assert rpc.add(2, 3) == 5  # connected again, transparently
        assert rpc.connected
        wait_for(lambda: not rpc.connected)
        assert list(rpc.count(3)) == [0, 1, 2]


def test_async_client_reconnects_after_an_idle_close(serve: Callable[..., ServerThread]) -> None:
    srv = serve(timeout=0.3)

    async def main() -> None:
        async with AsyncRPC(url(srv)) as rpc:
            assert await rpc.add(1, 2) == 3
            while rpc.connected:
                await asyncio.sleep(0.01)
            assert await rpc.add(2, 3) == 5
            while rpc.connected:
                await asyncio.sleep(0.01)
            assert await rpc.delay("add", 1, 1)
            while rpc.connected:
                await asyncio.sleep(0.01)
            # Calls arriving together share one new connection.
            assert await asyncio.gather(*(rpc.add(i, i) for i in range(10))) == [
                2 * i for i in range(10)
            ]
            assert connections(srv) == 1

    arun(main())


def test_no_reconnect_after_close(srv: ServerThread) -> None:
    rpc = RPC(url(srv)).connect()
    rpc.close()
    with pytest.raises(ConnectionLostError, match="not connected"):
        rpc.add(1, 1)


def test_a_call_in_flight_gets_the_servers_error_and_no_silent_reconnect(
    fake: Callable[..., OldServer],
) -> None:
    def idle_close(conn: socket.socket, msg: dict[str, Any]) -> None:
        send(conn, {"MPRPC": "0.1", "CODE": 504})
        conn.shutdown(socket.SHUT_RDWR)

    server = fake(idle_close)
    with RPC(server.url) as rpc:
        with pytest.raises(TimeoutException, match="idle"):
            rpc.first()
        # The call in flight failed: the next one says so instead of reconnecting.
        with pytest.raises(ConnectionLostError, match="not connected"):
            rpc.second()


def test_sync_heartbeat_keeps_a_connection_alive(serve: Callable[..., ServerThread]) -> None:
    srv = serve(timeout=1.0)
    with RPC(url(srv), heart_beat=0.2) as rpc:
        assert rpc.add(1, 1) == 2
        time.sleep(2.5)  # well past the idle timeout: only the pings keep it
        assert rpc.connected
        assert connections(srv) == 1
        assert rpc.add(1, 2) == 3


def test_sync_heartbeat_without_pong_marks_connection_dead(
    fake: Callable[..., OldServer],
) -> None:
    server = fake(lambda conn, msg: None)  # swallows pings and calls alike
    with RPC(server.url, heart_beat=0.2) as rpc:
        with pytest.raises(ConnectionLostError, match="no heartbeat reply"):
            rpc.anything()
        assert not rpc.connected
    assert any(msg.get("HEARTBEAT") == "ping" for msg in server.seen)


def test_a_blocking_client_dropped_without_close_closes_its_connection(srv: ServerThread) -> None:
    import gc

    rpc = RPC(url(srv)).connect()
    assert rpc.add(1, 1) == 2
    assert connections(srv) == 1
    del rpc
    gc.collect()  # the proxy cache is a cycle; the reader thread holds no reference
    wait_for(lambda: connections(srv) == 0)


def test_sync_heartbeat_over_tls(serve: Callable[..., ServerThread], tmp_path: Path) -> None:
    server_ctx, client_ctx = tls_contexts(tmp_path)
    srv = serve(ssl=server_ctx, timeout=0.6)
    with RPC(url(srv), ssl=client_ctx, heart_beat=0.15) as rpc:
        time.sleep(1.5)  # well past the idle timeout: only the pings keep it
        assert rpc.connected
        assert [rpc.add(i, 1) for i in range(3)] == [1, 2, 3]
        assert connections(srv) == 1


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", ["asyncio", "uvloop"])
def test_an_async_client_outlives_its_event_loop(srv: ServerThread, kind: str) -> None:
    """A module-level client used by one `asyncio.run()` after another (or by a test's
    loop after another's): each new loop connects again, as after an idle close. Before,
    the second loop's call raised "got Future attached to a different loop", and
    connect() or close() "Event loop is closed"."""
    if kind == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        run: Callable[[Any], Any] = uvloop.run
    else:
        run = asyncio.run
    rpc = AsyncRPC(url(srv), timeout=5, heart_beat=30)

    async def first() -> None:
        await rpc.connect()
        assert await rpc.add(1, 2) == 3

    async def call() -> None:
        assert await rpc.add(2, 3) == 5
        assert [i async for i in await rpc.count(3)] == [0, 1, 2]
        assert await asyncio.gather(*(rpc.add(i, i) for i in range(5))) == [2 * i for i in range(5)]

    async def connect_then_call() -> None:
        await rpc.connect()
        assert rpc.connected
        assert await rpc.add(3, 4) == 7

    async def stream_then_close() -> None:
        assert [i async for i in await rpc.count(2)] == [0, 1]
        await rpc.close()
        assert not rpc.connected

    run(first())
    run(call())
    run(connect_then_call())
    run(stream_then_close())
    run(connect_then_call())  # connect() after close() on an ended loop
    run(rpc.close())


def test_an_async_client_closed_with_its_loop_stays_closed(srv: ServerThread) -> None:
    """close() then the loop ends: a later loop's call is refused as before (it does not
    connect again by itself)."""
    rpc = AsyncRPC(url(srv), timeout=5)

    async def use() -> None:
        async with rpc:
            assert await rpc.add(1, 2) == 3

    asyncio.run(use())

    async def call() -> None:
        with pytest.raises(ConnectionLostError, match="not connected"):
            await rpc.add(1, 2)

    asyncio.run(call())
