"""Idle closes, reconnects, and heartbeats against servers that stop answering."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from .fake import HANG, Peer, await_disconnected, both, wait_disconnected, wait_pings


def one_call_then_close(send_504: bool) -> Any:
    """Each connection answers one call, then (optionally 504 and) closes."""

    def script(peer: Peer) -> None:
        if peer.login() is None:
            return
        call = peer.next_call()
        if call is None:
            return
        peer.reply(call, call.get("ARGS"))
        if send_504:
            time.sleep(0.1)
            peer.send({"MPRPC": "0.1", "CODE": 504})

    return script


@pytest.mark.timeout(40)
@pytest.mark.parametrize("send_504", [False, True], ids=["plain-close", "504-close"])
def test_idle_close_then_transparent_reconnect(send_504: bool) -> None:
    def sync(rpc: Any) -> Any:
        first = rpc.f(1)
        wait_disconnected(rpc)
        second = rpc.f(2)
        wait_disconnected(rpc)
        return first, second, rpc.f(3)

    async def act(rpc: Any) -> Any:
        first = await rpc.f(1)
        await await_disconnected(rpc)
        second = await rpc.f(2)
        await await_disconnected(rpc)
        return first, second, await rpc.f(3)

    a, b = both(one_call_then_close(send_504), sync, act, limit=8, timeout=3)
    assert a == ("ok", ([1], [2], [3])), a
    assert b == a, (a, b)


@pytest.mark.timeout(40)
def test_close_with_call_in_flight_then_stays_closed() -> None:
    def script(peer: Peer) -> None:
        if peer.login() is None:
            return
        peer.next_call()

    def sync(rpc: Any) -> Any:
        out = []
        for _ in range(2):
            try:
                rpc.f()
                out.append("ok")
            except Exception as e:  # noqa: BLE001
                out.append(type(e).__name__)
        return out

    async def act(rpc: Any) -> Any:
        out = []
        for _ in range(2):
            try:
                await rpc.f()
                out.append("ok")
            except Exception as e:  # noqa: BLE001
                out.append(type(e).__name__)
        return out

    a, b = both(script, sync, act, limit=8, timeout=3)
    assert a == ("ok", ["ConnectionLostError", "ConnectionLostError"]), a
    assert b == a, (a, b)


def deaf(peer: Peer) -> None:
    """Welcomes, then reads everything and never answers anything (a stopped process)."""
    if peer.login() is None:
        return
    while peer.recv(timeout=15) is not None:
        pass


def mute(peer: Peer) -> None:
    """Welcomes, then stops reading the socket altogether (SIGSTOP-like)."""
    if peer.login() is None:
        return
    peer.pause(12)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("script", [deaf, mute], ids=["never-pongs", "stops-reading"])
def test_heartbeat_detects_dead_server_and_fails_pending_call(script: Any) -> None:
    def sync(rpc: Any) -> Any:
        t0 = time.monotonic()
        try:
            rpc.f()
            return "ok"
        except Exception as e:  # noqa: BLE001
            return type(e).__name__, time.monotonic() - t0 < 4

    async def act(rpc: Any) -> Any:
        t0 = time.monotonic()
        try:
            await rpc.f()
            return "ok"
        except Exception as e:  # noqa: BLE001
            return type(e).__name__, time.monotonic() - t0 < 4

    a, b = both(script, sync, act, limit=8, heart_beat=0.5)
    assert a == ("ok", ("ConnectionLostError", True)), f"sync: {a}"
    assert b == ("ok", ("ConnectionLostError", True)), f"async: {b}"


@pytest.mark.timeout(60)
def test_heartbeat_error_message_same() -> None:
    a, b = both(deaf, limit=8, heart_beat=0.5)
    assert a != HANG and b != HANG, (a, b)
    assert a == b, (a, b)


@pytest.mark.timeout(60)
def test_heartbeat_keeps_idle_connection_and_pongs_ok() -> None:
    """A healthy server answering pings: idle for 4 heartbeats (heart_beat=0.3), the
    connection must not fail."""
    peers: list[Peer] = []

    def script(peer: Peer) -> None:
        peers.append(peer)
        if peer.login() is None:
            return
        while (call := peer.next_call()) is not None:
            peer.reply(call, call.get("ARGS"))

    def sync(rpc: Any) -> Any:
        rpc.f(1)
        wait_pings(peers, 4)
        return rpc.f(2)

    async def act(rpc: Any) -> Any:
        await rpc.f(1)
        await asyncio.to_thread(wait_pings, peers, 4)
        return await rpc.f(2)

    a, b = both(script, sync, act, limit=8, heart_beat=0.3)
    assert a == ("ok", [2]) and b == a, (a, b)


@pytest.mark.timeout(60)
def test_heartbeat_does_not_kill_a_long_call_on_a_live_server() -> None:
    """Pongs arrive promptly; the call's answer comes after 4 heartbeats (heart_beat=0.3):
    the heartbeat must not fail it."""

    def script(peer: Peer) -> None:
        if peer.login() is None:
            return
        call = peer.next_call()
        while call is not None and peer.pings() < 4:
            msg = peer.recv(timeout=8)  # pings only: the client waits for its call
            if msg is None:
                return
            if msg.get("HEARTBEAT") == "ping":
                peer.send({"MPRPC": "0.1", "CODE": 101, "HEARTBEAT": "pong"})
        if call is not None:
            peer.reply(call, "slow")
            peer.next_call()

    async def act(rpc: Any) -> Any:
        return await rpc.f()

    a, b = both(script, lambda rpc: rpc.f(), act, limit=8, heart_beat=0.3)
    assert a == ("ok", "slow") and b == a, (a, b)


@pytest.mark.timeout(60)
def test_idle_close_then_server_gone_same() -> None:
    """After an idle close the server is gone: the reconnect fails the same way on both."""
    from .fake import FakeServer, run_async, run_sync

    def sync(rpc: Any) -> Any:
        rpc.f(1)
        s.close()
        wait_disconnected(rpc)
        return rpc.f(2)

    async def act(rpc: Any) -> Any:
        await rpc.f(1)
        s.close()
        await await_disconnected(rpc)
        return await rpc.f(2)

    s = FakeServer(one_call_then_close(False))
    a = run_sync(s.url(), sync, 8, timeout=3)
    s = FakeServer(one_call_then_close(False))
    b = run_async(s.url(), act, 8, timeout=3)
    assert a[0] == "ConnectionLostError", a
    assert a[1].split(":")[0] == b[1].split(":")[0] and a[0] == b[0], (a, b)


def stream_then_deaf(peer: Peer) -> None:
    """Starts a stream, sends one item, then never answers anything (pings included)."""
    if peer.login() is None:
        return
    call = peer.next_call()
    if call is None:
        return
    peer.send({"MPRPC": "0.1", "CODE": 201, "MESSAGE": {"ID": call["ID"]}})
    peer.send({"MPRPC": "0.1", "CODE": 202, "MESSAGE": {"ID": call["ID"], "RESULT": 1}})
    while peer.recv(timeout=15) is not None:
        pass


@pytest.mark.timeout(60)
def test_heartbeat_fails_a_stalled_stream() -> None:
    def sync(rpc: Any) -> Any:
        got: list[Any] = []
        try:
            for i in rpc.s():
                got.append(i)
        except Exception as e:  # noqa: BLE001
            got.append(type(e).__name__)
        return got

    async def act(rpc: Any) -> Any:
        got: list[Any] = []
        try:
            async for i in await rpc.s():
                got.append(i)
        except Exception as e:  # noqa: BLE001
            got.append(type(e).__name__)
        return got

    a, b = both(stream_then_deaf, sync, act, limit=8, heart_beat=0.5)
    assert a == ("ok", [1, "ConnectionLostError"]), f"sync: {a}"
    assert b == a, f"async: {b}"
