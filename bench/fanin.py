"""`python -m bench.fanin SYSTEM PORT SECONDS --conns N [--active K] [--server-pid P]`.

The fan-in workload: one asyncio client process opens N connections and keeps one `add`
in flight on each of K of them (K = N unless `--active`), as a busy server sees its
load: many connections with a call in flight each, not one pipelined connection.

Prints one JSON line: calls/s, p50/p99 latency, CPU per call of this process and of the
server (user + system time from /proc, over the measured window), and, with
`--server-pid`, the server's RSS growth per connection while holding them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bench import floor, grpc_support
from pymprpc.client import AsyncRPC

CLK_TCK = os.sysconf("SC_CLK_TCK")
CONNECT_BATCH = 100


def raise_nofile() -> None:
    """Let this process hold as many sockets as the hard limit allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def cpu_seconds(pid: int | str) -> float:
    """User + system CPU time of process `pid` (or "self"), from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    # Fields after the command: state is [0]; utime and stime are stat fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


Call = Callable[[], Awaitable[Any]]


async def open_one(system: str, port: int) -> tuple[Call, Callable[[], Awaitable[None]] | None]:
    if system == "pymprpc":
        rpc = AsyncRPC(f"tcp://127.0.0.1:{port}")
        await rpc.connect()
        add = rpc.method("add")

        async def call() -> Any:
            return await add(1, 2)

        return call, rpc.close
    if system == "floor":
        client = await floor.connect(port)

        async def fcall() -> Any:
            return await client.call("add", 1, 2)

        return fcall, None
    if system == "grpc":
        g = grpc_support.Client(port, True)

        async def gcall() -> Any:
            return await g.add(1, 2)

        return gcall, g.close
    raise SystemExit(f"unknown system {system!r}")


async def run(
    system: str, port: int, seconds: float, conns: int, active: int, server_pid: int | None
) -> dict[str, Any]:
    rss_before = rss_kib(server_pid) if server_pid else 0
    clients: list[tuple[Call, Any]] = []
    for start in range(0, conns, CONNECT_BATCH):
        batch = min(CONNECT_BATCH, conns - start)
        clients += await asyncio.gather(*(open_one(system, port) for _ in range(batch)))
    # One call on each, so every connection is set up and authenticated (gRPC is lazy).
    for start in range(0, conns, CONNECT_BATCH):
        assert all(
            r == 3
            for r in await asyncio.gather(*(c() for c, _ in clients[start : start + CONNECT_BATCH]))
        )
    result: dict[str, Any] = {"connections": conns, "active": active}
    if server_pid:
        await asyncio.sleep(0.5)
        result["server_kib_per_conn"] = (rss_kib(server_pid) - rss_before) / conns

    latencies: list[float] = []
    count = 0
    measuring = stopping = False

    async def worker(call: Call) -> None:
        nonlocal count
        perf = time.perf_counter
        while not stopping:
            start = perf()
            await call()
            if measuring:
                latencies.append(perf() - start)
                count += 1

    workers = [asyncio.ensure_future(worker(c)) for c, _ in clients[:active]]
    await asyncio.sleep(min(0.5, seconds / 4))  # warm-up
    measuring = True
    t0, c0 = time.perf_counter(), cpu_seconds("self")
    s0 = cpu_seconds(server_pid) if server_pid else 0.0
    await asyncio.sleep(seconds)
    measuring = False
    t1, c1 = time.perf_counter(), cpu_seconds("self")
    s1 = cpu_seconds(server_pid) if server_pid else 0.0
    stopping = True
    await asyncio.gather(*workers)
    for _, close in clients:
        if close is not None:
            await close()

    q = statistics.quantiles(latencies, n=100)
    result |= {
        "rate": count / (t1 - t0),
        "p50_us": q[49] * 1e6,
        "p99_us": q[98] * 1e6,
        "client_us": (c1 - c0) / count * 1e6,
    }
    if server_pid:
        result["server_us"] = (s1 - s0) / count * 1e6
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("system")
    parser.add_argument("port", type=int)
    parser.add_argument("seconds", type=float)
    parser.add_argument("--conns", type=int, default=200)
    parser.add_argument("--active", type=int)
    parser.add_argument("--server-pid", type=int)
    parser.add_argument("--uvloop", action="store_true")
    args = parser.parse_args()
    raise_nofile()
    if args.uvloop:
        import uvloop

        uvloop.install()
    active = args.conns if args.active is None else args.active
    result = asyncio.run(
        run(args.system, args.port, args.seconds, args.conns, active, args.server_pid)
    )
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
