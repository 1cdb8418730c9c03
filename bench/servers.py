"""`python -m bench.servers SYSTEM PORT [--uvloop]`: serve the workloads until SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import signal
import time
from collections.abc import AsyncIterator

from bench import floor, grpc_support
from bench.fanin import gc_log_path, raise_nofile
from generated_examples.calculator import CalculatorServicer, register_calculator
from generated_examples.geometry import Shape
from pymprpc.server import Server

MAX_MESSAGE = 64 * 1024 * 1024


def log_gc_pauses() -> None:
    """Append `end duration generation` (time.monotonic seconds) to gc_log_path for every
    full collection and every pause of 1 ms or more: the fan-in client reads those that
    ended within its measured window. Both processes read the same monotonic clock."""
    path = gc_log_path(os.getpid())
    started = 0.0

    def callback(phase: str, info: dict[str, int]) -> None:
        nonlocal started
        if phase == "start":
            started = time.monotonic()
            return
        end = time.monotonic()
        if info["generation"] == 2 or end - started >= 0.001:
            with open(path, "a") as f:
                f.write(f"{end} {end - started} {info['generation']}\n")

    gc.callbacks.append(callback)


FANIN_IDLE = 10_000  # connections the fan-in workload holds


def padd(a: int, b: int) -> int:
    return a + b


def pecho(data: bytes) -> bytes:
    return data


def spin(ms: float) -> int:
    """Pure-Python CPU work for `ms` milliseconds (holds the GIL throughout)."""
    end = time.perf_counter() + ms / 1000
    n = 0
    while time.perf_counter() < end:
        n += 1
    return n


def build_pymprpc(
    port: int, otel: bool = False, workers: int | None = None, spans_only: bool = False
) -> Server:
    interceptors = []
    if otel:  # the "pymprpc + OTel" rows: ServerTelemetry on every call
        from bench.otel import providers
        from pymprpc.otel import ServerTelemetry

        interceptors.append(
            ServerTelemetry(*providers(not spans_only), message_sizes=not spans_only)
        )
    server = Server(
        ("127.0.0.1", port),
        timeout=None,
        max_message_size=MAX_MESSAGE,
        max_connections=FANIN_IDLE + 1000,
        backlog=4096,
        interceptors=interceptors,
        max_workers=workers,
    )

    @server.register_function()
    async def add(a: int, b: int) -> int:
        return a + b

    @server.register_function()
    async def echo(data: bytes) -> bytes:
        return data

    @server.register_function()
    async def count(n: int) -> AsyncIterator[int]:
        for i in range(n):
            yield i

    # Plain functions: the default executor, the process pool.
    server.register_function("padd")(padd)
    server.register_function("pecho")(pecho)
    server.register_function("spin")(spin)
    server.register_function("tadd", executor="thread")(padd)
    return server


class BenchCalculator(CalculatorServicer):
    """The generated Calculator service; the typed rows call slow_add, a coroutine
    (implemented here without the wait its name promises) like the untyped `add`."""

    def add(self, a: int, b: int) -> int:
        return a + b

    async def slow_add(self, a: int, b: int = 1) -> int:
        return a + b

    async def count(self, n: int) -> AsyncIterator[int]:
        for i in range(n):
            yield i

    def area(self, shape: Shape) -> float:
        return 0.0

    def old_add(self, a: int, b: int) -> int:
        return a + b

    def log(self, line: str) -> None:
        pass

    async def translate(self, shape: Shape, dx: float = 0.0, dy: float = 0.0) -> Shape:
        return shape


def build_typed(port: int) -> Server:
    server = Server(("127.0.0.1", port), timeout=None, max_message_size=MAX_MESSAGE)
    register_calculator(server, BenchCalculator())
    return server


async def main(system: str, port: int, workers: int | None = None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if system in ("pymprpc", "pymprpc-otel", "pymprpc-otel-spans", "pymprpc-typed"):
        if system == "pymprpc-typed":
            server = build_typed(port)
        else:
            server = build_pymprpc(
                port,
                otel=system.startswith("pymprpc-otel"),
                workers=workers,
                spans_only=system == "pymprpc-otel-spans",
            )
        await server.start()
        print("ready", flush=True)
        await stop.wait()
        await server.close(grace=0)
    elif system in ("floor", "floor-task"):
        raw = await floor.serve(port, tasks=system == "floor-task")
        print("ready", flush=True)
        await stop.wait()
        raw.close()
    elif system in ("grpc", "grpc-otel"):
        grpc_server = await grpc_support.serve(port, otel=system == "grpc-otel")
        print("ready", flush=True)
        await stop.wait()
        await grpc_server.stop(0)
    else:
        raise SystemExit(f"unknown system {system!r}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("system")
    parser.add_argument("port", type=int)
    parser.add_argument("--uvloop", action="store_true")
    parser.add_argument("--workers", type=int, default=None, help="process pool size")
    args = parser.parse_args()
    raise_nofile()
    log_gc_pauses()
    if args.uvloop:
        import uvloop

        uvloop.install()
    asyncio.run(main(args.system, args.port, args.workers))
