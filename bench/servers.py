"""`python -m bench.servers SYSTEM PORT [--uvloop]`: serve the workloads until SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import AsyncIterator

from bench import floor, grpc_support
from bench.fanin import raise_nofile
from pymprpc.server import Server

MAX_MESSAGE = 64 * 1024 * 1024
FANIN_IDLE = 10_000  # connections the fan-in workload holds


def padd(a: int, b: int) -> int:
    return a + b


def build_pymprpc(port: int, otel: bool = False) -> Server:
    interceptors = []
    if otel:  # the "pymprpc + OTel" rows: ServerTelemetry on every call
        from bench.otel import providers
        from pymprpc.otel import ServerTelemetry

        interceptors.append(ServerTelemetry(*providers()))
    server = Server(
        ("127.0.0.1", port),
        timeout=None,
        max_message_size=MAX_MESSAGE,
        max_connections=FANIN_IDLE + 1000,
        backlog=4096,
        interceptors=interceptors,
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

    server.register_function("padd")(padd)  # default executor: the process pool
    server.register_function("tadd", executor="thread")(padd)
    return server


async def main(system: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if system in ("pymprpc", "pymprpc-otel"):
        server = build_pymprpc(port, otel=system == "pymprpc-otel")
        await server.start()
        print("ready", flush=True)
        await stop.wait()
        await server.close(grace=0)
    elif system in ("floor", "floor-task"):
        raw = await floor.serve(port, tasks=system == "floor-task")
        print("ready", flush=True)
        await stop.wait()
        raw.close()
    elif system == "grpc":
        grpc_server = await grpc_support.serve(port)
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
    args = parser.parse_args()
    raise_nofile()
    if args.uvloop:
        import uvloop

        uvloop.install()
    asyncio.run(main(args.system, args.port))
