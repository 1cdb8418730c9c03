"""gRPC's asyncio API, serving and calling the same workloads (bench.proto)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).parent
BUILD = HERE / ".build"
MAX_MESSAGE = 64 * 1024 * 1024


def stubs() -> tuple[ModuleType, ModuleType]:
    """bench_pb2 and bench_pb2_grpc, compiled from bench.proto on first use."""
    if not (BUILD / "bench_pb2_grpc.py").exists():
        from grpc_tools import protoc

        BUILD.mkdir(exist_ok=True)
        code = protoc.main(
            [
                "protoc",
                f"-I{HERE}",
                f"--python_out={BUILD}",
                f"--grpc_python_out={BUILD}",
                str(HERE / "bench.proto"),
            ]
        )
        if code != 0:
            raise RuntimeError("protoc failed on bench.proto")
    if str(BUILD) not in sys.path:
        sys.path.insert(0, str(BUILD))
    return importlib.import_module("bench_pb2"), importlib.import_module("bench_pb2_grpc")


OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE),
    ("grpc.max_receive_message_length", MAX_MESSAGE),
]


def _tracing(server: bool) -> Any:
    """opentelemetry-instrumentation-grpc's aio interceptors (spans only: it records no
    metrics) on the same SDK set-up as the "pymprpc + OTel" rows."""
    from opentelemetry.instrumentation import grpc as instrumentation

    from bench.otel import providers

    tracer_provider, _ = providers(metrics=False)
    if server:
        return [instrumentation.aio_server_interceptor(tracer_provider=tracer_provider)]
    return instrumentation.aio_client_interceptors(tracer_provider=tracer_provider)


async def serve(port: int, otel: bool = False) -> Any:
    import grpc

    pb2, pb2_grpc = stubs()

    class Bench(pb2_grpc.BenchServicer):  # type: ignore[misc,name-defined]
        async def Add(self, request: Any, context: Any) -> Any:  # noqa: N802
            return pb2.AddReply(result=request.a + request.b)

        async def Count(self, request: Any, context: Any) -> AsyncIterator[Any]:  # noqa: N802
            for i in range(request.n):
                yield pb2.CountReply(value=i)

        async def Echo(self, request: Any, context: Any) -> Any:  # noqa: N802
            return pb2.EchoMessage(data=request.data)

    server = grpc.aio.server(options=OPTIONS, interceptors=_tracing(True) if otel else None)
    pb2_grpc.add_BenchServicer_to_server(Bench(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return server


class Client:
    """The workloads' calls on a gRPC aio channel."""

    def __init__(self, port: int, own_connection: bool = False, otel: bool = False) -> None:
        import grpc

        self.pb2, pb2_grpc = stubs()
        options = list(OPTIONS)
        if own_connection:
            options.append(("grpc.use_local_subchannel_pool", 1))
        self.channel = grpc.aio.insecure_channel(
            f"127.0.0.1:{port}",
            options=options,
            interceptors=_tracing(False) if otel else None,
        )
        self.stub = pb2_grpc.BenchStub(self.channel)

    async def add(self, a: int, b: int) -> int:
        return int((await self.stub.Add(self.pb2.AddRequest(a=a, b=b))).result)

    async def count(self, n: int) -> AsyncIterator[int]:
        async for reply in self.stub.Count(self.pb2.CountRequest(n=n)):
            yield reply.value

    async def echo(self, data: bytes) -> bytes:
        return bytes((await self.stub.Echo(self.pb2.EchoMessage(data=data))).data)

    async def close(self) -> None:
        await self.channel.close()
