"""OpenTelemetry tracing and metrics for pymprpc calls (the `pymprpc[otel]` extra).

`ServerTelemetry()` is a server interceptor and `ClientTelemetry()` a client interceptor
(for `AsyncRPC` and, through `.sync`, `RPC`). Each call gets a span following the
OpenTelemetry RPC semantic conventions (`rpc.system` = "mprpc", `rpc.service`,
`rpc.method`, peer attributes, status), trace context travels in call metadata (the
`metadata` feature: a server or client that did not negotiate it starts a new trace), and
the RPC metrics are recorded: call duration histograms (`rpc.server.duration`,
`rpc.client.duration`, milliseconds) and calls in flight (`rpc.server.active_requests`).

Only this module imports `opentelemetry`; it needs the `opentelemetry-api` package.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

try:
    from opentelemetry import context as otel_context
    from opentelemetry import metrics, propagate, trace
    from opentelemetry.trace import SpanKind, Status, StatusCode
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "pymprpc.otel needs OpenTelemetry: install pymprpc[otel] (the opentelemetry-api package)"
    ) from exc

from .client.interceptors import ClientCallContext
from .context import CallContext
from .interceptors.accesslog import outcome_code
from .interceptors.chain import CallNext, observe_stream

__all__ = ["RPC_SYSTEM", "ClientTelemetry", "ServerTelemetry", "span_attributes"]

RPC_SYSTEM = "mprpc"
_SCOPE = "pymprpc"


def span_attributes(method: str, peer: tuple[str, int] | None, *, server: bool) -> dict[str, Any]:
    """The semantic-convention attributes of a call's span.

    A dotted method name `a.b.c` is service `a.b` and method `c`; a plain name has no
    service (MPRPC methods live in one namespace).
    """
    service, _, name = method.rpartition(".")
    attributes: dict[str, Any] = {"rpc.system": RPC_SYSTEM, "rpc.method": name}
    if service:
        attributes["rpc.service"] = service
    if peer is not None:
        host, port = peer[0], peer[1]
        if server:
            attributes["network.peer.address"] = host
            attributes["network.peer.port"] = port
            attributes["client.address"] = host
        else:
            attributes["server.address"] = host
            attributes["server.port"] = port
            attributes["network.peer.address"] = host
            attributes["network.peer.port"] = port
    return attributes


def _finish(span: trace.Span, error: BaseException | None, streaming: bool) -> int:
    code = outcome_code(error, streaming=streaming)
    span.set_attribute("rpc.mprpc.status_code", code)
    if error is not None:
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
    return code


async def _within(stream: AsyncIterator[Any], context: otel_context.Context) -> AsyncIterator[Any]:
    """`stream`'s items, each produced with `context` as the current OTel context."""
    iterator = aiter(stream)
    try:
        while True:
            token = otel_context.attach(context)
            try:
                item = await anext(iterator)
            except StopAsyncIteration:
                return
            finally:
                otel_context.detach(token)
            yield item
    finally:
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            await aclose()


class ServerTelemetry:
    """A server interceptor: a SERVER span and metrics per call.

    Args:
        tracer_provider: defaults to the global provider.
        meter_provider: defaults to the global provider.
    """

    def __init__(
        self,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
    ) -> None:
        self._tracer = trace.get_tracer(_SCOPE, tracer_provider=tracer_provider)
        meter = metrics.get_meter(_SCOPE, meter_provider=meter_provider)
        self._duration = meter.create_histogram(
            "rpc.server.duration", unit="ms", description="Duration of inbound calls"
        )
        self._active = meter.create_up_down_counter(
            "rpc.server.active_requests", unit="{call}", description="Calls being served"
        )

    async def __call__(self, ctx: CallContext, call_next: CallNext) -> Any:
        """Run the call inside a SERVER span whose parent comes from the metadata."""
        attributes = span_attributes(ctx.method, ctx.peer, server=True)
        parent = propagate.extract(dict(ctx.metadata))
        metric_attributes = {k: attributes[k] for k in ("rpc.system", "rpc.method")}
        if "rpc.service" in attributes:
            metric_attributes["rpc.service"] = attributes["rpc.service"]
        span = self._tracer.start_span(
            ctx.method, context=parent, kind=SpanKind.SERVER, attributes=attributes
        )
        started = time.perf_counter()
        self._active.add(1, metric_attributes)

        def end(error: BaseException | None) -> None:
            code = _finish(span, error, ctx.streaming)
            self._active.add(-1, metric_attributes)
            self._duration.record(
                (time.perf_counter() - started) * 1000,
                {**metric_attributes, "rpc.mprpc.status_code": code},
            )
            span.end()

        # The span is current while the handler runs, so nested calls it makes are its
        # children; the token is detached in this same task before returning.
        span_context = trace.set_span_in_context(span, parent)
        token = otel_context.attach(span_context)
        try:
            result = await call_next(ctx)
        except BaseException as exc:
            end(exc)
            raise
        finally:
            otel_context.detach(token)
        if not ctx.streaming:
            end(None)
            return result
        # A stream's body runs as it is read, after this returned: the span is made
        # current again around each step, so nested calls it makes are its children.
        return observe_stream(_within(result, span_context), lambda error, _items: end(error))


class ClientTelemetry:
    """A client interceptor: a CLIENT span per outgoing call, its context in the metadata.

    Pass the instance to `AsyncRPC(interceptors=[...])`, and its `.sync` to
    `RPC(interceptors=[...])`. The span is a child of the span current when the call is
    made (a handler's SERVER span, for a call a handler makes), and its context travels
    to the server in the `traceparent` metadata (W3C trace context, or whatever
    propagator is configured). A stream's span ends when the stream starts.

    Args:
        tracer_provider: defaults to the global provider.
        meter_provider: defaults to the global provider.
    """

    def __init__(
        self,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
    ) -> None:
        self._tracer = trace.get_tracer(_SCOPE, tracer_provider=tracer_provider)
        meter = metrics.get_meter(_SCOPE, meter_provider=meter_provider)
        self._duration = meter.create_histogram(
            "rpc.client.duration", unit="ms", description="Duration of outbound calls"
        )

    def _start(self, ctx: ClientCallContext) -> tuple[trace.Span, ClientCallContext]:
        attributes = span_attributes(ctx.method, ctx.peer, server=False)
        span = self._tracer.start_span(ctx.method, kind=SpanKind.CLIENT, attributes=attributes)
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=trace.set_span_in_context(span))
        return span, ctx.replace(metadata=ctx.metadata.with_items(carrier))

    def _end(
        self, span: trace.Span, method: str, started: float, error: BaseException | None
    ) -> None:
        code = _finish(span, error, False)
        attributes = span_attributes(method, None, server=False)
        attributes["rpc.mprpc.status_code"] = code
        self._duration.record((time.perf_counter() - started) * 1000, attributes)
        span.end()

    async def __call__(self, ctx: ClientCallContext, call_next: Callable[..., Any]) -> Any:
        """Make the call (`AsyncRPC`) inside a CLIENT span."""
        span, ctx = self._start(ctx)
        started = time.perf_counter()
        try:
            result = await call_next(ctx)
        except BaseException as exc:
            self._end(span, ctx.method, started, exc)
            raise
        self._end(span, ctx.method, started, None)
        return result

    @property
    def sync(self) -> Callable[[ClientCallContext, Callable[..., Any]], Any]:
        """The same interceptor for the blocking `RPC` client."""

        def intercept(ctx: ClientCallContext, call_next: Callable[..., Any]) -> Any:
            span, ctx = self._start(ctx)
            started = time.perf_counter()
            try:
                result = call_next(ctx)
            except BaseException as exc:
                self._end(span, ctx.method, started, exc)
                raise
            self._end(span, ctx.method, started, None)
            return result

        return intercept
