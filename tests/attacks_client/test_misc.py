"""Framing switch in one segment, floods of ignorable replies, connect() after close()."""

from __future__ import annotations

import struct
import time
import tracemalloc
from typing import Any

import pytest

from .fake import WELCOME, Peer, both, echo_server, pack


def welcome_and_pong_in_one_segment(peer: Peer) -> None:
    auth = peer.recv()
    if auth is None:
        return
    welcome = dict(WELCOME, FEATURES=list(auth.get("FEATURES", [])))
    pong = pack({"MPRPC": "0.1", "CODE": 101, "HEARTBEAT": "pong"})
    peer.send_raw(pack(welcome) + b"##PRO-END##" + struct.pack(">I", len(pong)) + pong)
    peer.length = True
    while (call := peer.next_call()) is not None:
        peer.reply(call, call.get("ARGS"))


@pytest.mark.timeout(40)
def test_length_framing_switch_mid_segment() -> None:
    async def act(rpc: Any) -> Any:
        return await rpc.f(5)

    a, b = both(welcome_and_pong_in_one_segment, lambda rpc: rpc.f(5), act, limit=6, timeout=3)
    assert a == ("ok", [5]) and b == a, (a, b)


def flood_unknown(peer: Peer) -> None:
    """Before answering, 20 000 replies and stream items (~20 MiB) for IDs never used."""
    if peer.login() is None:
        return
    call = peer.next_call()
    if call is None:
        return
    blob = "y" * 1000
    for i in range(10_000):
        peer.reply({"ID": f"ghost-{i}"}, blob)
        peer.send({"MPRPC": "0.1", "CODE": 202, "MESSAGE": {"ID": f"ghost-{i}", "RESULT": blob}})
    peer.reply(call, "real")
    peer.wait_eof(10)


@pytest.mark.timeout(60)
def test_flood_of_unknown_ids_is_dropped_and_bounded() -> None:
    def sync(rpc: Any) -> Any:
        tracemalloc.start()
        try:
            value = rpc.f()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        return value, peak < (8 << 20), peak >> 10

    async def act(rpc: Any) -> Any:
        tracemalloc.start()
        try:
            value = await rpc.f()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        return value, peak < (8 << 20), peak >> 10

    a, b = both(flood_unknown, sync, act, limit=30, timeout=25)
    for out in (a, b):
        assert out[0] == "ok" and out[1][:2] == ("real", True), (a, b)


@pytest.mark.timeout(40)
def test_connect_again_after_close() -> None:
    def sync(rpc: Any) -> Any:
        rpc.f(1)
        rpc.close()
        rpc.connect()
        return rpc.f(2)

    async def act(rpc: Any) -> Any:
        await rpc.f(1)
        await rpc.close()
        await rpc.connect()
        return await rpc.f(2)

    a, b = both(echo_server(), sync, act, limit=8, timeout=3)
    assert a == ("ok", [2]) and b == a, (a, b)


_ = time


@pytest.mark.timeout(40)
def test_async_user_cancellation_then_late_replies() -> None:
    """asyncio.wait_for() cancels 50 calls; their late replies arrive; the next call gets
    its own answer and the server saw a CANCEL for each (cancel negotiated)."""
    import asyncio
    import threading

    from .fake import FakeServer, run_async

    def script(peer: Peer) -> None:
        if peer.login() is None:
            return
        held: list[dict[str, Any]] = []
        while (msg := peer.recv()) is not None:
            if msg.get("CANCEL"):
                continue
            if msg.get("METHOD") == "slow":
                held.append(msg)
                if len(held) == 50:
                    threading.Timer(0.5, lambda: [peer.reply(c, "late") for c in held]).start()
            else:
                peer.reply(msg, msg.get("ARGS"))

    async def act(rpc: Any) -> Any:
        async def one() -> str:
            try:
                await asyncio.wait_for(rpc.slow(), 0.2)
                return "ok"
            except TimeoutError:
                return "cancelled"

        outs = await asyncio.gather(*(one() for _ in range(50)))
        await asyncio.sleep(1.0)
        return set(outs), await rpc.f(3)

    with FakeServer(script) as s:
        b = run_async(s.url(), act, 10)
        cancels = sum(1 for m in s.peers[0].received if m.get("CANCEL"))
    assert b == ("ok", ({"cancelled"}, [3])), b
    assert cancels == 50, cancels
