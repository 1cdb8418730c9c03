"""Async client streams against a hostile scripted server (replies crafted by hand):
items arrive once and in order whatever the read boundaries; out-of-order and stray
items fail only their call (or are dropped) and never hang the others; items for a stream
the client closed or that timed out are dropped; the buffer limit fails a stream that
other calls wait behind, and cancels it on the server."""

from __future__ import annotations

import asyncio
import random
import struct
from typing import Any

import msgpack
import pytest
from attacks_server.fastlane_kit import run_on

from attacks_client.test_fast_lane_contract import Fake, FakeServer, _with_fake, ok
from pymprpc import AsyncRPC
from pymprpc.errors import DeadlineExceeded, RemoteProtocolError, ResultLimitError, RPCRuntimeError

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(params=["asyncio", "uvloop"])
def loop(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def start(id: str) -> dict[str, Any]:
    return {"MPRPC": "0.1", "CODE": 201, "MESSAGE": {"ID": id}}


def end(id: str) -> dict[str, Any]:
    return {"MPRPC": "0.1", "CODE": 206, "MESSAGE": {"ID": id}}


async def echo_forever(f: Fake) -> None:
    while True:
        c = await f.next_call()
        f.send(ok(c["ID"], c["ARGS"][0]))


async def calls_by_tag(f: Fake, n: int) -> dict[Any, str]:
    calls: dict[Any, str] = {}
    while len(calls) < n:
        c = await f.next_call()
        calls[c["ARGS"][0]] = c["ID"]
    return calls


def test_items_arrive_once_in_order_whatever_the_read_boundaries(loop: str) -> None:
    n = 500

    async def script(f: Fake) -> None:
        calls = await calls_by_tag(f, 2)
        sid = calls["s"]
        data = b"".join(
            f.frame(m) for m in [start(sid), *(ok(sid, i, 202) for i in range(n)), end(sid)]
        )
        data += f.frame(ok(calls["p"], "p"))
        rnd = random.Random(7)
        pos = 0
        while pos < len(data):  # cut anywhere: inside lengths, envelopes, values
            step = rnd.choice([1, 2, 3, 5, 17, 64, 1000])
            f.writer.write(data[pos : pos + step])
            await f.writer.drain()
            await asyncio.sleep(0)
            pos += step
        await echo_forever(f)

    async def client(rpc: AsyncRPC, fake: FakeServer) -> None:
        async def read() -> list[Any]:
            return [x async for x in await rpc.s("s")]

        got, p = await asyncio.gather(read(), rpc.f("p"))
        assert got == list(range(n))
        assert p == "p"

    run_on(loop, lambda: _with_fake(script, client))


def test_an_item_before_its_start_fails_that_call_only(loop: str) -> None:
    async def script(f: Fake) -> None:
        calls = await calls_by_tag(f, 2)
        sid = calls["s"]
        f.send(ok(sid, "early", 202), start(sid), ok(sid, 1, 202), end(sid), ok(calls["p"], "p"))
        await echo_forever(f)

    async def client(rpc: AsyncRPC, fake: FakeServer) -> None:
        async def read() -> Any:
            try:
                return [x async for x in await rpc.s("s")]
            except RemoteProtocolError as exc:
                return exc

        got, p = await asyncio.gather(read(), rpc.f("p"))
        assert isinstance(got, RemoteProtocolError), got
        assert "before its start" in str(got)
        assert p == "p"
        assert await rpc.f("after") == "after"

    run_on(loop, lambda: _with_fake(script, client))


def test_items_and_ends_for_unknown_ids_are_dropped(loop: str) -> None:
    async def script(f: Fake) -> None:
        calls = await calls_by_tag(f, 2)
        sid = calls["s"]
        stray = sid[:-1] + ("0" if sid[-1] != "0" else "1")  # same layout, not a call
        f.send(
            ok(stray, "x", 202),
            end(stray),
            ok("nope", 1, 202),
            start(sid),
            ok(sid, 1, 202),
            ok(stray, "y", 202),
            ok(sid, 2, 202),
            end(sid),
            ok(sid, 3, 202),  # after its end: no longer tracked
            ok(calls["p"], "p"),
        )
        await echo_forever(f)

    async def client(rpc: AsyncRPC, fake: FakeServer) -> None:
        async def read() -> list[Any]:
            return [x async for x in await rpc.s("s")]

        got, p = await asyncio.gather(read(), rpc.f("p"))
        assert got == [1, 2]
        assert p == "p"
        assert await rpc.f("after") == "after"

    run_on(loop, lambda: _with_fake(script, client))


def test_an_error_after_items_comes_after_all_of_them(loop: str) -> None:
    async def script(f: Fake) -> None:
        calls = await calls_by_tag(f, 1)
        sid = calls["s"]
        f.send(
            start(sid),
            *(ok(sid, i, 202) for i in range(3)),
            {
                "MPRPC": "0.1",
                "CODE": 404,
                "MESSAGE": {"ID": sid, "EXCEPTION": "ValueError", "MESSAGE": "boom"},
            },
        )
        await echo_forever(f)

    async def client(rpc: AsyncRPC, fake: FakeServer) -> None:
        stream = await rpc.s("s")
        got = []
        with pytest.raises(RPCRuntimeError):
            async for x in stream:
                got.append(x)
        assert got == [0, 1, 2]
        assert await rpc.f("after") == "after"

    run_on(loop, lambda: _with_fake(script, client))


def test_items_after_aclose_are_dropped(loop: str) -> None:
    async def script(f: Fake) -> None:
        calls = await calls_by_tag(f, 1)
        sid = calls["s"]
        f.send(start(sid), ok(sid, 0, 202))
        await f.next_cancel()  # the client closed the stream: flood it anyway
        f.send(*(ok(sid, i, 202) for i in range(1, 2000)), end(sid))
        await echo_forever(f)

    async def client(rpc: AsyncRPC, fake: FakeServer) -> None:
        stream = await rpc.s("s")
        assert await stream.__anext__() == 0
        await stream.aclose()
        for i in range(5):
            assert await rpc.f(i) == i

    run_on(loop, lambda: _with_fake(script, client))


def test_items_after_a_stream_timed_out_are_dropped(loop: str) -> None:
    async def script(f: Fake) -> None:
        calls = await calls_by_tag(f, 1)
        sid = calls["s"]
        f.send(start(sid), ok(sid, 0, 202))
        await f.next_cancel()  # the deadline passed on the client
        f.send(*(ok(sid, i, 202) for i in range(1, 500)), end(sid))
        await echo_forever(f)

    async def client(rpc: AsyncRPC, fake: FakeServer) -> None:
        stream = await rpc.s.with_options(timeout=0.5)("s")
        got = []
        with pytest.raises(DeadlineExceeded):
            async for x in stream:
                got.append(x)
        assert got == [0]
        for i in range(5):
            assert await rpc.f(i) == i

    run_on(loop, lambda: _with_fake(script, client))


def test_an_unread_stream_over_its_buffer_with_other_calls_waiting_fails_and_is_cancelled(
    loop: str,
) -> None:
    cancelled: list[str] = []

    async def script(f: Fake) -> None:
        sid = (await f.next_call())["ID"]
        # More than the client keeps: with nothing else waiting, it stops reading.
        f.send(start(sid), *(ok(sid, "x" * 100, 202) for i in range(200)))
        seen = []
        while len(seen) < 2:  # the other call, and the stream's cancel (in any order)
            m = await f._recv()
            if m.get("CANCEL"):
                cancelled.append(m["ID"])
                seen.append("cancel")
            elif m.get("METHOD"):
                # The generator goes on: more items reach the client while this call
                # waits on the connection, then its reply.
                f.send(*(ok(sid, "x" * 100, 202) for i in range(200)), ok(m["ID"], m["ARGS"][0]))
                seen.append("call")
        await echo_forever(f)

    async def client(rpc: AsyncRPC, fake: FakeServer) -> None:
        stream = await rpc.s("s")
        assert await rpc.f("p") == "p"  # another call now waits behind the full stream
        got = []
        with pytest.raises(ResultLimitError):
            async for x in stream:
                got.append(x)
        assert 0 < len(got) < 400 and all(x == "x" * 100 for x in got)
        assert await rpc.f("after") == "after"

    run_on(loop, lambda: _with_fake(script, client, stream_buffer_size=2000))
    assert len(cancelled) == 1


def _raw_item(f: Fake, sid: str, value_bytes: bytes) -> bytes:
    """A 202 laid out as our server writes one, with `value_bytes` as its RESULT."""
    head = msgpack.packb(ok(sid, None, 202), use_bin_type=True)[:-1]
    payload = head + value_bytes
    return struct.pack(">I", len(payload)) + payload


BAD_VALUES = {
    "not msgpack": b"\xc1",
    "ext": msgpack.packb(msgpack.ExtType(5, b"x")),
    "truncated": b"\x92\x01",
    "too deep": b"\x91" * 2000 + b"\x01",
    "extra bytes": b"\x01\x02",
    "map with list key": b"\x81\x91\x01\x01",
}


@pytest.mark.parametrize("bad", sorted(BAD_VALUES))
def test_a_malformed_item_never_hangs_the_stream_or_other_calls(loop: str, bad: str) -> None:
    async def script(f: Fake) -> None:
        calls = await calls_by_tag(f, 1)
        sid = calls["s"]
        f.send(start(sid), ok(sid, 0, 202))
        p = await f.next_call()
        f.writer.write(_raw_item(f, sid, BAD_VALUES[bad]))
        f.send(ok(sid, 1, 202), end(sid), ok(p["ID"], "p"))
        await echo_forever(f)

    async def client(rpc: AsyncRPC, fake: FakeServer) -> None:
        stream = await rpc.s("s")
        other = asyncio.ensure_future(rpc.f("p"))
        got: list[Any] = []
        outcome: Any = None
        try:
            async for x in stream:
                got.append(x)
        except Exception as exc:  # noqa: BLE001 - any error is fine, a hang is not
            outcome = exc
        assert got[:1] == [0]
        try:
            p: Any = await other
        except Exception as exc:  # noqa: BLE001
            p = exc
        assert p == "p" or isinstance(p, Exception)
        assert outcome is None or isinstance(outcome, RemoteProtocolError), outcome

    run_on(loop, lambda: _with_fake(script, client), timeout=20)
