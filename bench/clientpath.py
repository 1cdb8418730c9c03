"""`python -m bench.clientpath [--conns N] [--calls C] [--typed] [--uvloop] [--profile]`:
the async client's per-call cost under fan-in, in process, without sockets.

N clients, each with one `add` in flight (as `bench.fanin` drives them; K with
`--pipeline K`, W2's shape with `--conns 1 --pipeline 64`), talk to a fake server: once
per event-loop pass a callback answers every request written since the last pass, in
one read, with the reply bytes a pymprpc server sends (built from a template: a slice
and two joins, so the fake server costs next to nothing). The same is done for the
floor's client (`floor.FloorClient`), interleaved, medians of the rounds. This isolates
the Python work of `AsyncRPC` per call, steady on a busy machine where the wall-clock
figures of `python -m bench --only fanin` wobble. `--typed` compares the generated typed
client (`AsyncCalculatorClient.add`: the same request as the untyped call, which the
fake server's reply template needs) with `AsyncRPC` instead; `--uvloop` runs the loop
on uvloop; `--profile` prints the measured client's cProfile, by own time.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgpack

from bench import floor
from bench.hotpath import run_loop
from generated_examples.calculator.client import AsyncCalculatorClient
from pymprpc.client import AsyncRPC
from pymprpc.client.async_client import _Protocol
from pymprpc.protocol import ClientEvent, ServerConnection
from pymprpc.protocol.connection import Credentials, ServerSettings

Call = Callable[[], Awaitable[Any]]


class FakeTransport(asyncio.Transport):
    """Keeps the writes since the fake server last answered, and tells it it has something
    to answer."""

    def __init__(self, written: list[Any], peer: Any) -> None:
        super().__init__()
        self._written = written
        self.peer = peer
        self.out: list[bytes] = []

    def write(self, data: Any) -> None:
        if not self.out:
            self._written.append(self)
        self.out.append(data)

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0

    def close(self) -> None:
        pass


def connect(rpc: AsyncRPC, written: list[Any]) -> FakeTransport:
    """Log `rpc` in to a sans-IO server and give it a fake transport."""
    loop = rpc._state.loop = asyncio.get_running_loop()
    conn = rpc._new_connection()
    server = ServerConnection(ServerSettings(), Credentials())
    conn.start()
    for chunk in conn.chunks_to_send():
        server.receive_data(chunk)
    events: list[ClientEvent] = []
    for chunk in server.chunks_to_send():
        events += conn.receive_data(chunk)
    protocol = rpc._state.protocol = _Protocol(rpc, conn, loop)
    transport = FakeTransport(written, protocol)
    rpc._state.transport = transport
    rpc._welcome = loop.create_future()
    rpc._welcomed(events[0])  # type: ignore[arg-type]
    return transport


def reply_template() -> tuple[bytes, bytes, int, int]:
    """The bytes before and after the ID in a server's reply to `add`, where the ID sits
    in a request, and a request's length."""
    client = AsyncRPC("tcp://127.0.0.1:1")
    conn = client._new_connection()
    server = ServerConnection(ServerSettings(), Credentials())
    conn.start()
    for chunk in conn.chunks_to_send():
        server.receive_data(chunk)
    for chunk in server.chunks_to_send():
        conn.receive_data(chunk)
    id = conn.send_call("add", (1, 2))
    request = b"".join(conn.chunks_to_send())
    server.receive_data(request)
    server.send_result(id, 3)
    reply = b"".join(server.chunks_to_send())
    head, _, tail = reply.partition(id.encode())
    return head, tail, request.index(id.encode()), len(request)


async def run(
    calls: list[Call], answer: Callable[[Any], None], written: list[Any], n: int, pipeline: int = 1
) -> None:
    """Each of `calls` makes `n` calls in turn, `pipeline` at a time; `answer` replies
    once per loop pass."""
    loop = asyncio.get_running_loop()
    running = True

    def serve() -> None:
        batch = written[:]
        written.clear()
        for transport in batch:
            answer(transport)
        if running:
            loop.call_soon(serve)

    async def worker(call: Call) -> None:
        for _ in range(n):
            await call()

    loop.call_soon(serve)
    await asyncio.gather(*(worker(c) for c in calls for _ in range(pipeline)))
    running = False


async def measure_pymprpc(
    conns: int, n: int, typed: bool, profile: bool, pipeline: int = 1
) -> float:
    head, tail, at, size = reply_template()
    written: list[FakeTransport] = []

    # As the loop's transport hands a read over: uvloop as bytes to data_received,
    # asyncio into the protocol's buffer (get_buffer, buffer_updated).
    by_bytes = not isinstance(asyncio.get_running_loop(), asyncio.BaseEventLoop)

    def answer(transport: FakeTransport) -> None:
        # The calls written since the last pass, answered in one read (as a server
        # answers the calls of one read in one write).
        out = transport.out
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        if len(data) == size:  # fan-in: one call
            reply = head + data[at : at + 36] + tail
        else:
            assert len(data) % size == 0, "requests of one size (the IDs' width changed?)"
            reply = b"".join(
                head + data[i + at : i + at + 36] + tail for i in range(0, len(data), size)
            )
        protocol = transport.peer
        if by_bytes:
            protocol.data_received(reply)
            return
        nbytes = len(reply)
        protocol.get_buffer(nbytes)[:nbytes] = reply
        protocol.buffer_updated(nbytes)

    calls: list[Call] = []
    for _ in range(conns):
        if typed:
            client = AsyncCalculatorClient("tcp://127.0.0.1:1")
            connect(client.rpc, written)
            calls.append(lambda c=client: c.add(1, 2))
        else:
            rpc = AsyncRPC("tcp://127.0.0.1:1")
            connect(rpc, written)
            add = rpc.method("add")
            calls.append(lambda add=add: add(1, 2))
    await run(calls, answer, written, 2, pipeline)  # warm-up
    prof = cProfile.Profile() if profile else None
    start = time.process_time()
    if prof:
        prof.enable()
    await run(calls, answer, written, n, pipeline)
    if prof:
        prof.disable()
    elapsed = time.process_time() - start
    if prof:
        pstats.Stats(prof).sort_stats(os.environ.get("SORT", "tottime")).print_stats(45)
    return elapsed / (n * conns * pipeline) * 1e6


async def measure_floor(conns: int, n: int, pipeline: int = 1) -> float:
    # The floor's IDs count from 0 on each connection: the replies are known in advance.
    replies = []
    for id in range((n + 2) * pipeline):
        payload = msgpack.packb([id, 3])
        replies.append(floor.HEADER.pack(len(payload)) + payload)
    written: list[FakeTransport] = []
    sent: dict[FakeTransport, int] = {}

    def answer(transport: FakeTransport) -> None:
        k = sent[transport]
        count = len(transport.out)  # one request per write
        transport.out.clear()
        sent[transport] = k + count
        transport.peer.data_received(b"".join(replies[k : k + count]))

    calls: list[Call] = []
    for _ in range(conns):
        client = floor.FloorClient()
        transport = FakeTransport(written, client)
        client.connection_made(transport)
        sent[transport] = 0
        calls.append(lambda c=client: c.call("add", 1, 2))
    await run(calls, answer, written, 2, pipeline)
    start = time.process_time()
    await run(calls, answer, written, n, pipeline)
    return (time.process_time() - start) / (n * conns * pipeline) * 1e6


async def measure_untyped(conns: int, n: int, pipeline: int = 1) -> float:
    return await measure_pymprpc(conns, n, False, False, pipeline)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--conns", type=int, default=200)
    parser.add_argument("--calls", type=int, default=60_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--typed", action="store_true", help="typed client against AsyncRPC")
    parser.add_argument(
        "--pipeline",
        type=int,
        default=1,
        help="calls in flight per client (W2: --conns 1 --pipeline 64)",
    )
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--uvloop", action="store_true", help="run the loop on uvloop")
    args = parser.parse_args()
    k = args.pipeline
    n = max(1, args.calls // (args.conns * k))

    async def both() -> None:
        if args.profile:
            await measure_pymprpc(args.conns, n, args.typed, True, k)
            return
        # Interleaved rounds, medians: a busy machine moves single figures a lot.
        a, b = [], []
        for _ in range(args.rounds):
            a.append(await measure_pymprpc(args.conns, n, args.typed, False, k))
            if args.typed:
                b.append(await measure_untyped(args.conns, n, k))
            else:
                b.append(await measure_floor(args.conns, n, k))
        ratio = statistics.median(x / y for x, y in zip(a, b, strict=True))
        what, base = ("typed", "untyped AsyncRPC") if args.typed else ("AsyncRPC", "floor")
        print(
            f"client µs per call: {what} {statistics.median(a):.2f}, {base} "
            f"{statistics.median(b):.2f}; median ratio {ratio:.2f}"
        )

    run_loop(both(), args.uvloop)


if __name__ == "__main__":
    main()
