"""Limits, back-pressure and faults: the server survives and keeps serving."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from service import PASSWORD, USER, Probe, url

from helpers import RawClient, ServerThread, connections, pack, wait_for
from pymprpc.client import RPC, AsyncRPC
from pymprpc.errors import RPCRuntimeError
from pymprpc.protocol import SEPARATOR, Codec, Compression

V = {"MPRPC": "0.1"}


def still_serving(srv: ServerThread) -> None:
    with RPC(url(srv)) as rpc:
        assert rpc.coro_add(20, 22) == 42


def test_compression_bomb_is_refused(serve: Callable[..., ServerThread]) -> None:
    srv = serve(max_message_size=1024 * 1024)
    codec = Codec(compression=Compression.ZLIB)
    with RawClient(srv.port, encode=codec.encode, decode=codec.decode) as c:
        assert c.login(USER, PASSWORD)["CODE"] == 100
        bomb = zlib.compress(pack({**V, "ID": "b", "METHOD": "echo", "ARGS": ["\0" * 50_000_000]}))
        assert len(bomb) < 100_000  # small on the wire, 50 MB inflated
        c.send_raw(bomb + SEPARATOR)
        assert c.recv() == {**V, "CODE": 505}
        assert c.at_eof()
    still_serving(srv)


def server_write_buffers(srv: ServerThread) -> list[int]:
    def sizes() -> list[int]:
        return [
            h.transport.get_write_buffer_size()
            for h in connections(srv.server)
            if h.transport is not None
        ]

    return srv.call_in_loop(sizes)


def test_stream_to_a_slow_reader_is_paused_not_buffered(srv: ServerThread, probe: Probe) -> None:
    item = 16 * 1024
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.connect(("127.0.0.1", srv.port))
    sock.settimeout(10)
    c = RawClient.__new__(RawClient)
    c.sock, c.encode, c.buffer = sock, pack, b""
    c.decode = Codec().decode
    with c:
        assert c.login(USER, PASSWORD)["CODE"] == 100
        c.send({**V, "ID": "f", "METHOD": "firehose", "ARGS": [item]})
        # The reader reads nothing: the generator must stall once the buffers are full.
        last, stable_since = -1, time.monotonic()
        while time.monotonic() - stable_since < 0.5:
            if probe.produced != last:
                last, stable_since = probe.produced, time.monotonic()
            time.sleep(0.02)
            assert time.monotonic() - stable_since < 10
        buffered = sum(server_write_buffers(srv))
        # asyncio's default high-water mark is 64 KiB; one more item may be queued past it.
        assert buffered <= 64 * 1024 + 2 * (item + 64), buffered
        assert probe.produced * item < 32 * 1024 * 1024  # socket buffers, not unbounded
        # Reading again resumes the stream.
        for _ in range(200):
            c.recv_frame()
        wait_for(lambda: probe.produced > last)


def test_worker_killed_mid_call(srv: ServerThread, tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"

    async def main() -> None:
        async with AsyncRPC(url(srv)) as rpc:
            call = asyncio.ensure_future(rpc.pid_then_sleep(str(pid_file), 30))
            await asyncio.to_thread(
                wait_for, lambda: pid_file.exists() and pid_file.read_text() != ""
            )
            os.kill(int(pid_file.read_text()), signal.SIGKILL)
            try:
                await call
                raise AssertionError("the call should have failed")
            except RPCRuntimeError as exc:
                assert "worker process" in str(exc)
            assert await rpc.add(2, 3) == 5  # the pool recovered
            assert await rpc.pid() != os.getpid()

    asyncio.run(asyncio.wait_for(main(), 30))
    still_serving(srv)


def test_blocking_handler_does_not_block_other_clients(srv: ServerThread, probe: Probe) -> None:
    async def main() -> None:
        async with AsyncRPC(url(srv)) as slow, AsyncRPC(url(srv)) as fast:
            blocked = asyncio.ensure_future(slow.wait_release())
            started = time.monotonic()
            results = [await fast.coro_add(i, 1) for i in range(50)]
            assert results == [i + 1 for i in range(50)]
            assert not blocked.done()
            probe.release.set()
            assert await blocked == "released"
            assert time.monotonic() - started < 10

    asyncio.run(asyncio.wait_for(main(), 20))


def test_half_open_connection_is_reaped_by_idle_timeout(
    serve: Callable[..., ServerThread],
) -> None:
    srv = serve(timeout=0.3)
    c = RawClient(srv.port)
    assert c.login(USER, PASSWORD)["CODE"] == 100
    # The peer never says anything again (as if its host vanished): the server reaps it.
    wait_for(lambda: srv.call_in_loop(lambda: srv.server.connection_count) == 0)
    c.close()
    still_serving(srv)


def test_many_connections_come_and_go(srv: ServerThread) -> None:
    async def one(i: int) -> Any:
        async with AsyncRPC(url(srv)) as rpc:
            return await rpc.coro_add(i, i)

    async def main() -> list[Any]:
        return await asyncio.gather(*(one(i) for i in range(100)))

    assert asyncio.run(asyncio.wait_for(main(), 30)) == [2 * i for i in range(100)]
    wait_for(lambda: srv.call_in_loop(lambda: srv.server.connection_count) == 0)
