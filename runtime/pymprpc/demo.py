"""`python -m pymprpc.demo`: the usage page's service, called with both clients.

Starts a server on 127.0.0.1 (a free port) with the page's example methods — a plain
function (run in the process pool), a coroutine, an async generator, and the same three
as instance methods — plus introspection, then calls every one of them with the blocking
`RPC` client and with `AsyncRPC`, printing what comes back.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from .client import RPC, AsyncRPC
from .errors import RPCRuntimeError
from .server import Server


class DemoServer(Server):
    """Demo service of the pymprpc usage page."""


class TestClass:
    def testclassmethod(self, a: int, b: int) -> int:
        return a + b

    async def testclasscoro(self, a: int, b: int) -> int:
        await asyncio.sleep(0.01)
        return a + b

    async def testclasscorogen(self, a: int, b: int) -> AsyncIterator[int]:
        for i in range(10):
            await asyncio.sleep(0.01)
            yield i + a + b


def build_server() -> Server:
    server = DemoServer(("127.0.0.1", 0), auth=[("admin", "admin")], version="0.1.0")
    server.register_introspection_functions()

    @server.register_function()
    def testfunc(a: int, b: int) -> int:
        """Add a and b in a worker process."""
        return a + b

    @server.register_function()
    async def testcoro(a: int, b: int) -> int:
        await asyncio.sleep(0.01)
        return a + b

    @server.register_function()
    async def testcorogen(a: int, b: int) -> AsyncIterator[int]:
        for i in range(10):
            await asyncio.sleep(0.01)
            yield i + a + b

    @server.register_function()
    def divide(a: float, b: float) -> float:
        return a / b

    server.register_instance(TestClass())
    return server


def show(label: str, value: Any) -> None:
    text = (
        f"raises {type(value).__name__}: {value}" if isinstance(value, Exception) else repr(value)
    )
    print(f"  {label:<42} -> {text}")


def sync_client(addr: str) -> None:
    print("RPC (blocking client)")
    with RPC(addr=addr) as rpc:
        show("system.listMethods()", rpc.system.listMethods())
        show(
            'system.methodSignature("testclassmethod")',
            rpc.system.methodSignature("testclassmethod"),
        )
        show('system.methodHelp("testfunc")', rpc.system.methodHelp("testfunc"))
        show("system.lenConnections()", rpc.system.lenConnections())
        show("system.lenUndoneTasks()", rpc.system.lenUndoneTasks())
        show("testclassmethod(1, 2)", rpc.testclassmethod(1, 2))
        show("testclasscoro(2, 3)", rpc.testclasscoro(2, 3))
        show("testcoro(5, 6)", rpc.testcoro(5, 6))
        show("testfunc(5, 4)", rpc.testfunc(5, 4))
        show("list(testcorogen(1, 2))", list(rpc.testcorogen(1, 2)))
        show("list(testclasscorogen(1, 2))", list(rpc.testclasscorogen(1, 2)))
        id = rpc.delay("testfunc", 20, 22)
        show("delay('testfunc', 20, 22) + getresult", rpc.system.getresult(id))
        try:
            rpc.divide(1, 0)
        except RPCRuntimeError as exc:
            show("divide(1, 0)", exc)


async def async_client(addr: str) -> None:
    print("AsyncRPC (asyncio client)")
    async with AsyncRPC(addr=addr, heart_beat=40) as rpc:
        show("system.listMethods()", await rpc.system.listMethods())
        show(
            'system.methodSignature("testclassmethod")',
            await rpc.system.methodSignature("testclassmethod"),
        )
        show('system.methodHelp("testfunc")', await rpc.system.methodHelp("testfunc"))
        show("system.lenConnections()", await rpc.system.lenConnections())
        show("system.lenUndoneTasks()", await rpc.system.lenUndoneTasks())
        show("testclassmethod(1, 2)", await rpc.testclassmethod(1, 2))
        show("testclasscoro(2, 3)", await rpc.testclasscoro(2, 3))
        show("testcoro(5, 6)", await rpc.testcoro(5, 6))
        show("testfunc(5, 4)", await rpc.testfunc(5, 4))
        show("[i async for i in testcorogen(1, 2)]", [i async for i in await rpc.testcorogen(1, 2)])
        show(
            "[i async for i in testclasscorogen(1, 2)]",
            [i async for i in await rpc.testclasscorogen(1, 2)],
        )
        calls = [rpc.testcoro(i, i) for i in range(5)]
        show("5 concurrent testcoro(i, i)", await asyncio.gather(*calls))
        id = await rpc.delay("testfunc", 20, 22)
        show("delay('testfunc', 20, 22) + getresult", await rpc.system.getresult(id))
        try:
            await rpc.divide(1, 0)
        except RPCRuntimeError as exc:
            show("divide(1, 0)", exc)


async def main() -> None:
    async with build_server() as server:
        addr = f"tcp://admin:admin@127.0.0.1:{server.port}"
        print(f"server listening on 127.0.0.1:{server.port}\n")
        await asyncio.to_thread(sync_client, addr)
        print()
        await async_client(addr)
    print("\nserver stopped")


if __name__ == "__main__":
    asyncio.run(main())
