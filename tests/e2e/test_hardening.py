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
from pymprpc.errors import ResultLimitError, RPCRuntimeError
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


# -- memory an unauthenticated or hostile peer can pin ------------------------------

MiB = 1024 * 1024


def handlers_state(srv: ServerThread, get: Callable[[Any], int]) -> int:
    return srv.call_in_loop(lambda: sum(get(h) for h in connections(srv.server)))


def test_unauthenticated_peers_get_505_past_the_pre_auth_limit(srv: ServerThread) -> None:
    clients = [RawClient(srv.port) for _ in range(5)]
    try:
        for c in clients:
            c.send_raw(b"\x81" + b"x" * 100_000)  # no separator, over 64 KiB
        for c in clients:
            assert c.recv() == {**V, "CODE": 505}
            assert c.at_eof()
    finally:
        for c in clients:
            c.close()
    still_serving(srv)


def test_compression_bomb_before_auth_costs_kilobytes(srv: ServerThread) -> None:
    import bz2
    import tracemalloc

    elements = 16_000_000  # an array of 16M empty maps: ~1 GB if decoded
    payload = bz2.compress(b"\xdd" + elements.to_bytes(4, "big") + b"\x80" * elements)
    assert len(payload) < 200
    tracemalloc.start()
    try:
        with RawClient(srv.port) as c:
            c.send_raw(payload + SEPARATOR)
            assert c.recv() == {**V, "CODE": 505}
            assert c.at_eof()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * MiB, peak
    still_serving(srv)


def test_partial_frames_of_all_connections_share_one_budget(
    serve: Callable[..., ServerThread],
) -> None:
    limit, read, part, n = 1 * MiB, 256 * 1024, 1 * MiB, 8  # asyncio reads <= 256 KiB
    srv = serve(max_buffered_input=limit)
    frames = [
        pack({**V, "ID": f"c{i}", "METHOD": "repeat", "ARGS": ["y" * (part + 1000), 0]}) + SEPARATOR
        for i in range(n)
    ]
    clients = [RawClient(srv.port) for _ in frames]
    try:
        for c in clients:
            assert c.login(USER, PASSWORD)["CODE"] == 100
        for c, frame in zip(clients, frames, strict=True):
            c.send_raw(frame[:part])
        # All but one connection holding a partial frame stop reading.
        wait_for(lambda: srv.call_in_loop(lambda: srv.server._core.input_budget.paused) == n - 1)
        buffered = handlers_state(srv, lambda h: h.conn.buffered_bytes)
        # The budget, one read per paused connection, and the frame of the one reading:
        # 3.75 MiB at most here, 8 MiB without the budget.
        assert buffered <= limit + (n - 1) * read + part, buffered
        for c, frame in zip(clients, frames, strict=True):
            c.send_raw(frame[part:])
        for i, c in enumerate(clients):
            assert c.recv() == {**V, "CODE": 200, "MESSAGE": {"ID": f"c{i}", "RESULT": ""}}
    finally:
        for c in clients:
            c.close()
    wait_for(lambda: srv.call_in_loop(lambda: srv.server._core.input_budget.used) == 0)


def test_results_for_a_client_that_does_not_read_are_bounded(srv: ServerThread) -> None:
    import tracemalloc

    calls = 64
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.connect(("127.0.0.1", srv.port))
    sock.settimeout(10)
    c = RawClient.__new__(RawClient)
    c.sock, c.encode, c.buffer = sock, pack, b""
    c.decode = Codec().decode
    tracemalloc.start()
    try:
        with c:
            assert c.login(USER, PASSWORD)["CODE"] == 100
            c.send_raw(
                b"".join(
                    pack({**V, "ID": f"r{i}", "METHOD": "repeat", "ARGS": ["x", MiB]}) + SEPARATOR
                    for i in range(calls)
                )
            )
            # The server answers until this client's output is over its limit (4 MiB),
            # then holds the calls it read and stops reading.
            wait_for(lambda: handlers_state(srv, lambda h: len(h._deferred)) > 0)
            current, _ = tracemalloc.get_traced_memory()
            assert current < 24 * MiB, current  # 64 MiB of results without back-pressure
            for i in range(calls):
                reply = c.recv()
                assert reply["MESSAGE"]["ID"] == f"r{i}" and len(reply["MESSAGE"]["RESULT"]) == MiB
    finally:
        tracemalloc.stop()
    assert handlers_state(srv, lambda h: len(h._deferred)) == 0


def test_a_large_request_while_another_thread_reads_a_fast_stream(srv: ServerThread) -> None:
    """The blocking client sends holding the connection, so its reader waits meanwhile:
    the server must finish reading a request it has started even while this client's
    output is over the high-water mark, or both sides wait for each other forever."""
    import threading

    big = "x" * (12 * MiB)
    with RPC(url(srv)) as rpc:
        stream = rpc.firehose(16 * 1024)
        next(stream)
        done: list[int] = []

        def reader() -> None:
            try:
                for n, _ in enumerate(stream):
                    if done or n > 100_000:
                        return
            except ResultLimitError:
                return  # fell behind while echo() used the connection: cancelled, as documented

        thread = threading.Thread(target=reader, daemon=True)
        thread.start()
        wait_for(lambda: sum(server_write_buffers(srv)) > 64 * 1024)  # output is paused
        done.append(len(rpc.echo(big)))
        thread.join(10)
        assert done == [len(big)]
