"""Hostile or odd servers: raw scripts answering the two clients."""

from __future__ import annotations

import asyncio
import struct
import time

import pytest

from pymprpc import RPC, AsyncRPC
from pymprpc.errors import ConnectionLostError, DeadlineExceeded, RemoteProtocolError

from ._kit import SEP, Peer, RawServer, result, welcome


def outcome_sync(url, name, *args, **opts):
    started = time.monotonic()
    try:
        with RPC(url, **opts) as rpc:
            value = rpc.call(name, *args)
        return value, time.monotonic() - started
    except Exception as exc:  # noqa: BLE001
        return exc, time.monotonic() - started


def outcome_async(url, name, *args, **opts):
    async def main():
        async with AsyncRPC(url, **opts) as rpc:
            return await rpc.call(name, *args)

    started = time.monotonic()
    try:
        value = asyncio.run(asyncio.wait_for(main(), 25))
        return value, time.monotonic() - started
    except Exception as exc:  # noqa: BLE001
        return exc, time.monotonic() - started


OUTCOME = {"sync": outcome_sync, "async": outcome_async}


def silent_after_login(peer: Peer) -> None:
    peer.login()
    while peer.next(timeout=20) is not None:
        pass


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_heartbeat_silent_peer(kind) -> None:
    with RawServer(silent_after_login) as raw:
        got, elapsed = OUTCOME[kind](raw.url, "f", heart_beat=0.5)
    assert isinstance(got, ConnectionLostError), got
    assert "no heartbeat reply" in str(got)
    assert elapsed < 10


def reply_before_welcome(peer: Peer) -> None:
    peer.next()
    peer.send(result("x", 1))
    peer.send(welcome())
    while peer.next(timeout=20) is not None:
        pass


def garbage(peer: Peer) -> None:
    peer.login()
    peer.next()
    peer.send(b"\xc1\xc1 not msgpack" + SEP)
    time.sleep(10)


def half_then_close(peer: Peer) -> None:
    peer.login()
    call = peer.next()
    data = result(call["ID"], "abcdef" * 100)
    peer.send(data[: len(data) // 2])
    time.sleep(0.3)
    peer.sock.close()


def half_then_silence(peer: Peer) -> None:
    peer.login()
    call = peer.next()
    data = result(call["ID"], "abcdef" * 100)
    peer.send(data[: len(data) // 2])
    time.sleep(20)


def unknown_and_dup(peer: Peer) -> None:
    peer.login()
    while (call := peer.next()) is not None:
        peer.send(result("no-such-id", 0))
        peer.send(result(call["ID"], call["ARGS"]))
        peer.send(result(call["ID"], "again"))


def huge_length(peer: Peer) -> None:
    auth = peer.next()
    peer.send(welcome(FEATURES=list(auth.get("FEATURES", []))))
    peer.sock.settimeout(20)
    peer.sock.recv(65536)
    peer.send(struct.pack(">I", 0xFFFFFFF0) + b"\x80")
    time.sleep(20)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize(
    "script,error,words",
    [
        (reply_before_welcome, RemoteProtocolError, ""),
        (garbage, RemoteProtocolError, ""),
        (half_then_close, ConnectionLostError, "closed by the server"),
        (half_then_silence, DeadlineExceeded, "did not finish within its 2s deadline"),
        (huge_length, RemoteProtocolError, ""),
    ],
)
def test_hostile(kind, script, error, words) -> None:
    with RawServer(script) as raw:
        got, elapsed = OUTCOME[kind](raw.url, "f", 1, timeout=2)
    assert isinstance(got, error), repr(got)
    assert words in str(got)
    assert elapsed < 8


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_unknown_and_duplicate_replies_ignored(kind) -> None:
    with RawServer(unknown_and_dup) as raw:
        got, _ = OUTCOME[kind](raw.url, "f", 7, timeout=5)
    assert got == [7]


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "script",
    [reply_before_welcome, garbage, half_then_close, half_then_silence, huge_length],
)
def test_hostile_same_error_both_clients(script) -> None:
    texts = []
    for kind in ("sync", "async"):
        with RawServer(script) as raw:
            got, _ = OUTCOME[kind](raw.url, "f", 1, timeout=2)
        texts.append((type(got), str(got).replace(raw.url, "URL")))
    assert texts[0] == texts[1]


def silent_then_serves(state: dict) -> object:
    def script(peer: Peer) -> None:
        state["n"] = state.get("n", 0) + 1
        peer.login()
        if state["n"] == 1:
            while peer.next(timeout=20) is not None:  # pings unanswered
                pass
            return
        while (call := peer.next()) is not None:
            peer.send(result(call["ID"], call["ARGS"][0]))

    return script


@pytest.mark.timeout(30)
def test_sync_heartbeat_drops_silent_idle_connection_next_call_reconnects() -> None:
    state: dict = {}
    with RawServer(silent_then_serves(state)) as raw, RPC(raw.url, heart_beat=0.3) as rpc:
        time.sleep(1.5)
        assert not rpc.connected
        assert rpc.f(5) == 5
        assert state["n"] == 2


@pytest.mark.timeout(30)
def test_async_heartbeat_drops_silent_idle_connection_next_call_reconnects() -> None:
    state: dict = {}

    async def main() -> None:
        async with AsyncRPC(raw.url, heart_beat=0.3) as rpc:
            await asyncio.sleep(1.5)
            assert not rpc.connected
            assert await rpc.f(5) == 5
            assert state["n"] == 2

    with RawServer(silent_then_serves(state)) as raw:
        asyncio.run(asyncio.wait_for(main(), 20))


def answers_then_stops(peer: Peer) -> None:
    peer.login()
    for _ in range(3):
        call = peer.next()
        if call is None:
            return
        peer.send(result(call["ID"], call["ARGS"][0]))
    while peer.next(timeout=20) is not None:
        pass


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_heartbeat_peer_that_stops_answering_fails_pending_calls(kind: str) -> None:
    with RawServer(answers_then_stops) as raw:
        if kind == "sync":
            with RPC(raw.url, heart_beat=0.5) as rpc:
                assert [rpc.f(i) for i in range(3)] == [0, 1, 2]
                started = time.monotonic()
                with pytest.raises(ConnectionLostError, match="no heartbeat reply"):
                    rpc.f(3)
        else:

            async def main() -> BaseException:
                async with AsyncRPC(raw.url, heart_beat=0.5) as rpc:
                    assert [await rpc.f(i) for i in range(3)] == [0, 1, 2]
                    try:
                        await rpc.f(3)
                    except ConnectionLostError as exc:
                        return exc
                raise AssertionError("no error")

            started = time.monotonic()
            exc = asyncio.run(asyncio.wait_for(main(), 20))
            assert "no heartbeat reply" in str(exc)
    assert time.monotonic() - started < 10
