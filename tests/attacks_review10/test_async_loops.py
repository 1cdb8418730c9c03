"""An AsyncRPC used by one event loop after another (`AsyncRPC._leave_closed_loop`):
successive asyncio.run() calls in a script of their own (a fresh interpreter, so that no
state of the test process's loops is involved)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from attacks_review10.kit import run_script
from pymprpc import Server
from pymprpc.testing import RunningServer, serve_in_thread


def _server() -> Server:
    server = Server(("127.0.0.1", 0), grace_period=1.0)

    @server.register_function()
    async def ping() -> str:
        return "pong"

    @server.register_function()
    async def numbers(n: int):  # type: ignore[no-untyped-def]
        for i in range(n):
            yield i
            await asyncio.sleep(0.05)

    return server


@pytest.fixture
def running() -> Iterator[RunningServer]:
    with serve_in_thread(_server()) as running:
        yield running


PLAIN_RUNS = """
    import asyncio, sys
    from pymprpc import AsyncRPC

    rpc = AsyncRPC(sys.argv[1], timeout=3, heart_beat=0.2)

    async def first():
        await rpc.connect()
        return await rpc.ping()

    async def again():
        await asyncio.sleep(0.3)  # the new connection's heartbeat runs on this loop
        return [await rpc.ping(), await rpc.ping()]

    print(asyncio.run(first()), asyncio.run(again()), asyncio.run(again()), flush=True)
"""


@pytest.mark.timeout(30)
def test_plain_calls_and_heartbeat_across_runs(running: RunningServer) -> None:
    done = run_script(PLAIN_RUNS, running.url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["pong", "['pong',", "'pong']", "['pong',", "'pong']"]


STREAM_LEFT_OPEN = """
    import asyncio, sys
    from pymprpc import AsyncRPC

    rpc = AsyncRPC(sys.argv[1], timeout=3)
    kept = []

    async def first():
        await rpc.connect()
        stream = await rpc.numbers(1000)
        kept.append(stream)  # still referenced (a fixture, a traceback, a module global)
        return await anext(stream)

    async def again():
        out = []
        for _ in range(2):
            try:
                async with asyncio.timeout(5):
                    out.append(await rpc.ping())
            except BaseException as exc:
                out.append(f"{type(exc).__name__}")
        return out

    print(asyncio.run(first()), asyncio.run(again()), flush=True)
"""


@pytest.mark.timeout(30)
def test_calls_on_a_new_loop_after_a_stream_was_left_open(running: RunningServer) -> None:
    done = run_script(STREAM_LEFT_OPEN, running.url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0", "['pong',", "'pong']"], done.stdout


CLOSE_ON_NEW_LOOP = """
    import asyncio, sys
    from pymprpc import AsyncRPC

    rpc = AsyncRPC(sys.argv[1], timeout=3)

    async def call():
        try:
            return await rpc.ping()
        except Exception as exc:
            return type(exc).__name__

    async def same_loop():
        await rpc.connect()
        await rpc.close()
        return await call()

    async def connect():
        await rpc.connect()

    async def close_then_call():
        await rpc.close()
        return await call()

    a = asyncio.run(same_loop())
    asyncio.run(connect())
    b = asyncio.run(close_then_call())
    print(a, b, flush=True)
"""


@pytest.mark.timeout(30)
def test_close_on_a_new_loop_is_a_close_by_the_user(running: RunningServer) -> None:
    done = run_script(CLOSE_ON_NEW_LOOP, running.url)
    assert done.returncode == 0, done.stderr
    same, new = done.stdout.split()
    assert same == "ConnectionLostError"
    assert new == same


CONNECT_CUT_SHORT = """
    import asyncio, socket, sys, time
    from pymprpc import AsyncRPC

    silent = socket.socket()  # accepts TCP connections, never answers the login
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    rpc = AsyncRPC(f"tcp://127.0.0.1:{silent.getsockname()[1]}", connect_timeout=0.5)

    async def first():
        try:
            await asyncio.wait_for(rpc.connect(), 0.05)  # the connect goes on, shielded
        except TimeoutError:
            return "timeout"

    async def again():
        started = time.monotonic()
        try:
            await rpc.connect()
        except Exception as exc:
            return f"{type(exc).__name__} {time.monotonic() - started < 2}"

    print(asyncio.run(first()), asyncio.run(again()), flush=True)
"""


@pytest.mark.timeout(30)
def test_a_connect_cut_short_by_the_end_of_its_loop() -> None:
    done = run_script(CONNECT_CUT_SHORT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["timeout", "ConnectionLostError", "True"], done.stdout
