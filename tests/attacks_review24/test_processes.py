"""Forking with a connected client; an AsyncRPC reused across asyncio.run() calls."""

from __future__ import annotations

import asyncio
import os
import pickle
import select
from collections.abc import Callable
from typing import Any

import pytest

from pymprpc import RPC, AsyncRPC
from pymprpc.errors import ConnectionLostError

from ._kit import server_process


def in_child(fn: Callable[[], Any], timeout: float = 15) -> Any:
    """Run `fn` in a forked child; its value (or ('error', type, text))."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 0
        try:
            try:
                out: Any = ("value", fn())
            except BaseException as exc:  # noqa: BLE001
                out = ("error", type(exc).__name__, str(exc))
            os.write(write, pickle.dumps(out))
        except BaseException:  # noqa: BLE001
            code = 1
        finally:
            os._exit(code)
    os.close(write)
    try:
        ready, _, _ = select.select([read], [], [], timeout)
        if not ready:
            os.kill(pid, 9)
            raise AssertionError("the child hung")
        data = b""
        while chunk := os.read(read, 65536):
            data += chunk
    finally:
        os.close(read)
        os.waitpid(pid, 0)
    return pickle.loads(data)


@pytest.mark.timeout(30)
def test_sync_fork_child_connects_again_parent_keeps_its_connection() -> None:
    with server_process() as url, RPC(url, timeout=5) as rpc:
        assert rpc.echo("parent") == "parent"

        def child() -> Any:
            got = [rpc.echo(i) for i in range(20)]
            rpc.close()
            return got

        assert in_child(child) == ("value", list(range(20)))
        assert rpc.connected
        assert [rpc.echo(i) for i in range(20)] == list(range(20))


@pytest.mark.timeout(30)
def test_sync_fork_during_stream() -> None:
    with server_process() as url, RPC(url, timeout=10) as rpc:
        stream = rpc.count(50, 0.01)
        first = next(stream)

        def child() -> Any:
            try:
                list(stream)
            except ConnectionLostError as exc:
                return ("lost", str(exc), rpc.echo("child"))
            return "no error"

        got = in_child(child)
        assert got[0] == "value" and got[1][0] == "lost", got
        assert "belongs to the parent process" in got[1][1]
        assert got[1][2] == "child"
        assert [first, *stream] == list(range(50))


@pytest.mark.timeout(30)
def test_async_fork_child_connects_again_on_its_loop() -> None:
    with server_process() as url:
        rpc = AsyncRPC(url, timeout=5)
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(rpc.connect())
            assert loop.run_until_complete(rpc.echo(1)) == 1

            def child() -> Any:
                async def main() -> Any:
                    got = [await rpc.echo(i) for i in range(5)]
                    await rpc.close()
                    return got

                return asyncio.run(main())

            assert in_child(child) == ("value", list(range(5)))
            assert rpc.connected
            assert loop.run_until_complete(rpc.echo(2)) == 2
            loop.run_until_complete(rpc.close())
        finally:
            loop.close()


@pytest.mark.timeout(30)
def test_async_rpc_across_successive_asyncio_runs() -> None:
    with server_process() as url:
        rpc = AsyncRPC(url, timeout=5)
        asyncio.run(rpc.connect())
        assert asyncio.run(rpc.echo(1)) == 1  # connects again on this loop
        assert asyncio.run(rpc.echo(2)) == 2

        asyncio.run(rpc.close())


def _stream_from_an_ended_loop(url: str) -> tuple[AsyncRPC, Any]:
    """A client whose stream was opened (one item read) on a loop that has ended."""
    rpc = AsyncRPC(url)

    async def open_stream() -> Any:
        await rpc.connect()
        stream = await rpc.count(100, 0.05)
        assert await stream.__anext__() == 0
        return stream

    return rpc, asyncio.run(open_stream())


async def _read_rest(stream: Any) -> Any:
    try:
        return [x async for x in stream]
    except ConnectionLostError as exc:
        return str(exc)


@pytest.mark.timeout(30)
def test_async_stream_of_ended_loop_fails_after_a_call_on_the_new_loop() -> None:
    with server_process() as url:
        rpc, stream = _stream_from_an_ended_loop(url)

        async def main() -> Any:
            assert await rpc.echo(1) == 1
            return await asyncio.wait_for(_read_rest(stream), 5)

        got = asyncio.run(main())
        assert isinstance(got, str) and "event loop" in got and "is closed" in got, got
        asyncio.run(rpc.close())


@pytest.mark.timeout(30)
def test_async_stream_of_ended_loop_read_first_on_the_new_loop_does_not_hang() -> None:
    with server_process() as url:
        rpc, stream = _stream_from_an_ended_loop(url)

        async def main() -> Any:
            try:
                return await asyncio.wait_for(_read_rest(stream), 5)
            except TimeoutError:
                return "hung"

        got = asyncio.run(main())
        asyncio.run(rpc.close())
        assert isinstance(got, str) and "event loop" in got and "is closed" in got, got
