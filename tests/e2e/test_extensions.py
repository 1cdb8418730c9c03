"""docs/protocol.md's negotiated extensions over real sockets: length framing, cancel, deadline."""

from __future__ import annotations

import asyncio
import gc
import os
import socket
from collections.abc import Callable
from typing import Any

import pytest
from service import PASSWORD, USER, Probe, url

from helpers import (
    OldServer,
    RawClient,
    ServerThread,
    arun,
    connections,
    pack,
    send,
    unpack,
    wait_for,
)
from pymprpc.client import RPC, AsyncRPC
from pymprpc.errors import DeadlineExceeded
from pymprpc.protocol import SEPARATOR, Feature, LengthFramer

V = {"MPRPC": "0.1"}


def running_calls(srv: ServerThread) -> int:
    return srv.call_in_loop(lambda: srv.server.running_call_count)


def test_our_peers_negotiate_every_feature(srv: ServerThread) -> None:
    with RPC(url(srv)) as rpc:
        assert rpc.server_info is not None
        assert rpc.server_info.features == frozenset(Feature)


@pytest.mark.parametrize("options", [{}, {"debug": True}, {"compreser": "zlib"}])
def test_length_framing_carries_the_separator(srv: ServerThread, options: dict[str, Any]) -> None:
    text = "before ##PRO-END## after"
    with RPC(url(srv), **options) as rpc:
        assert rpc.echo(text) == text
        assert rpc.add("##PRO-", "END##") == "##PRO-END##"

    async def main() -> None:
        async with AsyncRPC(url(srv), **options) as rpc:
            assert await rpc.echo(text) == text

    arun(main())


def test_arbitrary_bytes_up_to_the_size_limit(serve: Callable[..., ServerThread]) -> None:
    limit = 1024 * 1024
    srv = serve(max_message_size=limit)
    blob = os.urandom(limit - 200) + SEPARATOR
    with RPC(url(srv), max_message_size=limit) as rpc:
        assert rpc.echo(blob) == blob


def test_raw_length_framed_session(srv: ServerThread) -> None:
    framer = LengthFramer()
    with RawClient(srv.port) as c:
        c.send(
            {
                **V,
                "AUTH": {"USERNAME": USER, "PASSWORD": PASSWORD},
                "FEATURES": ["length-framing", "deadline"],
            }
        )
        welcome = c.recv()
        assert welcome["FEATURES"] == ["deadline", "length-framing"]
        c.send_raw(
            b"".join(
                framer.frame(pack({**V, "ID": "1", "METHOD": "echo", "ARGS": ["a##PRO-END##"]}))
            )
        )
        c.send_raw(
            b"".join(
                framer.frame(
                    pack({**V, "ID": "2", "METHOD": "sleep", "ARGS": [5], "DEADLINE": 0.1})
                )
            )
        )
        frames: list[bytes] = []
        while len(frames) < 2:
            frames += framer.feed(c.sock.recv(65536))
        replies = {unpack(f)["MESSAGE"]["ID"]: unpack(f) for f in frames}
        assert replies["1"]["MESSAGE"]["RESULT"] == "a##PRO-END##"
        assert replies["2"]["CODE"] == 408
        assert replies["2"]["MESSAGE"]["EXCEPTION"] == "DeadlineExceeded"


def test_leaving_a_stream_early_closes_the_server_generator(
    srv: ServerThread, probe: Probe
) -> None:
    async def main() -> None:
        async with AsyncRPC(url(srv)) as rpc:
            stream = await rpc.endless()
            async for i in stream:
                if i == 3:
                    break
            await stream.aclose()
            await asyncio.to_thread(probe.stream_closed.wait, 10)
            assert probe.stream_closed.is_set()
            assert await rpc.add(1, 2) == 3

    arun(main())
    wait_for(lambda: running_calls(srv) == 0)


def test_dropping_an_async_stream_cancels_it(srv: ServerThread, probe: Probe) -> None:
    async def take_three(rpc: AsyncRPC) -> list[int]:
        seen = []
        async for i in await rpc.endless():
            seen.append(i)
            if len(seen) == 3:
                break
        return seen

    async def main() -> None:
        async with AsyncRPC(url(srv)) as rpc:
            assert await take_three(rpc) == [0, 1, 2]
            gc.collect()
            await asyncio.to_thread(probe.stream_closed.wait, 10)
            assert probe.stream_closed.is_set()

    arun(main())


def test_closing_a_sync_stream_generator_cancels_it(srv: ServerThread, probe: Probe) -> None:
    with RPC(url(srv)) as rpc:
        gen = rpc.endless()
        assert [next(gen) for _ in range(3)] == [0, 1, 2]
        gen.close()
        assert probe.stream_closed.wait(10)
        assert rpc.add(1, 2) == 3  # late items for the cancelled stream are ignored
    wait_for(lambda: running_calls(srv) == 0)


def test_cancelling_the_awaiting_task_cancels_the_call(srv: ServerThread) -> None:
    async def main() -> None:
        async with AsyncRPC(url(srv)) as rpc:
            task = asyncio.ensure_future(rpc.sleep(30))
            await asyncio.to_thread(wait_for, lambda: running_calls(srv) == 1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await asyncio.to_thread(wait_for, lambda: running_calls(srv) == 0)
            assert await rpc.add(1, 2) == 3

    arun(main())


def test_deadline_is_enforced_on_the_server(srv: ServerThread) -> None:
    async def main() -> None:
        async with AsyncRPC(url(srv), timeout=0.2) as rpc:
            with pytest.raises(DeadlineExceeded):
                await rpc.sleep(30)
            await asyncio.to_thread(wait_for, lambda: running_calls(srv) == 0)

    arun(main())


def test_deadline_with_an_old_server_is_local(srv: ServerThread) -> None:
    with RPC(url(srv), features=(), timeout=0.2) as rpc:
        with pytest.raises(DeadlineExceeded, match="deadline"):
            rpc.sleep(1)
        assert rpc.add.with_options(timeout=5)(1, 2) == 3


def test_a_method_looked_up_once_follows_the_clients_timeout(srv: ServerThread) -> None:
    async def main() -> None:
        async with AsyncRPC(url(srv)) as rpc:
            sleep = rpc.sleep
            assert rpc.sleep is sleep  # looked up once, then a plain attribute
            assert await sleep(0.01) == 0.01
            rpc.timeout = 0.1  # set afterwards: still applies
            with pytest.raises(DeadlineExceeded):
                await rpc.sleep(30)
            assert await rpc.sleep.with_options(timeout=None)(0.2) == 0.2

    arun(main())
    with RPC(url(srv)) as rpc:
        assert rpc.sleep(0.01) == 0.01
        rpc.timeout = 0.1
        with pytest.raises(DeadlineExceeded):
            rpc.sleep(30)


def echo_args(conn: socket.socket, msg: dict[str, Any]) -> None:
    reply = {**V, "CODE": 200, "MESSAGE": {"ID": msg["ID"], "RESULT": msg.get("ARGS")}}
    send(conn, reply)


def test_our_client_with_an_old_server() -> None:
    old = OldServer(echo_args)
    try:
        with RPC(f"tcp://u:p@127.0.0.1:{old.port}", timeout=5) as rpc:
            assert rpc.server_info is not None and rpc.server_info.features == frozenset()
            assert rpc.anything(1, "x") == [1, "x"]
        assert "DEADLINE" not in old.seen[1]  # not negotiated: never sent
    finally:
        old.close()


def test_call_cancelled_in_the_same_read_is_forgotten(srv: ServerThread) -> None:
    """A task cancelled before its first step never runs its cleanup code itself."""
    framer = LengthFramer()
    with RawClient(srv.port) as c:
        c.send(
            {
                **V,
                "AUTH": {"USERNAME": USER, "PASSWORD": PASSWORD},
                "FEATURES": ["length-framing", "cancel"],
            }
        )
        assert c.recv()["CODE"] == 100
        call = pack({**V, "ID": "x", "METHOD": "sleep", "ARGS": [30]})
        cancel = pack({**V, "ID": "x", "CANCEL": True})
        c.send_raw(b"".join([*framer.frame(call), *framer.frame(cancel)]))
        wait_for(lambda: srv.call_in_loop(lambda: srv.server.running_call_count) == 0)
        handler = srv.call_in_loop(lambda: connections(srv.server)[0])
        assert srv.call_in_loop(lambda: dict(handler.tasks)) == {}
