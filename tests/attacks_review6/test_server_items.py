"""Whatever a real server's generator yields reaches the client as sent (or ends that
stream alone with 405): the server's flat-item lane against the general path, many
streams on one connection, plain calls interleaved, cancelled streams, new streams."""

from __future__ import annotations

import asyncio
import enum
import math
from collections.abc import AsyncIterator
from typing import Any

import pytest

from pymprpc.client import RPC, AsyncRPC
from pymprpc.errors import MPRPCError
from pymprpc.server import Server
from pymprpc.testing import server_url

pytestmark = pytest.mark.timeout(30)

LIMIT = 256 * 1024


class IE(enum.IntEnum):
    A = 7


class SE(enum.StrEnum):
    S = "sv"


class MyStr(str):
    pass


class MyInt(int):
    pass


class MyFloat(float):
    pass


VALUES: list[Any] = [
    0,
    1,
    -1,
    127,
    128,
    -32,
    -33,
    255,
    256,
    2**16,
    2**32,
    2**63 - 1,
    2**63,
    2**64 - 1,
    -(2**63),
    0.0,
    -0.0,
    1.5,
    1e308,
    5e-324,
    float("inf"),
    float("-inf"),
    True,
    False,
    None,
    "",
    "a",
    "é" * 3,
    "\U0001f600",
    "日本語",
    "x" * 31,
    "x" * 32,
    "x" * 255,
    "x" * 256,
    "x" * 65535,
    "x" * 65536,
    b"",
    b"\x00" * 4096,
    [],
    {},
    [1, [2, [3]]],
    {1: "a", -2: "b"},
    {"k": {"n": [None, True]}},
    "y" * 4096,
    "y" * 4095,
    "y" * 4097,
    b"z" * 65536,
    "w" * (1024 * 200),
]
ODD: list[Any] = [IE.A, SE.S, MyStr("ms"), MyInt(5), MyFloat(2.5), float("nan")]


def build(**options: Any) -> Server:
    server = Server(("127.0.0.1", 0), **options)
    reg = server.register_function

    @reg()
    async def gen(kind: str, n: int = 1) -> AsyncIterator[Any]:
        if kind == "values":
            for v in VALUES:
                yield v
        elif kind == "odd":
            for v in ODD:
                yield v
        elif kind == "tagged":
            for i in range(n):
                yield [n, i]
                if i % 7 == 0:
                    await asyncio.sleep(0)
        elif kind == "flat":
            for i in range(n):
                yield i
        elif kind == "raise":
            yield 1
            yield 2
            raise ValueError("mid-way")
        elif kind.startswith("bad:"):
            yield 1
            yield {
                "bigint": 2**64,
                "set": {1},
                "obj": object(),
                "surrogate": "\ud800",
                "bigint_flat": 2**64,
                "neg": -(2**63) - 1,
            }[kind[4:]]
            yield 3
        elif kind.startswith("str:"):
            yield "s" * int(kind[4:])
            yield "after"

    @reg(executor="inline")
    def add(a: int, b: int) -> int:
        return a + b

    return server


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    return bool(a == b) and type(a) is type(b)


def expected(v: Any) -> Any:
    """What the client is expected to read for `v`: MessagePack's view of it."""
    if isinstance(v, bool):
        return bool(v)
    if isinstance(v, int):
        return int(v)
    if isinstance(v, float):
        return float(v)
    if isinstance(v, str):
        return str.__str__(v)
    if isinstance(v, tuple):
        return list(v)
    return v


async def serve_and(main: Any, **options: Any) -> Any:
    server = build(**options)
    await server.start()
    try:
        return await asyncio.wait_for(main(server_url(server)), 25)
    finally:
        await server.close()


def test_every_value_round_trips_async() -> None:
    async def main(url: str) -> None:
        async with AsyncRPC(url) as rpc:
            got = [x async for x in await rpc.gen("values")]
            assert len(got) == len(VALUES)
            for g, v in zip(got, VALUES, strict=False):
                assert same(g, expected(v)), (
                    g if len(repr(g)) < 80 else repr(g)[:80],
                    v if len(repr(v)) < 80 else repr(v)[:80],
                )

    asyncio.run(serve_and(main, max_message_size=LIMIT + 1024))


@pytest.mark.parametrize("kind", ["odd"])
def test_subclasses_and_nan_same_as_general_path(kind: str) -> None:
    async def main(url: str) -> None:
        async with AsyncRPC(url) as rpc:
            got = [x async for x in await rpc.gen(kind)]
            assert len(got) == len(ODD)
            for g, v in zip(got, ODD, strict=False):
                assert same(g, expected(v)), (g, v)

    asyncio.run(serve_and(main))


@pytest.mark.parametrize("bad", ["bigint", "set", "obj", "surrogate", "neg"])
def test_unencodable_item_ends_only_its_stream(bad: str) -> None:
    """Items 1, <bad>, 3: the client reads 1, then the stream fails with a 405-style
    error naming it; concurrent flat streams on the same connection are intact, and
    a new flat stream right after (same thread packer) is intact too."""

    async def main(url: str) -> None:
        async with AsyncRPC(url) as rpc:

            async def flat(n: int) -> list[Any]:
                return [x async for x in await rpc.gen("flat", n)]

            others = [asyncio.ensure_future(flat(300)) for _ in range(3)]
            got: list[Any] = []
            with pytest.raises(MPRPCError) as info:
                async for x in await rpc.gen("bad:" + bad):
                    got.append(x)
            assert got == [1]
            assert getattr(info.value, "code", None) == 405, info.value
            for t in others:
                assert await t == list(range(300))
            assert await flat(50) == list(range(50))
            assert [x async for x in await rpc.gen("values")][:5] == VALUES[:5]
            assert await rpc.add(1, 2) == 3

    asyncio.run(serve_and(main, max_message_size=LIMIT + 1024))


def test_str_around_max_message_size() -> None:
    """A str item of sizes around the server's max_message_size: delivered whole, or the
    stream alone fails with 405; the next item never arrives after a 405; the
    connection stays usable."""
    limit = 70_000

    async def main(url: str) -> None:
        async with AsyncRPC(url) as rpc:
            outcomes = {}
            for size in range(limit - 80, limit + 3):
                got: list[Any] = []
                try:
                    async for x in await rpc.gen(f"str:{size}"):
                        got.append(x)
                except MPRPCError as exc:
                    assert getattr(exc, "code", None) == 405, exc
                    assert got == [], [len(g) for g in got]
                    outcomes[size] = "405"
                else:
                    assert got == ["s" * size, "after"]
                    outcomes[size] = "ok"
            # monotone: every size that fails is above every size that passes
            sizes = sorted(outcomes)
            first_fail = next(s for s in sizes if outcomes[s] == "405")
            assert all(outcomes[s] == "405" for s in sizes if s >= first_fail), outcomes
            assert await rpc.add(2, 3) == 5

    asyncio.run(serve_and(main, max_message_size=limit))


def test_error_midway_and_aclose_do_not_leak() -> None:
    async def main(url: str) -> None:
        async with AsyncRPC(url) as rpc:
            for round_ in range(20):
                s1 = await rpc.gen("tagged", 1000 + round_)
                it = s1.__aiter__()
                assert await it.__anext__() == [1000 + round_, 0]
                await s1.aclose()
                got: list[Any] = []
                with pytest.raises(MPRPCError):
                    async for x in await rpc.gen("raise"):
                        got.append(x)
                assert got == [1, 2]
                n = 50 + round_
                assert [x async for x in await rpc.gen("tagged", n)] == [[n, i] for i in range(n)]
                assert await rpc.add(round_, 1) == round_ + 1

    asyncio.run(serve_and(main))


def test_many_concurrent_streams_and_calls_interleave() -> None:
    async def main(url: str) -> None:
        async with AsyncRPC(url) as rpc:

            async def one(n: int) -> None:
                got = [x async for x in await rpc.gen("tagged", n)]
                assert got == [[n, i] for i in range(n)]

            async def calls(k: int) -> None:
                for i in range(100):
                    assert await rpc.add(k, i) == k + i

            await asyncio.gather(*(one(200 + k) for k in range(12)), *(calls(k) for k in range(4)))

    asyncio.run(serve_and(main))


def test_blocking_client_values_and_interleaving() -> None:
    async def main(url: str) -> None:
        def blocking() -> None:
            with RPC(url) as rpc:
                got = list(rpc.gen("values"))
                for g, v in zip(got, VALUES, strict=True):
                    assert same(g, expected(v))
                s = rpc.gen("tagged", 500)
                s2 = rpc.gen("tagged", 300)
                a, b = [], []
                for y, x in zip(
                    s2, s, strict=False
                ):  # s2 (shorter) first: zip takes nothing more of s
                    a.append(x)
                    b.append(y)
                    assert rpc.add(1, 1) == 2
                a.extend(s)
                assert a == [[500, i] for i in range(500)]
                assert b == [[300, i] for i in range(300)]
                with pytest.raises(MPRPCError):
                    list(rpc.gen("bad:bigint"))
                assert list(rpc.gen("flat", 10)) == list(range(10))

        await asyncio.to_thread(blocking)

    asyncio.run(serve_and(main, max_message_size=LIMIT + 1024))
