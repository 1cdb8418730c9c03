"""OpenTelemetry: a span ended exactly once per call with the code the client got,
rpc.server.active_requests back to 0, trace context carried client -> server."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from attacks_review9.kit import Raw, Telemetry, new_server, serving, wait_until
from pymprpc import RPC, AsyncRPC, Server, current_call
from pymprpc.errors import DeadlineExceeded, ResultLimitError, RPCRuntimeError
from pymprpc.otel import ClientTelemetry, ServerTelemetry
from pymprpc.testing import client_for

pytestmark = pytest.mark.timeout(30)


def build(tel: Telemetry, *more: Any, **options: Any) -> Server:
    server = new_server(
        interceptors=[ServerTelemetry(tel.tracer_provider, tel.meter_provider), *more], **options
    )

    @server.register_function()
    async def ping() -> str:
        return "pong"

    @server.register_function()
    async def boom() -> None:
        raise ValueError("boom")

    @server.register_function()
    async def slow() -> str:
        await asyncio.sleep(5)
        return "late"

    @server.register_function()
    async def unencodable() -> Any:
        return object()

    @server.register_function()
    async def numbers() -> Any:
        for i in range(1000):
            yield i

    @server.register_function()
    async def traceparent() -> Any:
        return current_call().metadata.get("traceparent")

    return server


def code(span: Any) -> int:
    return int(span.attributes["rpc.mprpc.status_code"])


@pytest.mark.logs_errors
def test_spans_end_once_and_active_requests_return_to_zero() -> None:
    tel = Telemetry()
    with serving(build(tel)) as running, RPC(running.url, timeout=0.5) as rpc:
        assert rpc.ping() == "pong"
        with pytest.raises(RPCRuntimeError):
            rpc.boom()
        with pytest.raises(DeadlineExceeded):
            rpc.slow()
        stream = iter(rpc.numbers())
        assert next(stream) == 0  # abandoned: the connection closes below
    assert wait_until(lambda: len(tel.spans()) == 4)
    names = sorted(s.name for s in tel.spans())
    assert names == ["boom", "numbers", "ping", "slow"]
    assert set(tel.active().values()) == {0}


def test_server_span_of_deadline_exceeded_says_408() -> None:
    tel = Telemetry()
    with serving(build(tel)) as running, Raw(running.server.port) as raw:
        raw.login(features=["deadline", "cancel"])
        raw.call("d", "slow", DEADLINE=0.1)
        assert raw.recv()["CODE"] == 408
        assert wait_until(lambda: tel.spans("slow"))
    assert code(tel.spans("slow")[0]) == 408


def test_server_span_of_undeliverable_result_is_an_error() -> None:
    tel = Telemetry()
    with serving(build(tel)) as running, RPC(running.url, timeout=5) as rpc:
        with pytest.raises(ResultLimitError):
            rpc.unencodable()
        assert wait_until(lambda: tel.spans("unencodable"))
    span = tel.spans("unencodable")[0]
    assert code(span) == 405
    assert span.status.status_code.name == "ERROR"


def test_oneway_stream_ends_its_span() -> None:
    tel = Telemetry()
    with serving(build(tel)) as running, RPC(running.url, timeout=5) as rpc:
        rpc.notify("numbers")
        assert rpc.ping() == "pong"
        time.sleep(0.3)
        assert tel.active().get("numbers", 0) == 0
    assert len(tel.spans("numbers")) == 1


def test_stream_whose_start_fails_ends_its_span() -> None:
    async def big_metadata(ctx: Any, call_next: Any) -> Any:
        for i in range(70):
            ctx.set_response_metadata(f"k{i}", "v")
        return await call_next(ctx)

    tel = Telemetry()
    with serving(build(tel, big_metadata)) as running, RPC(running.url, timeout=5) as rpc:
        with pytest.raises(ResultLimitError):
            list(rpc.numbers())
        time.sleep(0.2)
        assert tel.active().get("numbers", 0) == 0
    assert len(tel.spans("numbers")) == 1


def test_trace_context_reaches_server_and_nested_calls() -> None:
    tel = Telemetry()
    back = build(tel)
    front = new_server(interceptors=[ServerTelemetry(tel.tracer_provider, tel.meter_provider)])
    url: list[str] = []

    @front.register_function()
    async def relay() -> Any:
        client = ClientTelemetry(tel.tracer_provider, tel.meter_provider)
        async with AsyncRPC(url[0], interceptors=[client]) as rpc:
            return await rpc.traceparent()

    with serving(back) as b, serving(front) as f:
        url.append(b.url)
        client = ClientTelemetry(tel.tracer_provider, tel.meter_provider).sync
        with RPC(f.url, interceptors=[client], timeout=5) as rpc:
            header = rpc.relay()
    assert wait_until(lambda: len(tel.spans()) == 4)
    spans = {(s.name, s.kind.name): s for s in tel.spans()}
    trace_ids = {s.context.trace_id for s in spans.values()}
    assert len(trace_ids) == 1
    assert spans["relay", "SERVER"].parent.span_id == spans["relay", "CLIENT"].context.span_id
    assert spans["traceparent", "CLIENT"].parent.span_id == spans["relay", "SERVER"].context.span_id
    assert (
        spans["traceparent", "SERVER"].parent.span_id
        == spans["traceparent", "CLIENT"].context.span_id
    )
    assert header.split("-")[2] == format(spans["traceparent", "CLIENT"].context.span_id, "016x")


@pytest.mark.parametrize(
    "metadata",
    [
        {"traceparent": "garbage"},
        {"traceparent": "00-" + "0" * 32 + "-" + "0" * 16 + "-01"},
        {"traceparent": "ff-" + "a" * 32 + "-" + "b" * 16 + "-01"},
        {"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01\n"},
        {"tracestate": "=,=" * 500},
        {"baggage": "x" * 4000},
    ],
)
def test_bad_trace_context_from_a_raw_peer_is_a_new_trace(metadata: dict[str, str]) -> None:
    tel = Telemetry()
    with serving(build(tel)) as running, Raw(running.server.port) as raw:
        raw.login(features=["metadata"])
        raw.call("t", "ping", METADATA=metadata)
        assert raw.recv()["MESSAGE"]["RESULT"] == "pong"
        assert wait_until(lambda: tel.spans("ping"))
    span = tel.spans("ping")[0]
    assert span.end_time is not None


def test_cancelled_async_call_ends_client_span_and_server_span() -> None:
    tel = Telemetry()

    async def main() -> None:
        server = build(tel)
        client = ClientTelemetry(tel.tracer_provider, tel.meter_provider)
        async with client_for(server, AsyncRPC, interceptors=[client]) as rpc:
            task = asyncio.ensure_future(rpc.slow())
            await asyncio.sleep(0.2)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await rpc.ping() == "pong"
            await asyncio.sleep(0.1)

    asyncio.run(main())
    kinds = sorted((s.name, s.kind.name) for s in tel.spans())
    assert kinds == [("ping", "CLIENT"), ("ping", "SERVER"), ("slow", "CLIENT"), ("slow", "SERVER")]
    assert set(tel.active().values()) == {0}


def test_dotted_names_do_not_grow_telemetry_without_bound() -> None:
    class Node:
        def __init__(self) -> None:
            self.a = self  # a back-reference: every a.b.a... path reaches ping
            self.b = self

        async def ping(self) -> str:
            return "pong"

    tel = Telemetry()

    async def main() -> None:
        server = new_server(interceptors=[ServerTelemetry(tel.tracer_provider, tel.meter_provider)])
        server.register_instance(Node(), allow_dotted_names=True)
        async with client_for(server, AsyncRPC, timeout=10) as rpc:
            for i in range(1500):
                name = ".".join("ab"[int(c)] for c in format(i, "011b")) + ".ping"
                assert await rpc.method(name)() == "pong"

    asyncio.run(main())
    assert len(tel.points("rpc.server.active_requests")) <= 1100
