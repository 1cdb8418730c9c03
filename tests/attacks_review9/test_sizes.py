"""Message sizes: `ctx.sizes` reports each frame as it is on the wire, and a call's
context (with its listeners) is released once the call is over."""

from __future__ import annotations

import asyncio
import gc
import weakref
from typing import Any

import msgpack
import pytest

from attacks_review9.kit import SEP, Raw, new_server, serving
from pymprpc import AsyncRPC, Server
from pymprpc.testing import client_for

pytestmark = pytest.mark.timeout(30)


class Sizes:
    message_sizes = True

    def __init__(self) -> None:
        self.request: dict[str, int] = {}
        self.replies: dict[str, list[int]] = {}

    async def __call__(self, ctx: Any, call_next: Any) -> Any:
        self.request[ctx.id] = ctx.sizes.request
        self.replies[ctx.id] = []
        ctx.sizes.on_response(self.replies[ctx.id].append)
        return await call_next(ctx)


def build(*interceptors: Any) -> Server:
    server = new_server(interceptors=list(interceptors))

    @server.register_function()
    async def echo(x: Any) -> Any:
        return x

    @server.register_function()
    async def numbers(n: int) -> Any:
        for i in range(n):
            yield "y" * i

    @server.register_function()
    async def boom() -> None:
        raise ValueError("b")

    @server.register_function()
    async def slow() -> None:
        await asyncio.sleep(10)

    return server


@pytest.mark.logs_errors
@pytest.mark.parametrize("framing", [[], ["length-framing"]], ids=["separator", "length"])
def test_sizes_are_the_frames_on_the_wire(framing: list[str]) -> None:
    sizes = Sizes()
    with serving(build(sizes)) as running, Raw(running.server.port) as raw:
        raw.login(features=framing)
        overhead = 4 if framing else len(SEP)
        for id, method, args in [
            ("a", "echo", ["x" * 100]),
            ("b", "numbers", [3]),
            ("c", "boom", []),
        ]:
            sent = raw.call(id, method, *args)
            got = []
            while True:
                frame = raw.frame()
                got.append(len(frame) + overhead)
                if msgpack.unpackb(frame)["CODE"] not in (201, 202):
                    break
            assert sizes.request[id] == len(sent), id
            assert sizes.replies[id] == got, id


class Listener:
    def __call__(self, size: int) -> None:
        pass


def test_cancelled_calls_release_their_context() -> None:
    alive: list[weakref.ref[Listener]] = []

    class Watch:
        message_sizes = True

        async def __call__(self, ctx: Any, call_next: Any) -> Any:
            listener = Listener()
            alive.append(weakref.ref(listener))
            ctx.sizes.on_response(listener)
            return await call_next(ctx)

    async def main() -> int:
        async with client_for(build(Watch()), AsyncRPC, timeout=30) as rpc:
            tasks = [asyncio.ensure_future(rpc.slow()) for _ in range(50)]
            await asyncio.sleep(0.2)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            assert await rpc.echo(1) == 1
            await asyncio.sleep(0.1)
            gc.collect()
            return sum(ref() is not None for ref in alive)  # connection still open

    assert asyncio.run(main()) == 0
