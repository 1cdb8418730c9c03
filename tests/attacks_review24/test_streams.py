"""Unread streams, streams closed early, dropped streams."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from typing import Any

import pytest

from pymprpc import RPC, AsyncRPC, Server
from pymprpc.errors import ResultLimitError

from ._kit import arun, make_server, serving

LIMIT_TEXT = (
    "stream 'blobs' was cancelled: more than 65536 bytes of its items were not read while "
    "other calls used the connection; read it as it comes, give it a client of its own, "
    "or raise stream_buffer_size"
)


@pytest.mark.timeout(30)
def test_sync_unread_stream_with_other_calls_is_cancelled_with_documented_text() -> None:
    with serving(make_server()) as url, RPC(url, stream_buffer_size=65536, timeout=10) as rpc:
        stream = rpc.blobs(400, 4096)
        first = next(stream)
        for i in range(20):
            assert rpc.echo(i) == i
            time.sleep(0.02)
        got = [first]
        with pytest.raises(ResultLimitError) as info:
            for item in stream:
                got.append(item)
        assert str(info.value) == LIMIT_TEXT
        assert 1 < len(got) < 400
        assert [g[0] for g in got] == [i % 256 for i in range(len(got))]
        assert rpc.echo("after") == "after"


@pytest.mark.timeout(30)
def test_async_unread_stream_with_other_calls_is_cancelled_with_documented_text() -> None:
    async def main() -> None:
        async with AsyncRPC(url, stream_buffer_size=65536, timeout=10) as rpc:
            stream = await rpc.blobs(400, 4096)
            got = [await stream.__anext__()]
            for i in range(20):
                assert await rpc.echo(i) == i
                await asyncio.sleep(0.02)
            with pytest.raises(ResultLimitError) as info:
                async for item in stream:
                    got.append(item)
            assert str(info.value) == LIMIT_TEXT
            assert 1 < len(got) < 400
            assert [g[0] for g in got] == [i % 256 for i in range(len(got))]
            assert await rpc.echo("after") == "after"

    with serving(make_server()) as url:
        arun(main())


@pytest.mark.timeout(30)
def test_sync_unread_stream_alone_is_paused_not_cut() -> None:
    with serving(make_server()) as url, RPC(url, stream_buffer_size=65536, timeout=20) as rpc:
        stream = rpc.blobs(400, 4096)
        time.sleep(1.0)
        got = list(stream)
        assert len(got) == 400


@pytest.mark.timeout(30)
def test_async_unread_stream_alone_is_paused_not_cut() -> None:
    async def main() -> None:
        async with AsyncRPC(url, stream_buffer_size=65536, timeout=20) as rpc:
            stream = await rpc.blobs(400, 4096)
            await asyncio.sleep(1.0)
            got = [x async for x in stream]
            assert len(got) == 400

    with serving(make_server()) as url:
        arun(main())


def closing_server() -> tuple[Server, threading.Event]:
    server = Server(("127.0.0.1", 0))
    closed = threading.Event()

    @server.register_function()
    async def ticks() -> Any:
        try:
            i = 0
            while True:
                yield i
                i += 1
                await asyncio.sleep(0.01)
        finally:
            closed.set()

    @server.register_function()
    async def echo(x: Any) -> Any:
        return x

    return server, closed


@pytest.mark.timeout(30)
def test_sync_break_out_of_stream_cancels_it_on_server() -> None:
    server, closed = closing_server()
    with serving(server) as url, RPC(url) as rpc:
        for i in rpc.ticks():
            if i == 3:
                break
        assert closed.wait(5), "the server's generator still runs"
        assert rpc.echo(1) == 1


@pytest.mark.timeout(30)
def test_sync_close_unstarted_stream_cancels_it_on_server() -> None:
    server, closed = closing_server()
    with serving(server) as url, RPC(url) as rpc:
        stream = rpc.ticks()
        time.sleep(0.2)
        stream.close()
        assert closed.wait(5), "the server's generator still runs after close()"


@pytest.mark.timeout(30)
def test_sync_drop_unstarted_stream_cancels_it_on_server() -> None:
    server, closed = closing_server()
    with serving(server) as url, RPC(url) as rpc:
        stream = rpc.ticks()
        time.sleep(0.2)
        del stream
        gc.collect()
        assert closed.wait(5), "the server's generator still runs after the stream was dropped"


@pytest.mark.timeout(30)
def test_async_aclose_unstarted_stream_cancels_it_on_server() -> None:
    server, closed = closing_server()

    async def main() -> None:
        async with AsyncRPC(url) as rpc:
            stream = await rpc.ticks()
            await asyncio.sleep(0.2)
            await stream.aclose()
            for _ in range(100):
                if closed.is_set():
                    break
                await asyncio.sleep(0.05)
            assert closed.is_set()
            assert await rpc.echo(1) == 1

    with serving(server) as url:
        arun(main())


@pytest.mark.timeout(30)
def test_async_drop_unstarted_stream_cancels_it_on_server() -> None:
    server, closed = closing_server()

    async def main() -> None:
        async with AsyncRPC(url) as rpc:
            stream = await rpc.ticks()
            await asyncio.sleep(0.2)
            del stream
            gc.collect()
            for _ in range(100):
                if closed.is_set():
                    break
                await asyncio.sleep(0.05)
            assert closed.is_set()

    with serving(server) as url:
        arun(main())
