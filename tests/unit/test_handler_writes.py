"""The server's connection shell, driven by hand: which replies share one write."""

from __future__ import annotations

import asyncio
from typing import Any

from service import PASSWORD, USER, Probe, build_server

from pymprpc.protocol import ClientConnection, Result
from pymprpc.server.handler import ConnectionHandler


class RecordingTransport(asyncio.Transport):
    """Keeps every write, as the socket transport would send it."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1) if name == "peername" else default


async def from_callback(handler: ConnectionHandler, data: bytes) -> None:
    """data_received as the event loop calls it: from a callback, outside any task."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    loop.call_soon(lambda: (handler.data_received(data), done.set_result(None)))
    await done


async def connected() -> tuple[ConnectionHandler, RecordingTransport, ClientConnection]:
    server = build_server(Probe())

    @server.register_function()
    async def plus(a: int, b: int) -> int:
        return a + b  # never suspends

    handler = ConnectionHandler(server._core)
    transport = RecordingTransport()
    handler.connection_made(transport)
    client = ClientConnection(USER, PASSWORD)
    await from_callback(handler, client.start())
    client.receive_data(b"".join(transport.writes))
    transport.writes.clear()
    return handler, transport, client


def test_calls_answered_within_one_read_share_one_write() -> None:
    async def main() -> None:
        handler, transport, client = await connected()
        wire = b"".join(b"".join(client.send_call("plus", (i, i))[1]) for i in range(10))
        await from_callback(handler, wire)
        assert len(transport.writes) == 1  # ten replies, one syscall
        events = client.receive_data(transport.writes[0])
        assert [e.value for e in events if isinstance(e, Result)] == [2 * i for i in range(10)]

    asyncio.run(asyncio.wait_for(main(), 10))


def test_a_call_that_does_not_suspend_is_answered_before_the_read_returns() -> None:
    async def main() -> None:
        handler, transport, client = await connected()
        await from_callback(handler, b"".join(client.send_call("plus", (1, 2))[1]))
        assert transport.writes, "answered within data_received, no loop pass later"
        assert not handler.tasks
        [event] = client.receive_data(b"".join(transport.writes))
        assert isinstance(event, Result) and event.value == 3

    asyncio.run(asyncio.wait_for(main(), 10))


def test_a_suspending_call_is_tracked_then_answered() -> None:
    async def main() -> None:
        handler, transport, client = await connected()
        await from_callback(handler, b"".join(client.send_call("sleep", (0.01,))[1]))
        assert not transport.writes and len(handler.tasks) == 1
        while not transport.writes:
            await asyncio.sleep(0.005)
        [event] = client.receive_data(b"".join(transport.writes))
        assert isinstance(event, Result) and event.value == 0.01
        assert not handler.tasks

    asyncio.run(asyncio.wait_for(main(), 10))
