"""OpenTelemetry: one trace across client -> server -> a nested call -> back, the RPC
metrics, and nothing of OpenTelemetry imported without the extra."""

from __future__ import annotations

import itertools
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from typing import Any

import pytest

from helpers import arun
from pymprpc import AsyncRPC, Server
from pymprpc.testing import client_for, server_url

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind, StatusCode

from pymprpc.errors import RPCRuntimeError
from pymprpc.otel import ClientTelemetry, ServerTelemetry


def metric_points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    data = reader.get_metrics_data()
    points: dict[str, list[Any]] = {}
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                points.setdefault(metric.name, []).extend(metric.data.data_points)
    return points


def test_a_trace_crosses_client_server_nested_call_and_back() -> None:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    client_telemetry = ClientTelemetry(tracer_provider, meter_provider)

    server = Server(
        ("127.0.0.1", 0), interceptors=[ServerTelemetry(tracer_provider, meter_provider)]
    )

    async def inner(x: int) -> int:
        return x * 2

    async def outer(x: int) -> int:
        # A nested call made by the handler: its span is a child of this call's span.
        async with AsyncRPC(server_url(server), interceptors=[client_telemetry]) as nested:
            return await nested.calc.inner(x) + 1

    async def broken() -> None:
        raise ValueError("no")

    async def doubled(n: int) -> AsyncIterator[int]:
        # A stream's body runs after its handler returned: still inside its span.
        async with AsyncRPC(server_url(server), interceptors=[client_telemetry]) as nested:
            for i in range(n):
                yield await nested.calc.inner(i)

    server.register_function("calc.inner")(inner)
    server.register_function("calc.outer")(outer)
    server.register_function("broken")(broken)
    server.register_function("doubled")(doubled)

    async def main() -> None:
        async with client_for(server, interceptors=[client_telemetry]) as rpc:
            assert await rpc.calc.outer(20) == 41
            with pytest.raises(RPCRuntimeError):
                await rpc.broken()
            assert [i async for i in await rpc.doubled(2)] == [0, 2]

    arun(main())
    spans = exporter.get_finished_spans()
    stream_span = next(s for s in spans if s.name == "doubled" and s.kind is SpanKind.SERVER)
    in_stream = [s for s in spans if s.parent and s.parent.span_id == stream_span.context.span_id]
    assert [s.name for s in in_stream] == ["calc.inner", "calc.inner"]
    # The rest: the outer call's trace and the failing call's.
    spans = [s for s in spans if s.context.trace_id != stream_span.context.trace_id]
    by_kind = {(s.name, s.kind): s for s in spans}
    client_outer = by_kind["calc.outer", SpanKind.CLIENT]
    server_outer = by_kind["calc.outer", SpanKind.SERVER]
    client_inner = by_kind["calc.inner", SpanKind.CLIENT]
    server_inner = by_kind["calc.inner", SpanKind.SERVER]
    chain = [client_outer, server_outer, client_inner, server_inner]
    assert len({s.context.trace_id for s in chain}) == 1  # one trace
    assert client_outer.parent is None
    for parent, child in itertools.pairwise(chain):
        assert child.parent is not None and child.parent.span_id == parent.context.span_id
    attributes = dict(server_outer.attributes or {})
    assert attributes["rpc.system"] == "mprpc"
    assert attributes["rpc.service"] == "calc" and attributes["rpc.method"] == "outer"
    assert attributes["network.peer.address"] == "127.0.0.1"
    assert dict(client_outer.attributes or {})["server.port"] == server.port
    failed = by_kind["broken", SpanKind.SERVER]
    assert failed.status.status_code is StatusCode.ERROR
    assert dict(failed.attributes or {})["rpc.mprpc.status_code"] == 404
    assert by_kind["broken", SpanKind.CLIENT].status.status_code is StatusCode.ERROR

    points = metric_points(reader)
    server_durations = {
        (p.attributes["rpc.method"], p.attributes["rpc.mprpc.status_code"]): p.count
        for p in points["rpc.server.duration"]
    }
    assert server_durations == {
        ("outer", 200): 1,
        ("inner", 200): 3,  # once for outer, twice for the stream
        ("broken", 404): 1,
        ("doubled", 201): 1,
    }
    assert sum(p.count for p in points["rpc.client.duration"]) == 6
    assert all(p.value == 0 for p in points["rpc.server.active_requests"])  # all ended


def test_without_the_extra_nothing_imports_opentelemetry(tmp_path: Any) -> None:
    script = textwrap.dedent(
        """
        import sys

        class Block:
            def find_spec(self, name, path=None, target=None):
                if name == "opentelemetry" or name.startswith("opentelemetry."):
                    raise ImportError(f"blocked: {name}")
                return None

        sys.meta_path.insert(0, Block())
        import asyncio
        import pymprpc, pymprpc.interceptors, pymprpc.testing, pymprpc.healthcheck
        from pymprpc.interceptors import AccessLog
        from pymprpc.testing import client_for

        async def main():
            server = pymprpc.Server(("127.0.0.1", 0), interceptors=[AccessLog()])
            server.register_function("add", executor="inline")(lambda a, b: a + b)
            async with client_for(server) as rpc:
                assert await rpc.add(1, 2) == 3

        asyncio.run(main())
        assert not [m for m in sys.modules if m.startswith("opentelemetry")]
        try:
            import pymprpc.otel
        except ImportError as exc:
            print("ImportError:", exc)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "install pymprpc[otel]" in done.stdout


def test_the_blocking_client_traces_with_sync(mprpc_client: Any) -> None:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    server = Server(("127.0.0.1", 0), interceptors=[ServerTelemetry(tracer_provider)])
    server.register_function("add")(add)
    rpc = mprpc_client(server, interceptors=[ClientTelemetry(tracer_provider).sync])
    assert rpc.add(1, 2) == 3
    spans = {s.kind: s for s in exporter.get_finished_spans()}
    client, served = spans[SpanKind.CLIENT], spans[SpanKind.SERVER]
    assert served.parent is not None and served.parent.span_id == client.context.span_id


async def add(a: int, b: int) -> int:
    return a + b


def test_message_size_histograms_hold_each_message_s_frame() -> None:
    from test_message_sizes import PAYLOAD, ClientRecorder, ServerRecorder, build

    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    tracer_provider = TracerProvider()
    # Recorders next to the telemetry: the sizes the hook reports, to compare with.
    server_side, client_side = ServerRecorder(), ClientRecorder()
    server = build(ServerTelemetry(tracer_provider, meter_provider), server_side)
    client_telemetry = ClientTelemetry(tracer_provider, meter_provider)

    async def main() -> None:
        async with client_for(server, interceptors=[client_telemetry, client_side]) as rpc:
            assert await rpc.echo(PAYLOAD) == PAYLOAD
            assert len([x async for x in await rpc.count(3, PAYLOAD)]) == 3

    arun(main())
    points = {
        name: {p.attributes["rpc.method"]: p for p in found}
        for name, found in metric_points(reader).items()
    }
    echo_request, count_request = server_side.requests
    echo_reply, *count_replies = server_side.responses
    assert len(count_replies) == 5  # 201, three items, 206: one value per message
    for side in ("server", "client"):
        requests, responses = (
            points[f"rpc.{side}.request.size"],
            points[f"rpc.{side}.response.size"],
        )
        assert (requests["echo"].count, requests["echo"].sum) == (1, echo_request)
        assert (requests["count"].count, requests["count"].sum) == (1, count_request)
        assert (responses["echo"].count, responses["echo"].sum) == (1, echo_reply)
        assert (responses["count"].count, responses["count"].sum) == (5, sum(count_replies))
        assert responses["echo"].min > len(PAYLOAD)
    assert client_side.requests == server_side.requests
    assert client_side.responses == server_side.responses


def test_message_sizes_can_be_left_out() -> None:
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    telemetry = ServerTelemetry(TracerProvider(), meter_provider, message_sizes=False)
    server = Server(("127.0.0.1", 0), interceptors=[telemetry])
    server.register_function("add")(add)

    async def main() -> None:
        async with client_for(server) as rpc:
            assert await rpc.add(1, 2) == 3

    arun(main())
    names = set(metric_points(reader))
    assert "rpc.server.duration" in names and "rpc.server.request.size" not in names


def test_calls_in_flight_are_observed_while_they_run() -> None:
    reader = InMemoryMetricReader()
    server = Server(
        ("127.0.0.1", 0),
        interceptors=[ServerTelemetry(TracerProvider(), MeterProvider(metric_readers=[reader]))],
    )
    seen: list[dict[str, int]] = []

    async def busy() -> None:
        # Collected while this call runs: it is in flight, nothing else is.
        seen.append(
            {
                p.attributes["rpc.method"]: p.value
                for p in metric_points(reader)["rpc.server.active_requests"]
            }
        )

    server.register_function("busy")(busy)
    server.register_function("add")(add)

    async def main() -> None:
        async with client_for(server) as rpc:
            assert await rpc.add(1, 2) == 3
            await rpc.busy()

    arun(main())
    assert seen == [{"add": 0, "busy": 1}]
    after = {
        p.attributes["rpc.method"]: p.value
        for p in metric_points(reader)["rpc.server.active_requests"]
    }
    assert after == {"add": 0, "busy": 0}


class _Unprintable(Exception):
    """A user's exception whose `__str__` fails (an attribute never set)."""

    def __str__(self) -> str:
        return str(self.detail)  # type: ignore[attr-defined]


def test_an_exception_whose_str_fails_ends_its_span_on_both_sides() -> None:
    """Recording the exception on the span calls its str(): a failing one must neither
    replace the handler's exception nor leave the span (and the in-flight count) open."""
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    server = Server(
        ("127.0.0.1", 0), interceptors=[ServerTelemetry(tracer_provider, meter_provider)]
    )

    async def fails() -> None:
        raise _Unprintable()

    server.register_function("fails")(fails)
    client_telemetry = ClientTelemetry(tracer_provider, meter_provider)

    async def main() -> None:
        async with client_for(server, interceptors=[client_telemetry]) as rpc:
            with pytest.raises(RPCRuntimeError) as info:
                await rpc.fails()
            assert info.value.exception == "_Unprintable"

    arun(main())
    spans = {span.kind: span for span in exporter.get_finished_spans()}
    assert set(spans) == {SpanKind.SERVER, SpanKind.CLIENT}
    server_span = spans[SpanKind.SERVER]
    assert server_span.status.status_code is StatusCode.ERROR
    assert "_Unprintable" in (server_span.status.description or "")
    (event,) = [e for e in server_span.events if e.name == "exception"]
    assert "_Unprintable" in str(event.attributes["exception.type"])
    active = {
        p.attributes["rpc.method"]: p.value
        for p in metric_points(reader)["rpc.server.active_requests"]
    }
    assert active == {"fails": 0}


def test_a_clients_mistake_is_not_an_error_of_the_server_span() -> None:
    """402 (arguments that do not fit) and 403 (refused) leave the server span's status
    unset, as the RPC conventions say of gRPC's INVALID_ARGUMENT and PERMISSION_DENIED;
    the client's span is an error, and so is a server span for a handler that raised."""
    from pymprpc.errors import ParamError, RestrictAccessError
    from pymprpc.interceptors import AccessControl

    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    server = Server(
        ("127.0.0.1", 0),
        interceptors=[
            ServerTelemetry(tracer_provider, meter_provider),
            AccessControl({"admin.*": ["admin"]}),
        ],
    )
    server.register_function("add")(add)
    server.register_function("admin.reset")(add)

    async def main() -> None:
        client = ClientTelemetry(tracer_provider, meter_provider)
        async with client_for(server, interceptors=[client]) as rpc:
            with pytest.raises(ParamError):
                await rpc.add(1)
            with pytest.raises(RestrictAccessError):
                await rpc.admin.reset(1, 2)

    arun(main())
    spans = {(s.name, s.kind): s for s in exporter.get_finished_spans()}
    for name, code in (("add", 402), ("admin.reset", 403)):
        server_span = spans[name, SpanKind.SERVER]
        assert dict(server_span.attributes or {})["rpc.mprpc.status_code"] == code
        assert server_span.status.status_code is StatusCode.UNSET
        assert [e.name for e in server_span.events] == ["exception"]
        assert spans[name, SpanKind.CLIENT].status.status_code is StatusCode.ERROR
