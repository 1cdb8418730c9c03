"""A typed coroutine's result is encoded by its schema whichever way the call is run
(alone on its connection, or among others read at once): a value of the declared type
goes out as it is, anything else through the schema (an int out of MessagePack's range,
or a value of another type, is refused with the schema's error naming the method), and a
coroutine that returns a stream has its items encoded."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from helpers import ServerThread, arun
from pymprpc.client import AsyncRPC
from pymprpc.errors import MPRPCError
from pymprpc.schema import INT, STR, Param, Signature
from pymprpc.server import Server


async def _items(values: list[Any]) -> AsyncIterator[Any]:
    for value in values:
        yield value


@pytest.fixture
def srv() -> ServerThread:
    server = Server(("127.0.0.1", 0))
    one_int = Signature((Param("n", INT),), INT, name="echo_int")

    @server.register_function(schema=one_int)
    async def echo_int(n: int) -> Any:
        return 2**70 if n < 0 else n

    @server.register_function(schema=Signature((Param("n", INT),), STR, name="as_str"))
    async def as_str(n: int) -> Any:
        return str(n) if n >= 0 else n  # a wrong type: refused

    @server.register_function(schema=Signature((Param("n", INT),), INT, name="ints"))
    async def ints(n: int) -> Any:
        return _items([1, 2**70] if n < 0 else list(range(n)))

    return ServerThread(server)


async def outcome(call: Any) -> Any:
    try:
        value = await call
        if isinstance(value, AsyncIterator):
            return [item async for item in value]
        return value
    except MPRPCError as exc:
        return (type(exc).__name__, str(exc))


RANGE = "integer out of MessagePack's 64-bit range [-9223372036854775808, 18446744073709551615]"
CALLS = [
    ("echo_int", 3),
    ("echo_int", -1),
    ("as_str", 4),
    ("as_str", -1),
    ("ints", 3),
    ("ints", -1),
]


def test_typed_results_alone_and_among_others(srv: ServerThread) -> None:
    async def main() -> None:
        async with AsyncRPC(srv.url) as rpc:
            alone = [await outcome(rpc.call(name, n)) for name, n in CALLS]
            together = await asyncio.gather(*(outcome(rpc.call(name, n)) for name, n in CALLS))
        assert alone == together
        assert alone[0] == 3 and alone[2] == "4" and alone[4] == [0, 1, 2]
        assert alone[1] == ("RPCRuntimeError", f"ValidationError: echo_int(): {RANGE}")
        assert alone[3] == ("RPCRuntimeError", "ValidationError: as_str(): expected str, got int")
        assert alone[5] == ("RPCRuntimeError", f"ValidationError: ints()[1]: {RANGE}")

    with srv:
        arun(main())
