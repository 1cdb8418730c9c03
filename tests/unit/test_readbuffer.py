"""Reads land in one reused buffer per thread, not a new 256 KiB object per read."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
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
        rpc = AsyncRPC("tcp://127.0.0.1:1")
        client = _Protocol(rpc, rpc._new_connection(), asyncio.get_running_loop())
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


class Counting(Collect):
    """Counts the transport's get_buffer calls; keeps what data_received got."""

    def __init__(self) -> None:
        super().__init__()
        self.get_buffers = 0

    def get_buffer(self, sizehint: int) -> memoryview:
        self.get_buffers += 1
        return super().get_buffer(sizehint)


async def receive(payloads: list[bytes]) -> Counting:
    """Send `payloads` one at a time over a loopback connection to a `Counting`, each
    once the previous one was read (one read each)."""
    loop = asyncio.get_running_loop()
    protocol = Counting()
    server = await loop.create_server(lambda: protocol, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        expected = 0
        for payload in payloads:
            expected += len(payload)
            writer.write(payload)
            while sum(map(len, protocol.got)) < expected:
                await asyncio.sleep(0)
        writer.close()
    finally:
        server.close()
    return protocol


PAYLOADS = [bytes([i]) * (i + 1) for i in range(5)]


def test_asyncio_reads_into_the_shared_buffer_once_per_read() -> None:
    protocol = asyncio.run(asyncio.wait_for(receive(PAYLOADS), 10))
    assert protocol.got == PAYLOADS
    # One per read (and one more if the client's EOF was read before the loop ended).
    assert protocol.get_buffers in (len(PAYLOADS), len(PAYLOADS) + 1)


def test_uvloop_hands_the_bytes_read_to_data_received_without_get_buffer() -> None:
    """uvloop reads a protocol that is an asyncio.Protocol into its own buffer, in C:
    none of our Python per read (get_buffer, buffer_updated, a slice and a copy)."""
    uvloop = pytest.importorskip("uvloop", reason="uvloop is not installed (the test group has it)")
    assert issubclass(ReusedBufferProtocol, asyncio.Protocol)  # what uvloop looks for
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        protocol = runner.run(asyncio.wait_for(receive(PAYLOADS), 10))
    assert protocol.got == PAYLOADS
    assert protocol.get_buffers == 0
    assert all(type(data) is bytes for data in protocol.got)
