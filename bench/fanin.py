"""`python -m bench.fanin SYSTEM PORT SECONDS --conns N [--active K] [--server-pid P]`.

The fan-in workload: one asyncio client process opens N connections and keeps one `add`
in flight on each of K of them (K = N unless `--active`), as a busy server sees its
load: many connections with a call in flight each, not one pipelined connection.

Prints one JSON line: calls/s, p50/p99 latency, CPU per call of this process and of the
server (user + system time from /proc, over the measured window), and, with
`--server-pid`, the server's RSS growth per connection while holding them.

`--hold H --active K --server-pid P` (pymprpc): what H - K idle connections cost K
active ones, closed loop and open loop (calls sent at a fixed rate), against a baseline
of `--base` connections, in one client and one server process (see `run_held`).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bench import floor, grpc_support
from pymprpc.client import AsyncRPC

CLK_TCK = os.sysconf("SC_CLK_TCK")
CONNECT_BATCH = 100
SEND_QUANTUM = 0.0005  # open loop: seconds between the sender's wake-ups, at least


def raise_nofile() -> None:
    """Let this process hold as many sockets as the hard limit allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def gc_log_path(pid: int) -> str:
    """Where bench server `pid` logs its garbage-collection pauses (servers.log_gc_pauses)."""
    return f"/tmp/bench-gc-{pid}.log"


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


async def open_many(system: str, port: int, count: int) -> list[tuple[Call, Any]]:
    """`count` connections, each set up and authenticated by one call (gRPC is lazy)."""
    clients: list[tuple[Call, Any]] = []
    for start in range(0, count, CONNECT_BATCH):
        batch = min(CONNECT_BATCH, count - start)
        clients += await asyncio.gather(*(open_one(system, port) for _ in range(batch)))
    for start in range(0, count, CONNECT_BATCH):
        assert all(
            r == 3
            for r in await asyncio.gather(*(c() for c, _ in clients[start : start + CONNECT_BATCH]))
        )
    return clients


class GcPauses:
    """This process's garbage collections of the oldest generation, and the longest
    pause of any collection: what stalls every connection of the process at once."""

    def __init__(self) -> None:
        self.full = 0
        self.longest = 0.0
        self._started = 0.0
        self.on = False

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if not self.on:
            return
        if phase == "start":
            self._started = time.perf_counter()
            return
        self.longest = max(self.longest, time.perf_counter() - self._started)
        self.full += info["generation"] == 2

    def __enter__(self) -> GcPauses:
        self.full, self.longest, self.on = 0, 0.0, True
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self.on = False
        gc.callbacks.remove(self)


class Window:
    """CPU time of this process and of the server, and this process's collections, over
    the measured window."""

    def __init__(self, server_pid: int | None) -> None:
        self.server_pid = server_pid
        self.gc = GcPauses()

    def __enter__(self) -> Window:
        self.gc.__enter__()
        self.m0 = time.monotonic()
        self.t0, self.c0 = time.perf_counter(), cpu_seconds("self")
        self.s0 = cpu_seconds(self.server_pid) if self.server_pid else 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.t1, self.c1 = time.perf_counter(), cpu_seconds("self")
        self.m1 = time.monotonic()
        self.s1 = cpu_seconds(self.server_pid) if self.server_pid else 0.0
        self.gc.__exit__()

    def result(self, latencies: list[float], count: int) -> dict[str, Any]:
        q = statistics.quantiles(latencies, n=100)
        out = {
            "rate": count / (self.t1 - self.t0),
            "p50_us": q[49] * 1e6,
            "p99_us": q[98] * 1e6,
            "client_us": (self.c1 - self.c0) / count * 1e6,
            "client_full_gcs": self.gc.full,
            "client_longest_gc_ms": self.gc.longest * 1e3,
        }
        if self.server_pid:
            out["server_us"] = (self.s1 - self.s0) / count * 1e6
            out |= self.server_gc()
        return out

    def server_gc(self) -> dict[str, Any]:
        """The server's full collections and longest pause within the window, from the
        log bench.servers keeps (none: not one of those servers)."""
        assert self.server_pid
        try:
            with open(gc_log_path(self.server_pid)) as f:
                lines = [line.split() for line in f]
        except OSError:
            return {}
        within = [(float(d), int(g)) for end, d, g in lines if self.m0 <= float(end) <= self.m1]
        return {
            "server_full_gcs": sum(g == 2 for _, g in within),
            "server_longest_gc_ms": max((d for d, _ in within), default=0.0) * 1e3,
        }


async def closed_loop(calls: list[Call], seconds: float, server_pid: int | None) -> dict[str, Any]:
    """One call in flight on each of `calls`' connections, the next sent when it returns."""
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

    workers = [asyncio.ensure_future(worker(c)) for c in calls]
    await asyncio.sleep(min(0.5, seconds / 4))  # warm-up
    measuring = True
    with Window(server_pid) as window:
        await asyncio.sleep(seconds)
        measuring = False
    stopping = True
    await asyncio.gather(*workers)
    return window.result(latencies, count)


async def open_loop(
    calls: list[Call], rate: float, seconds: float, server_pid: int | None
) -> dict[str, Any]:
    """Calls sent at `rate` per second whatever the replies do, round-robin over `calls`'
    connections (a connection may then have several in flight). Latency counts from the
    time a call was due, so a client that falls behind shows as latency (no coordinated
    omission)."""
    latencies: list[float] = []
    perf = time.perf_counter
    interval = 1.0 / rate
    warm_up = min(0.5, seconds / 4)
    begin = perf()
    measured_from, stop_at = begin + warm_up, begin + warm_up + seconds
    in_flight: set[asyncio.Future[None]] = set()
    sent = 0

    async def one(call: Call, due: float) -> None:
        await call()
        if due >= measured_from:
            latencies.append(perf() - due)

    window = Window(server_pid)
    due = begin
    while due < stop_at:
        now = perf()
        if now >= measured_from and not window.gc.on:
            window.__enter__()
            sent = 0
        while due <= now and due < stop_at:
            task = asyncio.ensure_future(one(calls[sent % len(calls)], due))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
            sent += 1
            due += interval
        # The sender wakes at most every SEND_QUANTUM and sends every call due by then: a
        # wake-up per call (tens of µs each on this VM) made the sender the bottleneck
        # well before the server, and its p99 the sender's queue. Latency still counts
        # from when each call was due, so the quantum adds at most its length to a call.
        await asyncio.sleep(max(SEND_QUANTUM, due - perf()))
    window.__exit__()
    await asyncio.gather(*in_flight)  # the calls due in the window are counted once answered
    result = window.result(latencies, sent)
    result["offered"] = rate
    result["rate"] = len(latencies) / (window.t1 - window.t0)
    return result


async def run(
    system: str, port: int, seconds: float, conns: int, active: int, server_pid: int | None
) -> dict[str, Any]:
    """The closed loop on `active` of `conns` connections."""
    rss_before = rss_kib(server_pid) if server_pid else 0
    clients = await open_many(system, port, conns)
    # The connections and everything set up so far live until the end: out of the
    # collector's way, so a full collection of this process (tens of ms with 1,000
    # clients) does not stall every call in the window and become the p99. Same for
    # every system measured.
    gc.freeze()
    result: dict[str, Any] = {"connections": conns, "active": active}
    if server_pid:
        await asyncio.sleep(0.5)
        result["server_kib_per_conn"] = (rss_kib(server_pid) - rss_before) / conns
    result |= await closed_loop([c for c, _ in clients[:active]], seconds, server_pid)
    for _, close in clients:
        if close is not None:
            await close()
    return result


async def run_held(
    port: int,
    seconds: float,
    held: int,
    active: int,
    base: int,
    server_pid: int,
    rate: float | None,
    load: float,
) -> dict[str, Any]:
    """What `held - active` idle connections cost the `active` ones, one server process
    and one client process throughout.

    `active` connections first, closed loop on `base` of them and on all (the lower of
    their calls/s sets the offered rate, `load` times it, unless `rate` is given); then
    the open loop at that rate on `base` and on `active`. Then the idle connections are
    opened (server RSS growth per held connection), and the `active` ones measured again,
    both ways.
    With one call in flight per connection mean latency is connections / calls per
    second (Little's law), so only open-loop latencies at one offered rate compare
    `base` connections with `active`. The idle connections are held by a second client
    process (see below)."""
    rss_before = rss_kib(server_pid)
    clients = await open_many("pymprpc", port, active)
    # The connections and everything set up so far live until the end: out of the
    # collector's way, so a full collection of this process (tens of ms with 1,000
    # clients) does not stall every call in the window and become the p99. Same for
    # every system measured.
    gc.freeze()
    calls = [c for c, _ in clients]
    out: dict[str, Any] = {"connections": held, "active": active, "base": base}
    out["closed_base"] = await closed_loop(calls[:base], seconds, server_pid)
    out["closed_active"] = await closed_loop(calls, seconds, server_pid)
    # Below what both sustain: an open loop this client cannot keep up with (it spends
    # more per call than the closed loop: a task per call) measures the client's queue.
    offered = rate or min(out["closed_base"]["rate"], out["closed_active"]["rate"]) * load
    out["offered"] = offered
    out["open_base"] = await open_loop(calls[:base], offered, seconds, server_pid)
    out["open_active"] = await open_loop(calls, offered, seconds, server_pid)
    # The idle ones come from another process: this one keeps the same connections
    # throughout, so the comparison is the server's (a client process holding 9,000 more
    # would add its own garbage-collection pauses, as long as the server's or longer).
    holder = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.fanin",
        "pymprpc",
        str(port),
        "0",
        "--idle-holder",
        str(held - active),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert holder.stdin is not None and holder.stdout is not None
    try:
        if await holder.stdout.readline() != b"held\n":
            raise RuntimeError("the idle-connection holder failed (see its stderr)")
        await asyncio.sleep(0.5)
        out["server_kib_per_conn"] = (rss_kib(server_pid) - rss_before) / held
        out["closed_held"] = await closed_loop(calls, seconds, server_pid)
        out["open_held"] = await open_loop(calls, offered, seconds, server_pid)
    finally:
        holder.stdin.close()  # it closes its connections and exits
        await holder.wait()
    for _, close in clients:
        if close is not None:
            await close()
    return out


async def hold_idle(port: int, count: int) -> None:
    """Open `count` authenticated connections, say "held", keep them until stdin ends."""
    clients = await open_many("pymprpc", port, count)
    print("held", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for _, close in clients:
        if close is not None:
            await close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("system")
    parser.add_argument("port", type=int)
    parser.add_argument("seconds", type=float)
    parser.add_argument("--conns", type=int, default=200)
    parser.add_argument("--active", type=int)
    parser.add_argument("--server-pid", type=int)
    parser.add_argument("--uvloop", action="store_true")
    parser.add_argument(
        "--hold",
        type=int,
        help="pymprpc only: the idle-connection study with this many held (see run_held)",
    )
    parser.add_argument("--base", type=int, default=200, help="with --hold: the baseline N")
    parser.add_argument("--idle-holder", type=int, help=argparse.SUPPRESS)  # see run_held
    parser.add_argument("--rate", type=float, help="with --hold: offered calls/s (open loop)")
    parser.add_argument(
        "--load",
        type=float,
        default=0.5,
        help="with --hold and no --rate: offered calls/s as this fraction of the base's "
        "closed-loop calls/s",
    )
    args = parser.parse_args()
    raise_nofile()
    if args.uvloop:
        import uvloop

        uvloop.install()
    active = args.conns if args.active is None else args.active
    if args.idle_holder:
        asyncio.run(hold_idle(args.port, args.idle_holder))
        return
    if args.hold:
        if args.system != "pymprpc" or not args.server_pid:
            raise SystemExit("--hold measures pymprpc, and needs --server-pid")
        study = run_held(
            args.port,
            args.seconds,
            args.hold,
            active,
            args.base,
            args.server_pid,
            args.rate,
            args.load,
        )
        result = asyncio.run(study)
    else:
        result = asyncio.run(
            run(args.system, args.port, args.seconds, args.conns, active, args.server_pid)
        )
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
