"""`python -m bench.poolcost [--calls N] [--rounds R] [--workload w1|w2|w4]
[--compare PATH] [--in-process [--profile]]`: what one call costs on the process pool
against the same call on a coroutine, in CPU time and context switches, steady on a busy
machine.

A server (`bench.servers pymprpc`, its default pool) runs in its own process; this
process is the client. Rounds alternate the coroutine method and the plain one (`add` /
`padd`, or `echo` / `pecho` of 1 MiB for w4; w2 keeps 64 in flight). Over each measured
window it reads, from /proc, the user + system CPU time and the context switches of the
server, of its worker processes (the zygote's children) and of this client, and divides
by the calls made. Wall-clock throughput moves with whatever else the machine runs; CPU
per call and switches per call do not, so a change to the pool shows here first.

`--in-process` drives the server's connection handler in this process with a fake
transport (no client, no TCP; the workers are real processes), one sequential `add` or
`padd` at a time (`--workload w4`: `echo` / `pecho` of 1 MiB, `--chunk N`: fed in reads of
N bytes; `--in-flight K`: K calls per read, as W2's client sends them), and
reports this process's CPU time and page faults per call, the workers', and the event-loop passes
(selector waits) per call. `--profile` prints the server's cProfile of the `padd` calls.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import resource
import selectors
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.__main__ import free_port, stop_process, wait_line
from bench.clients import MAX_MESSAGE, PAYLOAD
from bench.hotpath import FakeTransport
from pymprpc.client import AsyncRPC

HERE = Path(__file__).resolve().parent


def _stat(pid: int) -> tuple[float, int, int]:
    """CPU seconds, voluntary and involuntary context switches of `pid`, all its threads.

    From schedstat (nanoseconds on the CPU), not stat's clock ticks of 10 ms.
    """
    cpu = 0.0
    voluntary = involuntary = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        cpu += int((task / "schedstat").read_text().split()[0]) / 1e9
        for line in (task / "status").read_text().splitlines():
            if line.startswith("voluntary_ctxt_switches"):
                voluntary += int(line.split()[1])
            elif line.startswith("nonvoluntary_ctxt_switches"):
                involuntary += int(line.split()[1])
    return cpu, voluntary, involuntary


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        out += [int(p) for p in text]
    return out


def _workers(server: int) -> list[int]:
    """The pool's workers: children of the server's children (the zygote)."""
    return [w for z in _children(server) for w in _children(z)]


def _sample(pids: dict[str, list[int]]) -> dict[str, tuple[float, int, int]]:
    out = {}
    for role, group in pids.items():
        total = [0.0, 0, 0]
        for pid in group:
            try:
                sample = _stat(pid)
            except OSError:
                continue
            for i, value in enumerate(sample):
                total[i] += value
        out[role] = (total[0], int(total[1]), int(total[2]))
    return out


async def _run(rpc: AsyncRPC, method: str, workload: str, calls: int) -> None:
    if workload == "w1":
        for i in range(calls):
            await rpc.call(method, i, 1)
    elif workload == "w4":
        for _ in range(calls):
            await rpc.call(method, PAYLOAD)
    else:
        sem = asyncio.Semaphore(64)

        async def one(i: int) -> None:
            async with sem:
                await rpc.call(method, i, 1)

        await asyncio.gather(*(one(i) for i in range(calls)))


class _Server:
    """A bench server process (`pymprpc` from `path` when given) and a client of it."""

    def __init__(self, label: str, path: str | None, workers: int | None) -> None:
        self.label = label
        port = free_port()
        cmd = [sys.executable, "-m", "bench.servers", "pymprpc", str(port)]
        if workers:
            cmd += ["--workers", str(workers)]
        env = dict(os.environ)
        if path:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [path, env.get("PYTHONPATH")]))
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, text=True, cwd=HERE.parent, env=env
        )
        assert self.proc.stdout is not None
        wait_line(self.proc.stdout, "ready")
        self.port = port
        self.rpc: AsyncRPC | None = None
        self.pids: dict[str, list[int]] = {}

    async def connect(self) -> AsyncRPC:
        self.rpc = AsyncRPC(f"tcp://127.0.0.1:{self.port}", max_message_size=MAX_MESSAGE)
        await self.rpc.connect()
        return self.rpc

    def stop(self) -> None:
        stop_process(self.proc)


async def main(
    calls: int, rounds: int, workload: str, workers: int | None, compare: str | None
) -> None:
    pair = ("echo", "pecho") if workload == "w4" else ("add", "padd")
    servers = [_Server("this tree", None, workers)]
    if compare:
        servers.insert(0, _Server(compare, compare, workers))
    results: dict[tuple[str, str], dict[str, list[float]]] = {}
    try:
        for server in servers:
            rpc = await server.connect()
            for method in pair:  # warm-up (and the workers' start)
                await _run(rpc, method, workload, max(10, calls // 10))
            server.pids = {
                "server": [server.proc.pid],
                "workers": _workers(server.proc.pid),
                "client": [os.getpid()],
            }
        for _ in range(rounds):
            for server in servers:
                assert server.rpc is not None
                for method in pair:
                    before, t0 = _sample(server.pids), time.perf_counter()
                    await _run(server.rpc, method, workload, calls)
                    after, t1 = _sample(server.pids), time.perf_counter()
                    row = results.setdefault((server.label, method), {})
                    row.setdefault("calls/s", []).append(calls / (t1 - t0))
                    for role, now in after.items():
                        delta = [a - b for a, b in zip(now, before[role], strict=True)]
                        row.setdefault(f"{role} CPU µs", []).append(delta[0] / calls * 1e6)
                        row.setdefault(f"{role} waits", []).append(delta[1] / calls)
                        row.setdefault(f"{role} preempted", []).append(delta[2] / calls)
        for server in servers:
            assert server.rpc is not None
            await server.rpc.close()
    finally:
        for server in servers:
            server.stop()
    print(f"{workload}, {calls} calls x {rounds} rounds, medians (min-max) per call")
    for (label, method), row in results.items():
        print(f"  {label}: {method}")
        for key, values in row.items():
            med = statistics.median(values)
            print(f"    {key:20} {med:10.1f}  ({min(values):.1f}-{max(values):.1f})")
    for server in servers:
        coroutine, plain = (results[(server.label, m)] for m in pair)
        ratio = [p / c for p, c in zip(plain["calls/s"], coroutine["calls/s"], strict=True)]
        cpu = [
            (p1 + p2) / (c1 + c2)
            for p1, p2, c1, c2 in zip(
                plain["server CPU µs"],
                plain["workers CPU µs"],
                coroutine["server CPU µs"],
                coroutine["workers CPU µs"],
                strict=True,
            )
        ]
        print(
            f"  {server.label}: plain / coroutine calls/s per round "
            f"{' '.join(f'{r:.2f}' for r in ratio)} (median {statistics.median(ratio):.2f}); "
            f"server + workers CPU per call, plain / coroutine: median "
            f"{statistics.median(cpu):.2f}"
        )


class _FakeTransport(FakeTransport):
    """hotpath's fake transport that counts the bytes written; `then()` runs once
    `expected` more have been."""

    def __init__(self) -> None:
        super().__init__()
        self.written = 0
        self.expected = 0
        self.then: Callable[[], None] | None = None

    def write(self, data: Any) -> None:
        super().write(data)
        self.written += len(data)
        if self.written >= self.expected and self.then is not None:
            then, self.then = self.then, None
            then()


class _CountingSelector(selectors.DefaultSelector):  # type: ignore[misc,valid-type]
    """Counts the loop's waits for I/O: one per event-loop pass."""

    waits = 0

    def select(self, timeout: float | None = None) -> Any:
        _CountingSelector.waits += 1
        return super().select(timeout)


def _faults(pid: int) -> int:
    """Minor page faults of `pid` so far (a fresh page touched: ~3 µs each on a VM)."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[7])


def _in_process(
    calls: int, rounds: int, profile: bool, in_flight: int, workload: str = "w1", chunk: int = 0
) -> None:
    from bench.servers import build_pymprpc
    from pymprpc.protocol import ClientConnection
    from pymprpc.server.handler import ConnectionHandler

    loop = asyncio.SelectorEventLoop(_CountingSelector())
    asyncio.set_event_loop(loop)
    server = build_pymprpc(0)
    core = server._core
    transport = _FakeTransport()

    async def setup() -> tuple[ConnectionHandler, dict[str, bytes]]:
        core.executors.warm_up()
        handler = ConnectionHandler(core)
        handler.connection_made(transport)
        client = ClientConnection()
        client.start()
        for chunk in client.chunks_to_send():
            handler.data_received(chunk)
        for chunk in transport.data:
            client.receive_data(chunk)
        transport.data.clear()
        transport.keep = False
        requests = {}
        for method, args in pair:
            for _ in range(in_flight):  # as one read: the calls' IDs differ
                client.send_call(method, args)
            requests[method] = b"".join(client.chunks_to_send())
        return handler, requests

    pair: tuple[tuple[str, tuple[Any, ...]], ...] = (
        (("echo", (PAYLOAD,)), ("pecho", (PAYLOAD,)))
        if workload == "w4"
        else (("add", (1, 2)), ("padd", (1, 2)))
    )
    coroutine, plain = (m for m, _ in pair)

    handler, requests = loop.run_until_complete(setup())

    reply_bytes: dict[bytes, int] = {}

    def sequential(request: bytes, n: int) -> None:
        """`n` reads of `in_flight` calls each, each fed (from a plain callback, as a
        transport does) once every reply to the previous one was written."""
        done = loop.create_future()
        left = n // in_flight

        def feed() -> None:
            nonlocal left
            if not left:
                done.set_result(None)
                return
            left -= 1
            transport.expected = transport.written + reply_bytes.get(request, 1)
            transport.then = lambda: loop.call_soon(feed)
            if chunk:  # as the transport reads it: `chunk` bytes at a time
                for i in range(0, len(request), chunk):
                    handler.data_received(request[i : i + chunk])
            else:
                handler.data_received(request)

        if request not in reply_bytes:  # learn how many bytes the replies take
            start = transport.written
            transport.expected = 1 << 62
            loop.call_soon(handler.data_received, request)
            loop.run_until_complete(asyncio.sleep(0.5))
            reply_bytes[request] = transport.written - start
        loop.call_soon(feed)
        loop.run_until_complete(done)

    pool = core.executors.process
    workers = [w.pid for w in pool._workers]
    for method in requests:
        sequential(requests[method], max(10, calls // 10))  # warm-up
    figures: dict[str, dict[str, list[float]]] = {m: {} for m in requests}
    for _ in range(rounds):
        for method, request in requests.items():
            before = _sample({"workers": workers})["workers"][0]
            faults = [_faults(pid) for pid in (os.getpid(), *workers)]  # before
            waits, cpu = _CountingSelector.waits, time.process_time()
            wall = time.perf_counter()
            ru = resource.getrusage(resource.RUSAGE_SELF)
            sequential(request, calls)
            cpu, waits = time.process_time() - cpu, _CountingSelector.waits - waits
            ru2 = resource.getrusage(resource.RUSAGE_SELF)
            wall = time.perf_counter() - wall
            pids = (os.getpid(), *workers)
            faults = [_faults(pid) - n for pid, n in zip(pids, faults, strict=True)]
            after = _sample({"workers": workers})["workers"][0]
            row = figures[method]
            row.setdefault("server CPU µs", []).append(cpu / calls * 1e6)
            row.setdefault("workers CPU µs", []).append((after - before) / calls * 1e6)
            row.setdefault("loop passes", []).append(waits / calls)
            row.setdefault("server user µs", []).append((ru2.ru_utime - ru.ru_utime) / calls * 1e6)
            row.setdefault("server system µs", []).append(
                (ru2.ru_stime - ru.ru_stime) / calls * 1e6
            )
            row.setdefault("wall µs", []).append(wall / calls * 1e6)
            row.setdefault("server sleeps", []).append((ru2.ru_nvcsw - ru.ru_nvcsw) / calls)
            row.setdefault("server page faults", []).append(faults[0] / calls)
            row.setdefault("workers page faults", []).append(sum(faults[1:]) / calls)
    if profile:
        for method, request in requests.items():
            prof = cProfile.Profile()
            prof.enable()
            sequential(request, calls)
            prof.disable()
            stats = pstats.Stats(prof)
            if method == plain:
                stats.sort_stats(os.environ.get("SORT", "tottime")).print_stats(45)
            calls_made = stats.total_calls  # type: ignore[attr-defined]
            print(f"function calls per {method} call: {calls_made / calls:.1f}")
    core.executors.shutdown()
    loop.close()
    print(
        f"in process, {in_flight} call(s) per read, {calls} calls x {rounds} rounds, "
        "medians (min-max) per call"
    )
    for method, row in figures.items():
        print(f"  {method}:")
        for key, values in row.items():
            med = statistics.median(values)
            print(f"    {key:20} {med:10.2f}  ({min(values):.2f}-{max(values):.2f})")
    extra = [
        p - c
        for p, c in zip(
            figures[plain]["server CPU µs"], figures[coroutine]["server CPU µs"], strict=True
        )
    ]
    print(f"  the pool's cost to the server per call: {statistics.median(extra):.2f} µs")


def parse(argv: list[str] | None = None) -> Any:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workload", choices=("w1", "w2", "w4"), default="w1")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--in-process", action="store_true")
    parser.add_argument("--in-flight", type=int, default=1, help="calls per read (in process)")
    parser.add_argument(
        "--chunk",
        type=int,
        default=0,
        help="in process: feed each request in reads of this many bytes (0: whole)",
    )
    parser.add_argument("--profile", action="store_true")
    parser.add_argument(
        "--compare",
        metavar="PATH",
        help="also run a server importing pymprpc from PATH (say, a copy of runtime/ at "
        "another commit), rounds interleaved with this tree's",
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    args = parse()
    if args.in_process:
        _in_process(
            args.calls, args.rounds, args.profile, args.in_flight, args.workload, args.chunk
        )
        raise SystemExit
    asyncio.run(main(args.calls, args.rounds, args.workload, args.workers, args.compare))
