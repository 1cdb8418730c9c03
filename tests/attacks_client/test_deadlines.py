"""Per-call deadlines must fire whatever the server does, the same on both clients."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from .fake import HANG, Peer, await_disconnected, both, wait_disconnected


def silent(peer: Peer) -> None:
    if peer.login() is None:
        return
    while peer.next_call(timeout=8) is not None:
        pass


def silent_old(peer: Peer) -> None:
    if peer.login(features="old") is None:
        return
    while peer.next_call(timeout=8) is not None:
        pass


def trickle(peer: Peer) -> None:
    if peer.login() is None:
        return
    call = peer.next_call()
    if call is None:
        return
    data = peer.frame(
        peer.encode(
            {"MPRPC": "0.1", "CODE": 200, "MESSAGE": {"ID": call["ID"], "RESULT": "x" * 200}}
        )
    )
    for byte in data:
        peer.send_raw(bytes([byte]))
        if not peer.pause(0.05):
            return


def late_then_serve(peer: Peer) -> None:
    """Answers the first call after 1.5 s (past the deadline), then every call at once."""
    if peer.login() is None:
        return
    first = peer.next_call()
    if first is None:
        return
    if not peer.pause(1.5):
        return
    peer.reply(first, "stale")
    while (call := peer.next_call()) is not None:
        peer.reply(call, call.get("ARGS"))


def timed(call: Callable[[], Any]) -> Any:
    t0 = time.monotonic()
    try:
        call()
        return ("ok", round(time.monotonic() - t0, 1))
    except Exception as e:  # noqa: BLE001
        return (type(e).__name__, time.monotonic() - t0 < 2.5)


async def atimed(coro: Any) -> Any:
    t0 = time.monotonic()
    try:
        await coro
        return ("ok", round(time.monotonic() - t0, 1))
    except Exception as e:  # noqa: BLE001
        return (type(e).__name__, time.monotonic() - t0 < 2.5)


EXPECT = ("ok", ("DeadlineExceeded", True))


@pytest.mark.timeout(40)
@pytest.mark.parametrize(
    "script", [silent, silent_old, trickle], ids=["silent", "silent-old", "trickle"]
)
def test_default_timeout_fires(script: Callable[[Peer], None]) -> None:
    async def act(rpc: Any) -> Any:
        return await atimed(rpc.f())

    a, b = both(script, lambda rpc: timed(rpc.f), act, limit=8, timeout=0.5)
    assert a == ("ok", ("DeadlineExceeded", True)), a
    assert b == a, (a, b)


@pytest.mark.timeout(40)
@pytest.mark.parametrize(
    "script", [silent, silent_old, trickle], ids=["silent", "silent-old", "trickle"]
)
def test_with_options_timeout_fires(script: Callable[[Peer], None]) -> None:
    async def act(rpc: Any) -> Any:
        return await atimed(rpc.f.with_options(timeout=0.5)())

    a, b = both(script, lambda rpc: timed(rpc.f.with_options(timeout=0.5)), act, limit=8)
    assert a == ("ok", ("DeadlineExceeded", True)), a
    assert b == a, (a, b)


@pytest.mark.timeout(40)
def test_deadline_message_same() -> None:
    async def act(rpc: Any) -> Any:
        return await rpc.f.with_options(timeout=0.3)()

    a, b = both(silent, lambda rpc: rpc.f.with_options(timeout=0.3)(), act, limit=8)
    assert a[0] == "DeadlineExceeded", a
    assert a == b, (a, b)


@pytest.mark.timeout(40)
def test_stale_reply_after_deadline_is_dropped() -> None:
    def sync(rpc: Any) -> Any:
        first = timed(rpc.f.with_options(timeout=0.5))
        return first, rpc.g(1), rpc.g(2)

    async def act(rpc: Any) -> Any:
        first = await atimed(rpc.f.with_options(timeout=0.5)())
        return first, await rpc.g(1), await rpc.g(2)

    a, b = both(late_then_serve, sync, act, limit=8)
    assert a == ("ok", (("DeadlineExceeded", True), [1], [2])), a
    assert b == a, (a, b)


@pytest.mark.timeout(60)
def test_call_timeout_covers_a_transparent_reconnect() -> None:
    """The first connection answers one call and closes (idle close); the server then
    accepts but never welcomes. The next call, timeout=0.5, reconnects inside the call:
    its deadline should bound it, not connect_timeout (10 s)."""
    conns = []

    def script(peer: Peer) -> None:
        conns.append(peer)
        if len(conns) % 2 == 1:
            if peer.login() is None:
                return
            call = peer.next_call()
            if call is not None:
                peer.reply(call, 1)
            return
        peer.recv()
        peer.wait_eof(14)

    def sync(rpc: Any) -> Any:
        rpc.f()
        wait_disconnected(rpc)
        return timed(rpc.f)

    async def act(rpc: Any) -> Any:

        await rpc.f()
        await await_disconnected(rpc)
        return await atimed(rpc.f())

    a, b = both(script, sync, act, limit=13, timeout=0.5)
    expected = ("ok", ("DeadlineExceeded", True))
    assert (a, b) == (expected, expected), f"sync: {a} async: {b}"


@pytest.mark.timeout(40)
def test_welcome_trickled_past_connect_timeout() -> None:
    """The welcome trickled one byte every 0.2 s: connect_timeout=1 must still fire."""

    def script(peer: Peer) -> None:
        if peer.recv() is None:
            return
        data = peer.frame(
            peer.encode(
                {"MPRPC": "0.1", "CODE": 100, "DEBUG": False, "COMPRESER": None, "TIMEOUT": 0}
            )
        )
        for byte in data:
            peer.send_raw(bytes([byte]))
            if not peer.pause(0.2):
                return

    def sync(rpc: Any) -> Any:
        t0 = time.monotonic()
        try:
            rpc.f()
        except Exception as e:  # noqa: BLE001
            return type(e).__name__, time.monotonic() - t0 < 3
        return "ok"

    async def act(rpc: Any) -> Any:
        t0 = time.monotonic()
        try:
            await rpc.f()
        except Exception as e:  # noqa: BLE001
            return type(e).__name__, time.monotonic() - t0 < 3
        return "ok"

    a, b = both(script, sync, act, limit=8, connect_timeout=1)
    assert a != HANG and b != HANG, (a, b)
    assert a[0] == "ConnectionLostError", a
    assert b[0] == "ConnectionLostError", b


def stalled_stream(peer: Peer) -> None:
    """A stream that starts, sends one item, then stalls (no 206, no error)."""
    if peer.login() is None:
        return
    call = peer.next_call()
    if call is None:
        return
    peer.send({"MPRPC": "0.1", "CODE": 201, "MESSAGE": {"ID": call["ID"]}})
    peer.send({"MPRPC": "0.1", "CODE": 202, "MESSAGE": {"ID": call["ID"], "RESULT": 1}})
    peer.wait_eof(10)


@pytest.mark.timeout(40)
def test_deadline_fires_on_stalled_stream() -> None:
    def sync(rpc: Any) -> Any:
        got: list[Any] = []
        t0 = time.monotonic()
        try:
            for i in rpc.s.with_options(timeout=1)():
                got.append(i)
        except Exception as e:  # noqa: BLE001
            got.append(type(e).__name__)
        return got, time.monotonic() - t0 < 3

    async def act(rpc: Any) -> Any:
        got: list[Any] = []
        t0 = time.monotonic()
        try:
            async for i in await rpc.s.with_options(timeout=1)():
                got.append(i)
        except Exception as e:  # noqa: BLE001
            got.append(type(e).__name__)
        return got, time.monotonic() - t0 < 3

    a, b = both(stalled_stream, sync, act, limit=6)
    assert a == ("ok", ([1, "DeadlineExceeded"], True)), f"sync: {a}"
    assert b == a, f"async: {b}"
