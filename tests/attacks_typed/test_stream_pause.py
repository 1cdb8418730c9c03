"""Point 4 of the contract: a stream to a client that reads nothing stops being produced
once the socket buffers and about 64 KiB of the server's own buffer are full; when the
client reads again, the stream resumes and every item arrives, in order.

The client is a raw socket with a small receive buffer, so the only buffers between the
generator and the test are the kernel's (bounded by tcp_wmem's maximum on the server's
side, the receive buffer on ours) and the server's own. The generator counts what it
has produced; the bound is checked against the bytes those items take on the wire."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest

from .kit import SEP, Raw, new_server, package, served

IDL = """
service Flow {
    stream blobs(n: int, size: int) -> bytes;
    def ok() -> int;
}
"""
OWN_BUFFER = 64 * 1024
SLACK = 64 * 1024  # an item or two in flight, frame headers, the start reply


class Produced:
    count = 0


def item(i: int, size: int) -> bytes:
    return i.to_bytes(8, "big") * max(1, size // 8)


@pytest.fixture(scope="module")
def flow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any, Produced]]:
    produced = Produced()
    with package(IDL, "flow_attack", tmp_path_factory.mktemp("flow")) as mod:

        async def blobs(self: Any, n: int, size: int) -> AsyncIterator[bytes]:
            produced.count = 0
            for i in range(n):
                produced.count = i + 1
                yield item(i, size)

        impl = type("F", (mod.FlowServicer,), {"blobs": blobs, "ok": lambda self: 1})()
        server = new_server()
        mod.register_flow(server, impl)
        with served(server) as running:
            yield mod, running, produced


def settled(produced: Produced, limit: float = 30.0) -> int:
    """The count once it has not moved for a few polls (bounded in time). Stopping early
    under load only makes the check weaker, never wrong: the bound must hold at any time."""
    end = time.monotonic() + limit
    last, still = -1, 0
    while time.monotonic() < end and still < 4:
        time.sleep(0.25)
        now = produced.count
        still = still + 1 if now == last and now > 0 else 0  # started, then stopped
        last = now
    return last


def kernel_send_max() -> int:
    return int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])


@pytest.mark.timeout(90)
@pytest.mark.parametrize(("n", "size"), [(300_000, 16), (8_000, 4096)], ids=["16B", "4KiB"])
def test_stream_to_a_reader_that_reads_nothing_pauses_then_resumes_in_order(
    flow: tuple[Any, Any, Produced], n: int, size: int
) -> None:
    _, running, produced = flow
    raw = Raw(running.server.port, rcvbuf=16 * 1024, timeout=30)
    try:
        assert raw.login()["CODE"] == 100
        raw.send({"MPRPC": "0.1", "ID": "s1", "METHOD": "blobs", "ARGS": [n, size]})
        paused_at = settled(produced)
        assert 0 < paused_at < n, f"produced {paused_at} of {n} items for a silent reader"
        rcvbuf = raw.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)

        # Now read everything: every item, in order, then the end of the stream.
        wire = 0
        items = 0
        while True:
            frame = raw.recv_frame()
            reply = msgpack.unpackb(frame, raw=False)
            if reply["CODE"] == 201:
                continue
            if reply["CODE"] == 206:
                break
            assert reply["CODE"] == 202, reply
            assert reply["MESSAGE"]["RESULT"] == item(items, size)
            if items < paused_at:
                wire += len(frame) + len(SEP)
            items += 1
        assert items == n
        bound = kernel_send_max() + 2 * rcvbuf + OWN_BUFFER + SLACK
        assert wire <= bound, f"{wire} bytes produced for a reader that read nothing"
    finally:
        raw.close()


@pytest.mark.timeout(90)
def test_generated_async_client_that_stops_reading_pauses_the_stream(
    flow: tuple[Any, Any, Produced],
) -> None:
    mod, running, produced = flow
    n, size = 1000, 64 * 1024  # 64 MiB: more than every buffer on the way

    async def main() -> None:
        async with mod.AsyncFlowClient(running.url) as client:
            stream = client.blobs(n, size).__aiter__()
            assert await stream.__anext__() == item(0, size)
            paused_at = await asyncio.to_thread(settled, produced)
            assert 0 < paused_at < n, f"produced {paused_at} of {n} items"
            rest = [x async for x in stream]
            assert len(rest) == n - 1
            assert all(x == item(i + 1, size) for i, x in enumerate(rest))
            assert await client.ok() == 1

    asyncio.run(asyncio.wait_for(main(), 80))
