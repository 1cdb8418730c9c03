"""`python -m bench.hotpath [--conns N] [--calls C] [--pipeline K] [--typed] [--uvloop]
[--profile] [--idle M]`: the server's per-call cost under fan-in, in process, without
sockets.

N connections each receive one `add` call per read (as in the fan-in workload; K calls
per read with `--pipeline K`, W2's shape with `--conns 1 --pipeline 64`), with one
event-loop pass after every round of reads; the transports are fakes that only count
writes. This isolates what the server's Python code costs per call (the syscalls, equal
for every system, are left out), for pymprpc and for the floor with a task per call, so
a change can be judged on a busy machine where wall-clock figures wobble. `--uvloop`
runs the loop on uvloop instead of asyncio's; `--profile` prints the pymprpc run's
cProfile, by own time. `--typed` compares the generated Calculator servicer's `slow_add`
(arguments checked against the IDL's types) with the untyped `add` instead of the floor.
`--idle M` compares pymprpc with itself holding M more
authenticated connections that stay idle (what idle connections cost the active ones'
calls: the garbage collector walks them), instead of with the floor.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import os
import pstats
import statistics
import time
from collections.abc import Coroutine
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
    conns: int, pipeline: int = 1, typed: bool = False
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
            for _ in range(pipeline):  # distinct IDs: all in flight at once
                client.send_call("slow_add" if typed else "add", (1, 2))
            request = b"".join(client.chunks_to_send())
        out.append((handler, transport))
    return out, request


def run_loop(main: Coroutine[Any, Any, None], uvloop: bool) -> None:
    """Run `main` on a new asyncio loop, or on a uvloop one."""
    if uvloop:
        import uvloop as uv

        with asyncio.Runner(loop_factory=uv.new_event_loop) as runner:
            runner.run(main)
    else:
        asyncio.run(main)


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


class Collections:
    """Garbage collections (all, and full ones) and their time while entered."""

    def __init__(self) -> None:
        self.count = self.full = 0
        self.seconds = 0.0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.process_time()
            return
        self.count += 1
        self.full += info["generation"] == 2
        self.seconds += time.process_time() - self._started

    def __enter__(self) -> Collections:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self)


async def measure_pymprpc(
    conns: int,
    calls: int,
    profile: bool,
    pipeline: int = 1,
    gcs: Collections | None = None,
    typed: bool = False,
) -> float:
    handlers, request = pymprpc_connections(conns, pipeline, typed)
    rounds = max(1, calls // (conns * pipeline))
    readers = [h for h, _ in handlers]
    await drive(readers, request, 1)  # warm-up
    prof = cProfile.Profile() if profile else None
    start = time.process_time()
    if prof:
        prof.enable()
    if gcs is not None:
        gcs.__enter__()
    await drive(readers, request, rounds)
    if gcs is not None:
        gcs.__exit__()
    if prof:
        prof.disable()
    elapsed = time.process_time() - start
    assert all(t.writes == rounds + 2 for _, t in handlers), "one write per read"
    if prof:
        pstats.Stats(prof).sort_stats(os.environ.get("SORT", "tottime")).print_stats(70)
    return elapsed / (rounds * conns * pipeline) * 1e6


async def measure_floor(conns: int, calls: int, pipeline: int = 1) -> float:
    servers = []
    for _ in range(conns):
        s = floor.FloorTaskServer()
        s.connection_made(FakeTransport())
        servers.append(s)
    payload = msgpack.packb([1, "add", [1, 2]])
    request = (floor.HEADER.pack(len(payload)) + payload) * pipeline
    rounds = max(1, calls // (conns * pipeline))
    start = time.process_time()
    await drive(servers, request, rounds)
    await one_pass()
    return (time.process_time() - start) / (rounds * conns * pipeline) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--conns", type=int, default=200)
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument(
        "--pipeline", type=int, default=1, help="calls per read (W2: --conns 1 --pipeline 64)"
    )
    parser.add_argument("--typed", action="store_true", help="typed slow_add against add")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--uvloop", action="store_true", help="run the loop on uvloop")
    parser.add_argument("--idle", type=int, default=0, help="compare with M idle connections")
    args = parser.parse_args()

    async def idle_cost() -> None:
        # Interleaved rounds, medians: alone, then with the idle connections held.
        alone, held, gcs_alone, gcs_held = [], [], Collections(), Collections()
        for _ in range(args.rounds):
            alone.append(await measure_pymprpc(args.conns, args.calls, False, gcs=gcs_alone))
            idle = pymprpc_connections(args.idle)
            held.append(await measure_pymprpc(args.conns, args.calls, False, gcs=gcs_held))
            del idle
        ratio = statistics.median(h / a for h, a in zip(held, alone, strict=True))
        print(
            f"server µs per call, {args.conns} connections: alone {statistics.median(alone):.2f}"
            f", with {args.idle:,} idle ones held {statistics.median(held):.2f}; median ratio "
            f"{ratio:.2f}. Collections over {args.rounds} rounds, alone: {gcs_alone.count} "
            f"({gcs_alone.full} full, {gcs_alone.seconds * 1e3:.0f} ms); held: "
            f"{gcs_held.count} ({gcs_held.full} full, {gcs_held.seconds * 1e3:.0f} ms)"
        )

    async def both() -> None:
        if args.idle:
            await idle_cost()
            return
        if args.profile:
            await measure_pymprpc(args.conns, args.calls, True, args.pipeline, typed=args.typed)
            return
        # Interleaved rounds, medians: a busy machine moves single figures a lot.
        py, fl = [], []
        for _ in range(args.rounds):
            py.append(
                await measure_pymprpc(
                    args.conns, args.calls, False, args.pipeline, typed=args.typed
                )
            )
            if args.typed:
                fl.append(await measure_pymprpc(args.conns, args.calls, False, args.pipeline))
            else:
                fl.append(await measure_floor(args.conns, args.calls, args.pipeline))
        ratio = statistics.median(p / f for p, f in zip(py, fl, strict=True))
        what, base = ("typed", "untyped") if args.typed else ("pymprpc", "floor (task per call)")
        print(
            f"server µs per call: {what} {statistics.median(py):.2f}, {base} "
            f"{statistics.median(fl):.2f}; median ratio {ratio:.2f}"
        )

    run_loop(both(), args.uvloop)


if __name__ == "__main__":
    main()
