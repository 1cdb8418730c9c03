"""Both clients against a real server: calls, streams, errors, options, failures."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from service import PASSWORD, USER, Probe, url

from helpers import OldServer, ServerThread, arun, send, tls_contexts, wait_for
from pymprpc.client import RPC, AsyncRPC, AsyncStream
from pymprpc.errors import (
    ConnectionLostError,
    DeadlineExceeded,
    ExpireStreamWarning,
    ExpireWarning,
    LocalProtocolError,
    LoginError,
    NotFindError,
    ParamError,
    RequestError,
    RPCRuntimeError,
    TimeoutException,
    UnsupportSysMethodError,
)
from pymprpc.protocol import Compression

ENCODINGS = [
    {"debug": False},
    {"debug": True},
    *({"compreser": c.value} for c in Compression),
]


@pytest.mark.parametrize("options", ENCODINGS)
def test_sync_client(srv: ServerThread, options: dict[str, Any]) -> None:
    with RPC(url(srv), **options) as rpc:
        assert rpc.add(1, 2) == 3
        assert rpc.coro_add(a=1) == 2
        assert rpc.echo({"nested": {"list": [1, 2.5, None, "é"]}}) == {
            "nested": {"list": [1, 2.5, None, "é"]}
        }
        assert list(rpc.count(5)) == [0, 1, 2, 3, 4]
        assert "add" in rpc.system.listMethods()
        assert rpc.server_info is not None and rpc.server_info.version == "1.0"
        assert rpc.server_info.debug is options.get("debug", False)


@pytest.mark.parametrize("options", ENCODINGS)
def test_async_client(srv: ServerThread, options: dict[str, Any]) -> None:
    async def main() -> None:
        async with AsyncRPC(url(srv), **options) as rpc:
            assert await rpc.add(1, 2) == 3
            assert await rpc.coro_add(a=1) == 2
            agen = await rpc.count(5)
            assert isinstance(agen, AsyncStream)
            assert [i async for i in agen] == [0, 1, 2, 3, 4]
            assert "add" in await rpc.system.listMethods()
            assert await rpc.call("system.methodHelp", "add") == "Add two numbers."

    arun(main())


def test_async_many_calls_in_flight_on_one_connection(srv: ServerThread) -> None:
    async def main() -> None:
        async with AsyncRPC(url(srv)) as rpc:
            results = await asyncio.gather(*(rpc.coro_add(i, i) for i in range(200)))
            assert results == [2 * i for i in range(200)]
            # Slow and fast calls overlap; answers are matched by ID, not by order.
            slow = asyncio.ensure_future(rpc.sleep(0.3))
            assert await rpc.add(1, 1) == 2
            assert not slow.done()
            assert await slow == 0.3

    arun(main())


def test_bytes_round_trip_with_msgpack(srv: ServerThread) -> None:
    payload = bytes(range(256)) * 10
    with RPC(url(srv)) as rpc:
        assert rpc.echo(payload) == payload


def test_errors_map_to_exceptions(srv: ServerThread) -> None:
    with RPC(url(srv)) as rpc:
        with pytest.raises(NotFindError, match="no method named 'nope'"):
            rpc.nope()
        with pytest.raises(ParamError, match="missing a required argument: 'b'"):
            rpc.add(1)
        with pytest.raises(RPCRuntimeError) as info:
            rpc.divide(1, 0)
        assert info.value.exception == "ZeroDivisionError"
        assert str(info.value) == "ZeroDivisionError: division by zero"
        with pytest.raises(UnsupportSysMethodError):
            rpc.system.nope()
        with pytest.raises(RPCRuntimeError, match="generator broke"):
            list(rpc.fail_midway(3))
        assert rpc.add(2, 2) == 4  # the connection survived all of it


def test_async_errors_map_to_exceptions(srv: ServerThread) -> None:
    async def main() -> None:
        async with AsyncRPC(url(srv)) as rpc:
            with pytest.raises(ParamError):
                await rpc.add(1)
            seen = []
            with pytest.raises(RPCRuntimeError, match="generator broke"):
                async for i in await rpc.fail_midway(2):
                    seen.append(i)
            assert seen == [0, 1]

    arun(main())


def test_wrong_password_raises_login_error(srv: ServerThread) -> None:
    with pytest.raises(LoginError, match="authentication failed"):
        RPC(url(srv, password="wrong")).connect()

    async def main() -> None:
        with pytest.raises(LoginError, match="authentication failed"):
            await AsyncRPC(url(srv, password="wrong")).connect()

    arun(main())


def test_connection_refused_is_a_clear_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ConnectionLostError, match="could not connect"):
        RPC(f"tcp://127.0.0.1:{port}").connect()


def test_delay_and_getresult(srv: ServerThread) -> None:
    with RPC(url(srv)) as rpc:
        id = rpc.delay("add", 20, 22)
        sid = rpc.delay("count", 3)
        assert rpc.system.getresult(id) == 42
        assert list(rpc.system.getresult(sid)) == [0, 1, 2]
        with pytest.raises(RequestError, match="already fetched"):
            rpc.system.getresult(id)

    async def main() -> None:
        async with AsyncRPC(url(srv)) as rpc:
            id = await rpc.delay("sleep", 0.05)
            assert await rpc.system.getresult(id) == 0.05

    arun(main())


def test_deprecated_methods_warn(srv: ServerThread) -> None:
    with RPC(url(srv)) as rpc:
        with pytest.warns(ExpireWarning, match="old_add"):
            assert rpc.old_add(1, 2) == 3
        with pytest.warns(ExpireStreamWarning):
            assert list(rpc.old_count(2)) == [0, 1]

    async def main() -> None:
        async with AsyncRPC(url(srv)) as rpc:
            with pytest.warns(ExpireWarning):
                assert await rpc.old_add(1, 2) == 3

    arun(main())


def test_sync_stream_interleaved_with_calls(srv: ServerThread) -> None:
    with RPC(url(srv)) as rpc:
        gen = rpc.count(4)
        assert next(gen) == 0
        assert rpc.add(5, 5) == 10
        assert list(gen) == [1, 2, 3]


def test_separator_in_legacy_request_is_a_local_error(srv: ServerThread) -> None:
    with RPC(url(srv), features=()) as rpc:
        with pytest.raises(LocalProtocolError, match="separator"):
            rpc.echo("a##PRO-END##b")
        assert rpc.add(1, 2) == 3


def test_async_call_timeout(srv: ServerThread) -> None:
    async def main() -> None:
        async with AsyncRPC(url(srv)) as rpc:
            # The server's 408 ("deadline of 0.1s exceeded") may arrive before the local
            # timer fires ("within its 0.1s deadline") on a loaded machine: either is right.
            with pytest.raises(DeadlineExceeded, match=r"0\.1s"):
                await rpc.sleep.with_options(timeout=0.1)(5)
            assert await rpc.add(1, 2) == 3

    arun(main())


def test_sync_call_timeout(srv: ServerThread) -> None:
    with RPC(url(srv), timeout=0.1) as rpc:
        with pytest.raises(DeadlineExceeded):
            rpc.sleep(5)
        assert rpc.add.with_options(timeout=None)(1, 2) == 3


def test_tls(serve: Callable[..., ServerThread], tmp_path: Path) -> None:
    server_ctx, client_ctx = tls_contexts(tmp_path)
    srv = serve(ssl=server_ctx)
    with RPC(url(srv), ssl=client_ctx) as rpc:
        assert rpc.add(1, 2) == 3

    async def main() -> None:
        async with AsyncRPC(url(srv), ssl=client_ctx) as rpc:
            assert [i async for i in await rpc.count(3)] == [0, 1, 2]

    arun(main())


# -- servers that misbehave -----------------------------------------------------------


def vanish(conn: socket.socket, msg: dict[str, Any]) -> None:
    if msg.get("METHOD") == "second":
        conn.shutdown(socket.SHUT_RDWR)


def test_server_going_away_fails_every_pending_async_call(fake: Callable[..., OldServer]) -> None:
    server = fake(vanish)

    async def main() -> None:
        async with AsyncRPC(server.url) as rpc:
            first = asyncio.ensure_future(rpc.first())
            await asyncio.sleep(0)
            with pytest.raises(ConnectionLostError):
                await rpc.second()
            with pytest.raises(ConnectionLostError):
                await first
            with pytest.raises(ConnectionLostError, match="not connected"):
                await rpc.third()

    arun(main(), timeout=10)


def test_server_going_away_fails_the_sync_call(fake: Callable[..., OldServer]) -> None:
    server = fake(vanish)
    with (
        RPC(server.url) as rpc,
        pytest.raises(ConnectionLostError, match="closed by the server"),
    ):
        rpc.second()


def test_server_5xx_fails_every_pending_call(fake: Callable[..., OldServer]) -> None:
    def idle_close(conn: socket.socket, msg: dict[str, Any]) -> None:
        if msg.get("METHOD") == "second":
            send(conn, {"MPRPC": "0.1", "CODE": 504})

    server = fake(idle_close)

    async def main() -> None:
        async with AsyncRPC(server.url) as rpc:
            first = asyncio.ensure_future(rpc.first())
            await asyncio.sleep(0)
            with pytest.raises(TimeoutException):
                await rpc.second()
            with pytest.raises(TimeoutException, match="idle"):
                await first

    arun(main(), timeout=10)


def test_heartbeat_without_pong_marks_connection_dead(fake: Callable[..., OldServer]) -> None:
    server = fake(lambda conn, msg: None)  # swallows pings and calls alike

    async def main() -> None:
        async with AsyncRPC(server.url, heart_beat=0.2) as rpc:
            with pytest.raises(ConnectionLostError, match="no heartbeat reply"):
                await rpc.anything()
            assert not rpc.connected

    arun(main(), timeout=10)


def test_heartbeat_keeps_a_connection_alive(serve: Callable[..., ServerThread]) -> None:
    srv = serve(timeout=1.0)

    async def main() -> None:
        async with AsyncRPC(url(srv), heart_beat=0.2) as rpc:
            await asyncio.sleep(2.5)  # well past the idle timeout: only the pings keep it
            assert rpc.connected
            assert await rpc.add(1, 2) == 3

    arun(main())


def test_async_reconnect(srv: ServerThread) -> None:
    async def main() -> None:
        rpc = AsyncRPC(url(srv))
        await rpc.connect()
        await rpc.close()
        with pytest.raises(ConnectionLostError):
            await rpc.add(1, 1)
        await rpc.reconnect()
        assert await rpc.add(1, 1) == 2
        await rpc.close()

    arun(main())


def test_server_counts_connections_and_tasks(srv: ServerThread, probe: Probe) -> None:
    with RPC(url(srv)) as rpc, RPC(url(srv)) as other:
        assert rpc.system.lenConnections() == 2
        other.delay("wait_release")
        # The two connections are read in either order: wait until the server runs it.
        wait_for(lambda: srv.server.running_call_count == 1)
        assert rpc.system.lenUndoneTasks() == 2  # the waiting call and this one
        probe.release.set()


def test_unauthenticated_address_against_authenticating_server(srv: ServerThread) -> None:
    with pytest.raises(LoginError):
        RPC(f"tcp://127.0.0.1:{srv.port}").connect()


def test_warnings_are_not_errors_by_default(srv: ServerThread) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with RPC(url(srv)) as rpc:
            assert rpc.old_add(1, 1) == 2


def test_credentials_with_special_characters(serve: Callable[..., ServerThread]) -> None:
    srv = serve(auth=[("us er", "p@ss:w/rd")])
    with RPC(f"tcp://us%20er:p%40ss%3Aw%2Frd@127.0.0.1:{srv.port}") as rpc:
        assert rpc.add(1, 1) == 2


def test_bad_address_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="tcp://user:password@host:port"):
        RPC("http://127.0.0.1:1")
    with pytest.raises(ValueError, match="unknown compreser"):
        RPC("tcp://127.0.0.1:1", compreser="gzip")


assert USER and PASSWORD


def test_compression_option_and_its_legacy_spelling(srv: ServerThread) -> None:
    with RPC(url(srv), compression="bz2") as rpc:
        assert rpc.echo("x" * 1000) == "x" * 1000
        assert rpc.server_info is not None
        assert rpc.server_info.compression is Compression.BZ2

    async def main() -> None:
        async with AsyncRPC(url(srv), compression=Compression.LZMA) as rpc:
            assert await rpc.add(1, 2) == 3
            assert rpc.server_info is not None
            assert rpc.server_info.compression is Compression.LZMA

    arun(main())
    for client in (RPC, AsyncRPC):
        assert client("tcp://h:1", compreser="zlib").compression is Compression.ZLIB
        assert client("tcp://h:1", compression="zlib", compreser="zlib").compression
        with pytest.raises(ValueError, match="unknown compression 'gzip'"):
            client("tcp://h:1", compression="gzip")
        with pytest.raises(ValueError, match="not both"):
            client("tcp://h:1", compression="zlib", compreser="bz2")


def ticking_server(fake: Callable[..., OldServer], ticks: int, every: float) -> OldServer:
    """A server that never answers a ping nor any call but `ticks`, which it answers
    with a stream of `ticks` items, one every `every` seconds (then its end): data flows,
    pongs never come."""

    def on_call(conn: socket.socket, msg: dict[str, Any]) -> None:
        if msg.get("METHOD") != "ticks":
            return  # a ping, or any other call: swallowed
        id = msg["ID"]

        def tick() -> None:
            with contextlib.suppress(OSError):
                send(conn, {"MPRPC": "0.1", "CODE": 201, "MESSAGE": {"ID": id}})
                for i in range(ticks):
                    time.sleep(every)
                    send(conn, {"MPRPC": "0.1", "CODE": 202, "MESSAGE": {"ID": id, "RESULT": i}})
                send(conn, {"MPRPC": "0.1", "CODE": 206, "MESSAGE": {"ID": id}})

        threading.Thread(target=tick, daemon=True).start()

    return fake(on_call)


def test_heartbeat_counts_any_data_received_as_alive(fake: Callable[..., OldServer]) -> None:
    # docs/protocol.md: a client pings when nothing was received for `heart_beat`
    # seconds. A stream whose items keep coming (the pong stuck behind them, or a server
    # that never answers pings at all) is a live connection: only silence is death.
    server = ticking_server(fake, ticks=24, every=0.05)  # 1.2 s of items, 6 heartbeats

    async def main() -> None:
        async with AsyncRPC(server.url, heart_beat=0.2) as rpc:
            assert [item async for item in await rpc.ticks()] == list(range(24))
            assert rpc.connected
            # Then silence, and no pong: dead within a ping's interval and its wait.
            with pytest.raises(ConnectionLostError, match="no heartbeat reply"):
                await asyncio.wait_for(rpc.silent(), 5)

    arun(main(), timeout=20)


def test_sync_heartbeat_counts_any_data_received_as_alive(fake: Callable[..., OldServer]) -> None:
    server = ticking_server(fake, ticks=24, every=0.05)
    with RPC(server.url, heart_beat=0.2) as rpc:
        assert list(rpc.ticks()) == list(range(24))
        assert rpc.connected
        with pytest.raises(ConnectionLostError, match="no heartbeat reply"):
            rpc.silent()
