# ruff: noqa: UP031
# (Python 3.6 code: the old code runs it on its own interpreter.)
"""The service both servers serve in these tests: the usage page's methods (seed/index.rst,
sleeps shortened) plus probes. Plain Python 3.6 (the real 0.0.3 server imports it under an
old interpreter), no pymprpc import: `register(server)` works with 0.0.3's
`SimpleMprpcServer` and with today's `pymprpc.Server`."""

import asyncio

PAUSE = 0.01


def testfunc(a, b):
    """有help"""
    return a + b


async def testcoro(a, b):
    await asyncio.sleep(PAUSE)
    return a + b


async def testcorogen(a, b):
    for i in range(10):
        await asyncio.sleep(PAUSE)
        yield i + a + b


class TestClass:
    def testclassmethod(self, a, b):
        return a + b

    async def testclasscoro(self, a, b):
        await asyncio.sleep(PAUSE)
        return a + b

    async def testclasscorogen(self, a, b):
        for i in range(10):
            await asyncio.sleep(PAUSE)
            yield i + a + b


async def echo(x):
    return x


async def typeof(x):
    """[the type name the server received, the value]."""
    return [type(x).__name__, x]


async def kw(a, b=2, *, c=3):
    return [a, b, c]


async def boom(text):
    raise ValueError(text)


async def count(n):
    for i in range(n):
        yield i


async def count_then_fail(n):
    for i in range(n):
        yield i
    raise ValueError("stream broke after %d items" % n)


async def slow_count_then_fail(n):
    for i in range(n):
        await asyncio.sleep(PAUSE * 5)
        yield i
    await asyncio.sleep(PAUSE * 5)
    raise ValueError("stream broke after %d items" % n)


async def size(x):
    return len(x)


async def big(n):
    return "x" * n


async def make_bytes(text):
    return text.encode("utf-8")


async def with_separator():
    return "a##PRO-END##b"


async def sleep(seconds):
    await asyncio.sleep(seconds)
    return seconds


METHODS = [
    testfunc,
    testcoro,
    testcorogen,
    echo,
    typeof,
    kw,
    boom,
    count,
    count_then_fail,
    slow_count_then_fail,
    size,
    big,
    make_bytes,
    with_separator,
    sleep,
]


def register(server):
    """Register every method, as the usage page does."""
    server.register_introspection_functions()
    for function in METHODS:
        server.register_function()(function)
    server.register_instance(TestClass())
