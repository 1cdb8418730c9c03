"""Review 21: what the server's AccessLog and OpenTelemetry spans record against the code
the client actually received, and what a client reads for a 408 it did not time itself.
Real servers on 127.0.0.1 (ephemeral ports)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from review_fixtures import client_run

from pymprpc import RPC, AsyncRPC, Server
from pymprpc.errors import DeadlineExceeded, MPRPCError
from pymprpc.interceptors import AccessLog
from pymprpc.testing import client_for, sync_client_for

pytestmark = pytest.mark.timeout(30)

ALL = ("length-framing", "cancel", "deadline", "metadata", "oneway")
NO_CANCEL = ("length-framing", "deadline", "metadata", "oneway")
CODE = re.compile(r"-> (\d{3}) in ")


@contextlib.contextmanager
def access_codes() -> Iterator[dict[str, int]]:
    """method name -> the code its last AccessLog record shows."""
    codes: dict[str, int] = {}

    class Grab(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            text = record.getMessage()
            match = CODE.search(text)
            if match:
                codes[text.split(" ", 1)[0]] = int(match.group(1))

    logger = logging.getLogger("pymprpc.access")
    handler = Grab()
    old = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield codes
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)


def failing_server(**options: Any) -> Server:
    options.setdefault("grace_period", 0.5)
    server = Server(("127.0.0.1", 0), **options)

    @server.register_function()
    async def genexit() -> None:
        raise GeneratorExit()

    @server.register_function()
    async def stray() -> None:
        raise asyncio.CancelledError()

    @server.register_function()
    async def sysexit() -> None:
        raise SystemExit(3)

    @server.register_function()
    async def stream_genexit() -> Any:
        yield 1
        raise GeneratorExit()

    @server.register_function()
    async def slow() -> None:
        await asyncio.sleep(5)

    @server.register_function(executor="thread")
    def blocking() -> str:
        time.sleep(0.4)
        return "late"

    @server.register_function()
    async def downstream_timed_out() -> None:
        # A gateway's handler whose own call to a backend ran past its deadline.
        raise DeadlineExceeded("the inventory backend did not answer within 1s")

    return server


async def received(rpc: AsyncRPC, method: str) -> int:
    """The code the client got for `method()` (a stream: its end)."""
    try:
        value = await rpc.method(method)()
        if hasattr(value, "__aiter__"):
            async for _ in value:
                pass
    except MPRPCError as exc:
        assert exc.code is not None
        return int(exc.code)
    return 200


def logged_vs_received(loop: str, method: str, features: tuple[str, ...]) -> tuple[int, int]:
    async def main() -> tuple[int, int]:
        server = failing_server(interceptors=[AccessLog()])
        with access_codes() as codes:
            async with client_for(server, AsyncRPC, features=features) as rpc:
                got = await received(rpc, method)
                await asyncio.sleep(0.05)
            return codes[method], got

    result: tuple[int, int] = client_run(loop, main(), timeout=20)
    return result


@pytest.mark.logs_errors
def test_accesslog_records_404_for_a_handler_raising_generator_exit(loop: str) -> None:
    logged, got = logged_vs_received(loop, "genexit", ALL)
    assert got == 404
    assert logged == got


@pytest.mark.logs_errors
def test_accesslog_records_404_for_a_stream_raising_generator_exit(loop: str) -> None:
    logged, got = logged_vs_received(loop, "stream_genexit", ALL)
    assert got == 404
    assert logged == got


def test_accesslog_records_404_for_a_stray_cancel_without_the_cancel_feature(loop: str) -> None:
    logged, got = logged_vs_received(loop, "stray", NO_CANCEL)
    assert got == 404
    assert logged == got


def test_accesslog_records_407_for_a_stray_cancel_with_the_cancel_feature(loop: str) -> None:
    logged, got = logged_vs_received(loop, "stray", ALL)
    assert (logged, got) == (407, 407)


@pytest.mark.logs_errors
def test_accesslog_records_404_for_system_exit(loop: str) -> None:
    logged, got = logged_vs_received(loop, "sysexit", ALL)
    assert (logged, got) == (404, 404)


def shutdown_codes(loop: str, features: tuple[str, ...]) -> tuple[int, int]:
    async def main() -> tuple[int, int]:
        server = failing_server(interceptors=[AccessLog()])
        with access_codes() as codes:
            async with client_for(server, AsyncRPC, features=features) as rpc:
                call = asyncio.ensure_future(received(rpc, "slow"))
                await asyncio.sleep(0.2)
                closing = asyncio.ensure_future(server.close(grace=0.2))
                got = await call
                await closing
            return codes["slow"], got

    result: tuple[int, int] = client_run(loop, main(), timeout=20)
    return result


def test_accesslog_records_the_407_of_a_call_cancelled_at_shutdown(loop: str) -> None:
    assert shutdown_codes(loop, ALL) == (407, 407)


def test_accesslog_records_the_503_of_a_call_cancelled_at_shutdown_without_cancel(
    loop: str,
) -> None:
    logged, got = shutdown_codes(loop, NO_CANCEL)
    assert got == 503
    assert logged == got


def test_accesslog_records_408_for_a_thread_call_past_its_deadline(loop: str) -> None:
    async def main() -> tuple[int, int]:
        server = failing_server(interceptors=[AccessLog()])
        with access_codes() as codes:
            async with client_for(server, AsyncRPC) as rpc:
                try:
                    await rpc.blocking.with_options(timeout=0.1)()
                    got = 200
                except DeadlineExceeded as exc:
                    got = int(exc.code or 0)
                await asyncio.sleep(0.5)
            return codes["blocking"], got

    assert client_run(loop, main(), timeout=20) == (408, 408)


# --- OpenTelemetry: the span's status code and status for the same outcomes ---------


def otel_span(method: str, features: tuple[str, ...], shutdown: bool = False) -> tuple[Any, int]:
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind

    from pymprpc.otel import ServerTelemetry

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))

    async def main() -> int:
        server = failing_server(interceptors=[ServerTelemetry(provider)])
        async with client_for(server, AsyncRPC, features=features) as rpc:
            if not shutdown:
                got = await received(rpc, method)
            else:
                call = asyncio.ensure_future(received(rpc, method))
                await asyncio.sleep(0.2)
                closing = asyncio.ensure_future(server.close(grace=0.2))
                got = await call
                await closing
            await asyncio.sleep(0.05)
            return got

    got = asyncio.run(main())
    spans = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER]
    assert len(spans) == 1
    return spans[0], got


@pytest.mark.logs_errors
def test_otel_span_of_a_handler_raising_generator_exit_is_an_error_404() -> None:
    from opentelemetry.trace import StatusCode

    span, got = otel_span("genexit", ALL)
    assert got == 404
    assert span.attributes["rpc.mprpc.status_code"] == 404
    assert span.status.status_code is StatusCode.ERROR


def test_otel_span_of_a_call_cut_by_shutdown_without_cancel_is_a_503_error() -> None:
    from opentelemetry.trace import StatusCode

    span, got = otel_span("slow", NO_CANCEL, shutdown=True)
    assert got == 503
    assert span.attributes["rpc.mprpc.status_code"] == 503
    assert span.status.status_code is StatusCode.ERROR


# --- a 408 raised by the handler itself (its own downstream call timed out) ----------


@pytest.mark.parametrize("kind", ["async", "sync"])
def test_a_408_from_the_handler_keeps_the_servers_message(kind: str) -> None:
    server = failing_server()
    if kind == "sync":
        with sync_client_for(server, RPC) as rpc, pytest.raises(DeadlineExceeded) as caught:
            rpc.downstream_timed_out()
    else:

        async def main() -> None:
            async with client_for(server, AsyncRPC) as rpc:
                await rpc.downstream_timed_out()

        with pytest.raises(DeadlineExceeded) as caught:
            asyncio.run(main())
    text = str(caught.value)
    assert "Nones" not in text
    assert "inventory backend" in text


def test_no_408_to_a_client_without_the_deadline_feature() -> None:
    async def main() -> int:
        async with client_for(failing_server(), AsyncRPC, features=()) as rpc:
            return await received(rpc, "downstream_timed_out")

    assert asyncio.run(main()) not in (407, 408)
