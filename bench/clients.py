"""`python -m bench.clients SYSTEM WORKLOAD PORT SECONDS [--uvloop]`: one measurement, as JSON.

Systems: pymprpc (AsyncRPC), pymprpc-sync (RPC), pymprpc-typed (the generated typed
client against the generated servicer, w1 and w2), floor, grpc. Workloads: w1 (sequential
add), w2 (64 adds in flight), w3 (stream of 100,000 ints), w4 (echo 1 MiB); w1p, w2p, w4p
(the same as plain functions on the process pool) and w5t (sequential add on the thread
pool), pymprpc only; cpu (2 ms of pure-Python work per call, 8 in flight, process pool);
mem (hold 1,000 idle authenticated connections until stdin closes).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from bench import floor, grpc_support
from generated_examples.calculator import AsyncCalculatorClient
from pymprpc.client import RPC, AsyncRPC

MAX_MESSAGE = 64 * 1024 * 1024
PAYLOAD = bytes(range(256)) * 4096  # 1 MiB
STREAM_ITEMS = 100_000
IN_FLIGHT = 64
CPU_MS = 2.0
CPU_IN_FLIGHT = 8
IDLE_CONNECTIONS = 1000


class AsyncCalls:
    """The calls a workload makes, whatever the system (`add`: a system's own `add(a, b)`,
    called instead of `call("add", a, b)`)."""

    def __init__(
        self,
        call: Callable[..., Awaitable[Any]],
        stream: Callable[[int], Any],
        add: Callable[[int, int], Awaitable[Any]] | None = None,
    ) -> None:
        self.call = call
        self.stream = stream
        self.add = add


async def connect(system: str, port: int, own_connection: bool = False) -> tuple[AsyncCalls, Any]:
    if system in ("pymprpc", "pymprpc-otel", "pymprpc-otel-spans"):
        interceptors = []
        if system != "pymprpc":  # ClientTelemetry on every call
            from bench.otel import providers
            from pymprpc.otel import ClientTelemetry

            full = system == "pymprpc-otel"  # else spans alone, as gRPC's instrumentation
            interceptors.append(ClientTelemetry(*providers(full), message_sizes=full))
        rpc = AsyncRPC(
            f"tcp://127.0.0.1:{port}", max_message_size=MAX_MESSAGE, interceptors=interceptors
        )
        await rpc.connect()

        async def stream(n: int) -> AsyncIterator[int]:
            async for item in await rpc.count(n):
                yield item

        return AsyncCalls(rpc.call, stream), rpc.close
    if system == "pymprpc-typed":
        typed = AsyncCalculatorClient(f"tcp://127.0.0.1:{port}")
        await typed.connect()

        def typed_call(method: str, *args: Any) -> Awaitable[Any]:
            assert method == "add", "the typed rows measure add only"
            return typed.slow_add(*args)

        async def no_stream(n: int) -> AsyncIterator[int]:
            raise SystemExit("the typed rows measure add only")
            yield n

        # W1 and W2 call typed.slow_add itself: the row measures the generated client's
        # frames, as the untyped row measures rpc.call's (typed_call was one frame more).
        return AsyncCalls(typed_call, no_stream, typed.slow_add), typed.close
    if system == "floor":
        client = await floor.connect(port)
        return AsyncCalls(client.call, lambda n: client.stream("count", n)), None
    if system in ("grpc", "grpc-otel"):
        g = grpc_support.Client(port, own_connection, otel=system == "grpc-otel")

        async def call(method: str, *args: Any) -> Any:
            return await getattr(g, method)(*args)

        return AsyncCalls(call, g.count), g.close
    raise SystemExit(f"unknown system {system!r}")


async def timed_loop(seconds: float, one: Callable[[], Awaitable[Any]]) -> list[float]:
    latencies = []
    end = time.perf_counter() + seconds
    while (start := time.perf_counter()) < end:
        await one()
        latencies.append(time.perf_counter() - start)
    return latencies


def summary(count: float, elapsed: float, latencies: list[float] | None = None) -> dict[str, Any]:
    result: dict[str, Any] = {"rate": count / elapsed}
    if latencies:
        q = statistics.quantiles(latencies, n=100)
        result |= {"p50_us": q[49] * 1e6, "p99_us": q[98] * 1e6}
    return result


async def run_async(system: str, workload: str, port: int, seconds: float) -> dict[str, Any]:
    if workload == "mem":
        return await hold_connections(system, port)
    calls, close = await connect(system, port)
    try:
        pool = workload in ("w1p", "w2p", "w4p")
        add_method = "padd" if pool else "add"
        echo_method = "pecho" if pool else "echo"
        workload = workload.removesuffix("p") if pool else workload

        direct = None if pool else calls.add
        if direct is not None:

            async def add() -> None:
                assert await direct(1, 2) == 3

        else:

            async def add() -> None:
                assert await calls.call(add_method, 1, 2) == 3

        if workload == "w5t":

            async def one() -> None:
                assert await calls.call("tadd", 1, 2) == 3

            await timed_loop(0.3, one)
            latencies = await timed_loop(seconds, one)
            return summary(len(latencies), sum(latencies), latencies)
        if workload == "cpu":

            async def spin() -> None:
                await calls.call("spin", CPU_MS)

            await asyncio.gather(*(spin() for _ in range(CPU_IN_FLIGHT)))  # warm-up
            done = 0
            end = time.perf_counter() + seconds

            async def spinner() -> None:
                nonlocal done
                while time.perf_counter() < end:
                    await spin()
                    done += 1

            start = time.perf_counter()
            await asyncio.gather(*(spinner() for _ in range(CPU_IN_FLIGHT)))
            return summary(done, time.perf_counter() - start)
        if workload == "w1":
            await timed_loop(0.3, add)
            latencies = await timed_loop(seconds, add)
            return summary(len(latencies), sum(latencies), latencies)
        if workload == "w2":
            await timed_loop(0.3, add)
            counts = [0] * IN_FLIGHT
            end = time.perf_counter() + seconds

            async def worker(i: int) -> None:
                while time.perf_counter() < end:
                    await add()
                    counts[i] += 1

            start, cpu = time.perf_counter(), time.process_time()
            await asyncio.gather(*(worker(i) for i in range(IN_FLIGHT)))
            result = summary(sum(counts), time.perf_counter() - start)
            # This process's CPU per call: what the pair's throughput cannot show.
            return result | {"client_us": (time.process_time() - cpu) / sum(counts) * 1e6}
        if workload == "w3":
            items, start = 0, time.perf_counter()
            while True:
                n = 0
                async for _ in calls.stream(STREAM_ITEMS):
                    n += 1
                assert n == STREAM_ITEMS
                items += n
                if time.perf_counter() - start >= seconds:
                    break
            return summary(items, time.perf_counter() - start)
        if workload == "w4":

            async def echo() -> None:
                assert len(await calls.call(echo_method, PAYLOAD)) == len(PAYLOAD)

            await timed_loop(0.3, echo)
            latencies = await timed_loop(seconds, echo)
            return summary(len(latencies) * len(PAYLOAD) / 1e6, sum(latencies))
        raise SystemExit(f"unknown workload {workload!r}")
    finally:
        if close is not None:
            await close()


async def hold_connections(system: str, port: int) -> dict[str, Any]:
    clients = []
    for _ in range(IDLE_CONNECTIONS // 50):
        batch = await asyncio.gather(*(connect(system, port, True) for _ in range(50)))
        clients += batch
    # One call each, so every connection is set up and authenticated (gRPC connects lazily).
    await asyncio.gather(*(calls.call("add", 1, 2) for calls, _ in clients))
    print(json.dumps({"ready": True}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for _, close in clients:
        if close is not None:
            await close()
    return {"connections": len(clients)}


def run_sync(workload: str, port: int, seconds: float) -> dict[str, Any]:
    if workload != "w1":
        raise SystemExit("the sync client is measured on w1 only")
    with RPC(f"tcp://127.0.0.1:{port}") as rpc:

        def one() -> None:
            assert rpc.add(1, 2) == 3

        for _ in range(200):
            one()
        latencies = []
        end = time.perf_counter() + seconds
        while (start := time.perf_counter()) < end:
            one()
            latencies.append(time.perf_counter() - start)
    return summary(len(latencies), sum(latencies), latencies)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("system")
    parser.add_argument("workload")
    parser.add_argument("port", type=int)
    parser.add_argument("seconds", type=float)
    parser.add_argument("--uvloop", action="store_true")
    args = parser.parse_args()
    if args.system == "pymprpc-sync":
        result = run_sync(args.workload, args.port, args.seconds)
    else:
        if args.uvloop:
            import uvloop

            uvloop.install()
        result = asyncio.run(run_async(args.system, args.workload, args.port, args.seconds))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
