"""`python -m bench.hotpath [--conns N] [--calls C] [--inflight K] [--typed] [--profile]`:
the server's per-call cost under fan-in, in process, without sockets.

N connections each receive one `add` call per read (as in the fan-in workload), with one
event-loop pass after every round of reads; the transports are fakes that only count
writes. This isolates what the server's Python code costs per call (the syscalls, equal
for every system, are left out), for pymprpc and for the floor with a task per call, so
a change can be judged on a busy machine where wall-clock figures wobble. `--inflight K`
puts K calls in each read (W2's shape: `--conns 1 --inflight 64`); `--typed` compares the
generated Calculator servicer's `slow_add` (arguments checked against the IDL's types)
with the untyped `add` instead of the floor. `--profile` prints the pymprpc run's
cProfile, by own time.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import statistics
import time
from typing import Any

import msgpack

from bench import floor
from bench.servers import build_pymprpc, build_typed
from pymprpc.protocol import ClientConnection
from pymprpc.server.handler import ConnectionHandler


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0
        self.data: list[bytes] = []
        self.keep = True

    def write(self, data: Any) -> None:
        self.writes += 1
        if self.keep:
            self.data.append(bytes(data))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1) if name == "peername" else default

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0

    def close(self) -> None:
        pass


def pymprpc_connections(
    conns: int, typed: bool = False, inflight: int = 1
) -> tuple[list[tuple[ConnectionHandler, FakeTransport]], bytes]:
    server = build_typed(0) if typed else build_pymprpc(0)
    core = server._core
    out = []
    request = b""
    for _ in range(conns):
        handler = ConnectionHandler(core)
        transport = FakeTransport()
        handler.connection_made(transport)
        client = ClientConnection()
        client.start()
        for chunk in client.chunks_to_send():
            handler.data_received(chunk)
        for chunk in transport.data:
            client.receive_data(chunk)
        transport.data.clear()
        transport.keep = False
        if not request:
            for _ in range(inflight):  # distinct IDs: all in flight at once
                client.send_call("slow_add" if typed else "add", (1, 2))
            request = b"".join(client.chunks_to_send())
        out.append((handler, transport))
    return out, request


async def one_pass() -> None:
    await asyncio.sleep(0)


async def drive(readers: list[Any], request: bytes, rounds: int) -> None:
    """Feed `request` to every reader once per loop pass, from a plain callback (as the
    transport does: no task is current), for `rounds` passes."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    left = rounds

    def one_round() -> None:
        nonlocal left
        for reader in readers:
            reader.data_received(request)
        left -= 1
        if left:
            loop.call_soon(one_round)
        else:
            loop.call_soon(done.set_result, None)

    loop.call_soon(one_round)
    await done


async def measure_pymprpc(
    conns: int, calls: int, profile: bool, typed: bool = False, inflight: int = 1
) -> float:
    handlers, request = pymprpc_connections(conns, typed, inflight)
    rounds = max(1, calls // (conns * inflight))
    readers = [h for h, _ in handlers]
    await drive(readers, request, 1)  # warm-up
    prof = cProfile.Profile() if profile else None
    start = time.process_time()
    if prof:
        prof.enable()
    await drive(readers, request, rounds)
    if prof:
        prof.disable()
    elapsed = time.process_time() - start
    if inflight == 1:
        assert all(t.writes == rounds + 2 for _, t in handlers), "one write per reply"
    if prof:
        pstats.Stats(prof).sort_stats(os.environ.get("SORT", "tottime")).print_stats(70)
    return elapsed / (rounds * conns * inflight) * 1e6


async def measure_floor(conns: int, calls: int, inflight: int = 1) -> float:
    servers = []
    for _ in range(conns):
        s = floor.FloorTaskServer()
        s.connection_made(FakeTransport())
        servers.append(s)
    request = b""
    for id in range(inflight):
        payload = msgpack.packb([id, "add", [1, 2]])
        request += floor.HEADER.pack(len(payload)) + payload
    rounds = max(1, calls // (conns * inflight))
    start = time.process_time()
    await drive(servers, request, rounds)
    await one_pass()
    return (time.process_time() - start) / (rounds * conns * inflight) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--conns", type=int, default=200)
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--inflight", type=int, default=1, help="calls per read")
    parser.add_argument("--typed", action="store_true", help="typed slow_add against add")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    conns, calls, inflight, typed = args.conns, args.calls, args.inflight, args.typed

    async def both() -> None:
        if args.profile:
            await measure_pymprpc(conns, calls, True, typed, inflight)
            return
        # Interleaved rounds, medians: a busy machine moves single figures a lot.
        py, fl = [], []
        for _ in range(args.rounds):
            py.append(await measure_pymprpc(conns, calls, False, typed, inflight))
            if typed:
                fl.append(await measure_pymprpc(conns, calls, False, False, inflight))
            else:
                fl.append(await measure_floor(conns, calls, inflight))
        ratio = statistics.median(p / f for p, f in zip(py, fl, strict=True))
        what, base = ("typed", "untyped") if typed else ("pymprpc", "floor (task per call)")
        print(
            f"server µs per call: {what} {statistics.median(py):.2f}, {base} "
            f"{statistics.median(fl):.2f}; median ratio {ratio:.2f}"
        )

    asyncio.run(both())


if __name__ == "__main__":
    main()
