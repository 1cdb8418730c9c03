"""The floor: the least a pure-Python asyncio + msgpack RPC can do (no framework).

Length-prefixed msgpack arrays: a request is [id, method, args]; a reply [id, result],
a stream item [id, 202, item] and its end [id, 206, None]. No auth, no validation, no limits:
it measures what the transport and the codec cost, nothing else.
"""

from __future__ import annotations

import asyncio
import itertools
import struct
from collections.abc import AsyncIterator
from typing import Any

import msgpack

HEADER = struct.Struct(">I")


class _Framed(asyncio.Protocol):
    def __init__(self) -> None:
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self.buffer
        buf += data
        pos = 0
        while len(buf) - pos >= 4:
            (size,) = HEADER.unpack_from(buf, pos)
            if len(buf) - pos - 4 < size:
                break
            self.on_message(msgpack.unpackb(buf[pos + 4 : pos + 4 + size], raw=False))
            pos += 4 + size
        del buf[:pos]

    def send(self, message: Any) -> None:
        payload = msgpack.packb(message, use_bin_type=True)
        assert self.transport is not None
        self.transport.write(HEADER.pack(len(payload)) + payload)

    def on_message(self, message: Any) -> None:
        raise NotImplementedError


class FloorServer(_Framed):
    def __init__(self) -> None:
        super().__init__()
        self.tasks: set[asyncio.Task[None]] = set()

    def on_message(self, message: Any) -> None:
        id, method, args = message
        if method == "add":
            self.send([id, args[0] + args[1]])
        elif method == "echo":
            self.send([id, args[0]])
        elif method == "count":
            task = asyncio.get_running_loop().create_task(self.stream(id, args[0]))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def stream(self, id: int, n: int) -> None:
        for i in range(n):
            self.send([id, 202, i])
            if i % 256 == 0:
                await asyncio.sleep(0)
        self.send([id, 206, None])


class FloorClient(_Framed):
    def __init__(self) -> None:
        super().__init__()
        self.ids = itertools.count()
        self.pending: dict[int, asyncio.Future[Any]] = {}
        self.streams: dict[int, asyncio.Queue[Any]] = {}

    def on_message(self, message: Any) -> None:
        id = message[0]
        if len(message) == 2:
            self.pending.pop(id).set_result(message[1])
        elif message[1] == 202:
            self.streams[id].put_nowait(message[2])
        else:
            self.streams.pop(id).put_nowait(StopAsyncIteration)

    async def call(self, method: str, *args: Any) -> Any:
        id = next(self.ids)
        future = asyncio.get_running_loop().create_future()
        self.pending[id] = future
        self.send([id, method, list(args)])
        return await future

    async def stream(self, method: str, *args: Any) -> AsyncIterator[Any]:
        id = next(self.ids)
        queue: asyncio.Queue[Any] = asyncio.Queue()
        self.streams[id] = queue
        self.send([id, method, list(args)])
        while (item := await queue.get()) is not StopAsyncIteration:
            yield item


class FloorTaskServer(_Framed):
    """The floor with what a framework must do at least: each call runs in its own task
    (so it may await), and the task is tracked until it finishes."""

    def __init__(self) -> None:
        super().__init__()
        self.tasks: set[asyncio.Task[None]] = set()
        self.loop = asyncio.get_running_loop()

    def on_message(self, message: Any) -> None:
        task = self.loop.create_task(self.handle(*message))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def handle(self, id: int, method: str, args: list[Any]) -> None:
        if method == "add":
            self.send([id, args[0] + args[1]])
        elif method == "echo":
            self.send([id, args[0]])


async def serve(port: int, tasks: bool = False) -> asyncio.Server:
    factory = FloorTaskServer if tasks else FloorServer
    return await asyncio.get_running_loop().create_server(factory, "127.0.0.1", port, backlog=4096)


async def connect(port: int) -> FloorClient:
    _, protocol = await asyncio.get_running_loop().create_connection(FloorClient, "127.0.0.1", port)
    return protocol
