"""Unread streams: bounded memory, and other calls on the connection are not starved."""

from __future__ import annotations

import threading
import time
import tracemalloc
from typing import Any

import pytest

from .fake import HANG, Peer, both

ITEM = "x" * 1024
N_ITEMS = 24_000  # ~24 MiB if nothing pushed back


def flood_server(peer: Peer) -> None:
    """'s' is a stream of N_ITEMS 1 KiB items sent as fast as TCP allows; any other call is
    answered at once with its ARGS. A CANCEL for the stream stops it."""
    if peer.login() is None:
        return
    peer.sock.settimeout(None)
    stop = threading.Event()
    peer.sent = 0  # type: ignore[attr-defined]

    def pump(cid: str) -> None:
        peer.send({"MPRPC": "0.1", "CODE": 201, "MESSAGE": {"ID": cid}})
        for _ in range(N_ITEMS):
            if stop.is_set():
                return
            peer.send({"MPRPC": "0.1", "CODE": 202, "MESSAGE": {"ID": cid, "RESULT": ITEM}})
            peer.sent += 1  # type: ignore[attr-defined]
        peer.send({"MPRPC": "0.1", "CODE": 206, "MESSAGE": {"ID": cid}})

    pumps = []
    while True:
        msg = peer.recv(timeout=10)
        if msg is None:
            break
        if msg.get("HEARTBEAT") == "ping":
            peer.send({"MPRPC": "0.1", "CODE": 101, "HEARTBEAT": "pong"})
        elif msg.get("CANCEL"):
            stop.set()
        elif msg.get("METHOD") == "s":
            t = threading.Thread(target=pump, args=(msg["ID"],), daemon=True)
            t.start()
            pumps.append(t)
        else:
            peer.reply(msg, msg.get("ARGS"))
    stop.set()


@pytest.mark.timeout(60)
def test_unread_stream_does_not_starve_other_calls_and_memory_bounded() -> None:
    def sync(rpc: Any) -> Any:
        gen = rpc.s()
        first = next(gen)
        t0 = time.monotonic()
        tracemalloc.start()
        try:
            other = rpc.g.with_options(timeout=5)(1)
            time.sleep(1.0)  # let the flood arrive
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        rest: Any = []
        try:
            for item in gen:
                rest.append(len(item))
        except Exception as e:  # noqa: BLE001
            rest = (len(rest), type(e).__name__)
        return first == ITEM, other, time.monotonic() - t0 < 5, peak < (8 << 20), peak >> 10, rest

    async def act(rpc: Any) -> Any:
        import asyncio

        agen = await rpc.s()
        first = await agen.__anext__()
        t0 = time.monotonic()
        tracemalloc.start()
        try:
            other = await rpc.g.with_options(timeout=5)(1)
            await asyncio.sleep(1.0)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        rest: Any = []
        try:
            async for item in agen:
                rest.append(len(item))
        except Exception as e:  # noqa: BLE001
            rest = (len(rest), type(e).__name__)
        return first == ITEM, other, time.monotonic() - t0 < 5, peak < (8 << 20), peak >> 10, rest

    a, b = both(flood_server, sync, act, limit=25, stream_buffer_size=256 << 10)
    for out in (a, b):
        assert out != HANG, (a, b)
        assert out[0] == "ok", out
        ok_first, other, fast, bounded, _peak_kib, rest = out[1]
        assert ok_first and other == [1] and fast, out
        assert bounded, f"peak {_peak_kib} KiB: {out}"
        # either all items (paused) or a ResultLimitError after what was buffered
        assert (isinstance(rest, tuple) and rest[1] == "ResultLimitError") or rest == [1024] * (
            N_ITEMS - 1
        ), out[1][:5]


@pytest.mark.timeout(60)
def test_single_unread_stream_pauses_reading() -> None:
    """No other call: the client must stop reading; memory stays near stream_buffer_size."""

    def sync(rpc: Any) -> Any:
        gen = rpc.s()
        next(gen)
        tracemalloc.start()
        try:
            time.sleep(2.0)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        n = 1
        for _ in gen:
            n += 1
        return peak >> 10, n

    async def act(rpc: Any) -> Any:
        import asyncio

        agen = await rpc.s()
        await agen.__anext__()
        tracemalloc.start()
        try:
            await asyncio.sleep(2.0)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        n = 1
        async for _ in agen:
            n += 1
        return peak >> 10, n

    a, b = both(flood_server, sync, act, limit=40, stream_buffer_size=256 << 10)
    for out in (a, b):
        assert out != HANG and out[0] == "ok", (a, b)
        peak_kib, n = out[1]
        assert n == N_ITEMS, out
        assert peak_kib < 8 * 1024, f"peak {peak_kib} KiB while paused: {out}"
