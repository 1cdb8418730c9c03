"""Callable objects and partials are registered by what calling them returns.

A plain function that returns a coroutine (a decorator's sync wrapper around an
`async def`) has its coroutine awaited on the loop when it runs on a thread or inline; in
a worker process it fails with a message saying what to do.

An object with an `async def __call__` (a common way to give a handler its
dependencies) is a coroutine method, run on the event loop; with an async generator
`__call__` it is a stream. It used to be taken for a plain callable: run on the thread
pool, its call returned an unawaited coroutine that could not be encoded (405).
"""

from __future__ import annotations

import asyncio
import functools
import warnings
from collections.abc import AsyncIterator
from typing import Any

import pytest

from pymprpc.errors import RPCRuntimeError
from pymprpc.server import Server
from pymprpc.server.registry import Kind, kind_of
from pymprpc.testing import client_for, sync_client_for


class Adder:
    def __init__(self, offset: int) -> None:
        self.offset = offset
        self.calls = 0

    async def __call__(self, a: int, b: int = 0) -> int:
        await asyncio.sleep(0)  # really suspends: it must run as a coroutine
        self.calls += 1  # the server's own instance: never a copy in a worker
        return a + b + self.offset


class Countdown:
    async def __call__(self, n: int) -> AsyncIterator[int]:
        for i in range(n, 0, -1):
            yield i


class Plain:
    def __call__(self, a: int) -> int:
        return a * 2


def logged(func: Any) -> Any:
    """A decorator written as a plain function: it returns what `func` returns, here a
    coroutine."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return func(*args, **kwargs)

    return wrapper


@logged
async def decorated_sub(a: int, b: int) -> int:
    await asyncio.sleep(0)
    return a - b


@logged
def decorated_lines(n: int) -> Any:
    yield from range(n)


class Lines:
    def __call__(self, n: int) -> Any:
        yield from range(n)


def make_server() -> tuple[Server, Adder]:
    adder = Adder(100)
    server = Server("tcp://127.0.0.1:0")
    server.register_function(name="add")(adder)
    server.register_function(name="add10")(functools.partial(Adder(10), 5))
    server.register_function(name="countdown")(Countdown())
    server.register_function(name="double")(Plain())
    server.register_function(name="sub_thread", executor="thread")(decorated_sub)
    server.register_function(name="sub_inline", executor="inline")(decorated_sub)
    server.register_function(name="sub_process", executor="process")(decorated_sub)
    for executor in ("thread", "inline", "process"):
        server.register_function(name=f"lines_{executor}", executor=executor)(decorated_lines)
    return server, adder


def test_kinds() -> None:
    assert kind_of(Adder(0)) is Kind.COROUTINE
    assert kind_of(functools.partial(Adder(0), 1)) is Kind.COROUTINE
    assert kind_of(functools.partial(functools.partial(Adder(0)), 1)) is Kind.COROUTINE
    assert kind_of(Countdown()) is Kind.STREAM
    assert kind_of(Plain()) is Kind.FUNCTION
    assert kind_of(Adder(0).__call__) is Kind.COROUTINE
    assert kind_of(print) is Kind.FUNCTION
    assert kind_of(Adder) is Kind.FUNCTION  # a class: calling it makes an instance


def test_a_sync_generator_object_is_refused_at_registration() -> None:
    server = Server("tcp://127.0.0.1:0")
    with pytest.raises(TypeError, match=r"Lines.__call__.*async generator functions"):
        server.register_function(name="lines")(Lines())


@pytest.mark.timeout(60)
def test_async_client_calls_callable_objects() -> None:
    server, adder = make_server()

    async def main() -> None:
        async with client_for(server) as rpc:
            assert await rpc.add(1, 2) == 103
            assert await rpc.add(a=1) == 101
            assert await rpc.add10(1) == 16
            stream = await rpc.countdown(3)
            assert [i async for i in stream] == [3, 2, 1]
            assert await rpc.double(21) == 42
            assert await rpc.sub_thread(5, 3) == 2
            assert await rpc.sub_inline(b=3, a=5) == 2
            with pytest.raises(RPCRuntimeError, match="returned a coroutine") as info:
                await rpc.sub_process(5, 3)
            assert info.value.code == 404
            assert "async def" in str(info.value) and 'executor="thread"' in str(info.value)
            for executor in ("thread", "inline", "process"):
                with pytest.raises(RPCRuntimeError, match="streams must be async generator"):
                    await rpc.call(f"lines_{executor}", 3)
        await server.close()

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # "coroutine ... never awaited"
        asyncio.run(main())
    assert adder.calls == 2


@pytest.mark.timeout(60)
def test_sync_client_calls_callable_objects() -> None:
    server, adder = make_server()
    with sync_client_for(server) as rpc:
        assert rpc.add(2, 3) == 105
        assert rpc.add10(2) == 17
        assert list(rpc.countdown(2)) == [2, 1]
    assert adder.calls == 1
