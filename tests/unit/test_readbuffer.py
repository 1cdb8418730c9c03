"""Reads land in one reused buffer per thread, not a new 256 KiB object per read."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from service import Probe, build_server

from pymprpc.client.async_client import AsyncRPC, _Protocol
from pymprpc.readbuffer import READ_SIZE, ReusedBufferProtocol, thread_buffer
from pymprpc.server.handler import ConnectionHandler


class Collect(ReusedBufferProtocol):
    def __init__(self) -> None:
        self.got: list[bytes] = []

    def data_received(self, data: bytes) -> None:
        self.got.append(data)


def test_the_server_and_the_async_client_read_into_the_shared_buffer() -> None:
    # asyncio reads a BufferedProtocol with recv_into; a plain Protocol gets new bytes.
    assert issubclass(ConnectionHandler, asyncio.BufferedProtocol)
    assert issubclass(_Protocol, asyncio.BufferedProtocol)

    async def main() -> None:
        handler = ConnectionHandler(build_server(Probe())._core)
        client = _Protocol(AsyncRPC("tcp://127.0.0.1:1"))
        a, b = handler.get_buffer(-1), client.get_buffer(-1)
        assert a.obj is b.obj is thread_buffer().obj  # one buffer for every connection
        assert len(a) == READ_SIZE

    asyncio.run(main())


def test_each_thread_has_its_own_buffer() -> None:
    other: list[Any] = []
    thread = threading.Thread(target=lambda: other.append(thread_buffer().obj))
    thread.start()
    thread.join(10)
    assert other and other[0] is not thread_buffer().obj


def test_data_received_gets_a_copy_of_just_the_bytes_read() -> None:
    protocol = Collect()
    view = protocol.get_buffer(-1)
    view[:5] = b"hello"
    protocol.buffer_updated(5)
    view[:5] = b"world"  # the next read overwrites the buffer
    protocol.buffer_updated(3)
    assert protocol.got == [b"hello", b"wor"]
    assert all(type(data) is bytes for data in protocol.got)
