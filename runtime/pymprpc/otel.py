"""OpenTelemetry tracing and metrics for pymprpc calls (the `pymprpc[otel]` extra).

`ServerTelemetry()` is a server interceptor and `ClientTelemetry()` a client interceptor
(for `AsyncRPC` and, through `.sync`, `RPC`). Each call gets a span following the
OpenTelemetry RPC semantic conventions (`rpc.system` = "mprpc", `rpc.service`,
`rpc.method`, peer attributes, status), trace context travels in call metadata (the
`metadata` feature: a server or client that did not negotiate it starts a new trace), and
the RPC metrics are recorded: call duration histograms (`rpc.server.duration`,
`rpc.client.duration`, milliseconds), calls in flight (`rpc.server.active_requests`) and
message sizes (`rpc.server.request.size`, `rpc.server.response.size`,
`rpc.client.request.size`, `rpc.client.response.size`, bytes; one value per message, so
a stream records each of its replies). These are the names of the RPC conventions up to
v1.37, which the duration metrics follow too (later versions renamed the durations and
dropped the size metrics for now); a size is the message's frame on the wire (see
`pymprpc.context.MessageSizes`). Pass `message_sizes=False` to record no sizes.

Only this module imports `opentelemetry`; it needs the `opentelemetry-api` package.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, Final

try:
    from opentelemetry import context as otel_context
    from opentelemetry import metrics, propagate, trace
    from opentelemetry.metrics import CallbackOptions, Observation
    from opentelemetry.trace import SpanKind, Status, StatusCode
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "pymprpc.otel needs OpenTelemetry: install pymprpc[otel] (the opentelemetry-api package)"
    ) from exc

from .client.interceptors import ClientCallContext
from .context import CallContext, MessageSizes
from .errors import exception_text, traceback_text, type_name
from .interceptors.accesslog import outcome_code
from .interceptors.chain import CallNext, observe_call

__all__ = ["RPC_SYSTEM", "ClientTelemetry", "ServerTelemetry", "span_attributes"]

RPC_SYSTEM = "mprpc"
_SCOPE = "pymprpc"


def span_attributes(method: str, peer: tuple[str, int] | None, *, server: bool) -> dict[str, Any]:
    """The semantic-convention attributes of a call's span.

    A dotted method name `a.b.c` is service `a.b` and method `c`; a plain name has no
    service (MPRPC methods live in one namespace).
    """
    attributes = _method_attributes(method)
    if peer is not None:
        attributes.update(_peer_attributes(peer, server))
    return attributes


def _method_attributes(method: str) -> dict[str, Any]:
    service, _, name = method.rpartition(".")
    attributes: dict[str, Any] = {"rpc.system": RPC_SYSTEM, "rpc.method": name}
    if service:
        attributes["rpc.service"] = service
    return attributes


def _peer_attributes(peer: tuple[str, int], server: bool) -> dict[str, Any]:
    host, port = peer[0], peer[1]
    if server:
        return {"network.peer.address": host, "network.peer.port": port, "client.address": host}
    return {
        "server.address": host,
        "server.port": port,
        "network.peer.address": host,
        "network.peer.port": port,
    }


# Outcomes the client caused (a bad request or arguments, access refused, a cancel): a
# server span leaves its status unset for them, as the RPC semantic conventions say of
# gRPC's INVALID_ARGUMENT, PERMISSION_DENIED and CANCELLED, so that a client's mistakes do
# not count as the server's errors. The exception is still recorded on the span.
_CLIENTS_DOING: Final = frozenset((400, 402, 403, 407))


def _finish(
    span: trace.Span,
    error: BaseException | None,
    answered: BaseException | None,
    streaming: bool,
    ctx: CallContext | None = None,
) -> int:
    """Set the span's outcome (`ctx`: a server's call; None: a client's) and return its
    code: `error` is the exception the call raised (which the span records), `answered`
    the error it was answered with (the same, or another: a handler's GeneratorExit is
    answered 404; or None, an interceptor having returned a value instead)."""
    code = outcome_code(answered, streaming=streaming, ctx=ctx)
    span.set_attribute("rpc.mprpc.status_code", code)
    if error is not None:
        message = exception_text(error)
        try:
            span.record_exception(error)
        except Exception:  # noqa: BLE001 - its str() raised (user code): recorded as below
            # The SDK's own event, with a message that can be made: a failing __str__
            # must neither replace the call's exception nor leave its span open.
            span.add_event(
                "exception",
                {
                    "exception.type": type_name(error, "__qualname__"),
                    "exception.message": message,
                    "exception.stacktrace": traceback_text(error),
                    "exception.escaped": "False",
                },
            )
        if answered is not None and (ctx is None or code not in _CLIENTS_DOING):
            span.set_status(Status(StatusCode.ERROR, f"{type_name(error)}: {message}"))
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


# What a call's metadata without trace context extracts to: a new trace.
_NO_PARENT: Final = otel_context.Context()
# Methods whose attributes are kept (a client may call any number of names).
_MAX_METHODS = 1024


class _Method:
    """What every call of one method shares: attributes built once, not per call."""

    __slots__ = ("active", "by_code", "metric", "span")

    def __init__(self, method: str) -> None:
        self.span = _method_attributes(method)  # the span's, before the peer's
        self.metric = dict(self.span)  # of every metric but the durations
        self.by_code: dict[int, dict[str, Any]] = {}  # the durations', by status code
        self.active = 0  # calls in flight (server)

    def with_code(self, code: int) -> dict[str, Any]:
        attributes = self.by_code.get(code)
        if attributes is None:
            attributes = self.by_code[code] = {**self.metric, "rpc.mprpc.status_code": code}
        return attributes


class _Telemetry:
    """What the server and the client interceptors share: the tracer, the duration and
    message size histograms, and the attributes of each method called."""

    message_sizes: bool  # read by the server and clients: measure message sizes

    def __init__(
        self,
        side: str,
        tracer_provider: trace.TracerProvider | None,
        meter_provider: metrics.MeterProvider | None,
        message_sizes: bool,
    ) -> None:
        self._tracer = trace.get_tracer(_SCOPE, tracer_provider=tracer_provider)
        meter = self._meter = metrics.get_meter(_SCOPE, meter_provider=meter_provider)
        way = "inbound" if side == "server" else "outbound"
        self._duration = meter.create_histogram(
            f"rpc.{side}.duration", unit="ms", description=f"Duration of {way} calls"
        )
        self.message_sizes = message_sizes
        self._request_size = meter.create_histogram(
            f"rpc.{side}.request.size", unit="By", description="Size of call messages"
        )
        self._response_size = meter.create_histogram(
            f"rpc.{side}.response.size", unit="By", description="Size of reply messages"
        )
        self._methods: dict[str, _Method] = {}

    def _method(self, method: str) -> _Method:
        found = self._methods.get(method)
        if found is None:
            found = _Method(method)
            if len(self._methods) < self._max_methods:
                self._methods[method] = found
        return found

    # A client may call any number of names, and so may a server's peers where an
    # instance is registered with dotted names (`a.b.a.b...`): past this many, a name's
    # calls are measured without being kept (not counted in `active_requests`).
    _max_methods = _MAX_METHODS

    def _watch_responses(self, sizes: MessageSizes | None, method: _Method) -> None:
        if sizes is not None:
            sizes.on_response(
                functools.partial(self._response_size.record, attributes=method.metric)
            )


class ServerTelemetry(_Telemetry):
    """A server interceptor: a SERVER span and metrics per call.

    Args:
        tracer_provider: defaults to the global provider.
        meter_provider: defaults to the global provider.
        message_sizes: record the request and response size histograms (the server
            then measures each call's messages; see `pymprpc.context.MessageSizes`).
    """

    def __init__(
        self,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
        *,
        message_sizes: bool = True,
    ) -> None:
        super().__init__("server", tracer_provider, meter_provider, message_sizes)
        # Calls in flight are counted here and observed when metrics are collected: two
        # integer updates per call rather than two SDK measurements (each costs as much
        # as a histogram record). The lock covers servers on several threads.
        self._active_lock = threading.Lock()
        self._meter.create_observable_up_down_counter(
            "rpc.server.active_requests",
            callbacks=[self._observe_active],
            unit="{call}",
            description="Calls being served",
        )

    def _observe_active(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(m.active, m.metric) for m in list(self._methods.values())]

    async def __call__(self, ctx: CallContext, call_next: CallNext) -> Any:
        """Run the call inside a SERVER span whose parent comes from the metadata."""
        method = self._method(ctx.method)
        peer = ctx.peer
        attributes = method.span
        if peer is not None:
            attributes = {**attributes, **_peer_attributes(peer, True)}
        # Trace context comes only in metadata: without any, there is nothing to extract.
        parent = propagate.extract(ctx.metadata) if ctx.metadata else _NO_PARENT
        span = self._tracer.start_span(
            ctx.method, context=parent, kind=SpanKind.SERVER, attributes=attributes
        )
        started = time.perf_counter()
        with self._active_lock:
            method.active += 1
        sizes = ctx.sizes
        if sizes is not None:
            self._request_size.record(sizes.request, method.metric)
            self._watch_responses(sizes, method)
        streaming = ctx.streaming

        def end(
            error: BaseException | None, answered: BaseException | None, stream: bool = False
        ) -> None:
            code = _finish(span, error, answered, stream, ctx)
            with self._active_lock:
                method.active -= 1
            self._duration.record((time.perf_counter() - started) * 1000, method.with_code(code))
            span.end()

        # The span is current while the handler runs, so nested calls it makes are its
        # children; the token is detached in this same task before returning.
        span_context = trace.set_span_in_context(span, parent)
        token = otel_context.attach(span_context)
        try:
            result = await call_next(ctx)
        except BaseException as exc:
            # The span records the exception raised, with the code its client got (a
            # handler's GeneratorExit: 404; cut short at shutdown: 503; see AccessLog).
            ctx.add_done_callback(functools.partial(end, exc))
            raise
        finally:
            otel_context.detach(token)
        if not streaming:
            # Ended once the call is over: the connection may still refuse what call_next
            # returned (405), and the span's code is what the client got.
            return observe_call(
                ctx, result, lambda error, items: end(error, error, items is not None)
            )
        # A stream's body runs as it is read, after this returned: the span is made
        # current again around each step, so nested calls it makes are its children.
        return observe_call(
            ctx, _within(result, span_context), lambda error, _items: end(error, error, True)
        )


class ClientTelemetry(_Telemetry):
    """A client interceptor: a CLIENT span per outgoing call, its context in the metadata.

    Pass the instance to `AsyncRPC(interceptors=[...])`, and its `.sync` to
    `RPC(interceptors=[...])`. The span is a child of the span current when the call is
    made (a handler's SERVER span, for a call a handler makes), and its context travels
    to the server in the `traceparent` metadata (W3C trace context, or whatever
    propagator is configured). A stream's span ends when the stream starts.

    Args:
        tracer_provider: defaults to the global provider.
        meter_provider: defaults to the global provider.
        message_sizes: record the request and response size histograms (the client
            then measures each call's messages; see `pymprpc.context.MessageSizes`).
    """

    def __init__(
        self,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
        *,
        message_sizes: bool = True,
    ) -> None:
        super().__init__("client", tracer_provider, meter_provider, message_sizes)

    def _start(self, ctx: ClientCallContext) -> tuple[trace.Span, ClientCallContext, _Method]:
        method = self._method(ctx.method)
        peer = ctx.peer
        attributes = method.span
        if peer is not None:
            attributes = {**attributes, **_peer_attributes(peer, False)}
        span = self._tracer.start_span(ctx.method, kind=SpanKind.CLIENT, attributes=attributes)
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=trace.set_span_in_context(span))
        self._watch_responses(ctx.sizes, method)
        return span, ctx.replace(metadata=ctx.metadata.with_items(carrier)), method

    def _end(
        self,
        span: trace.Span,
        ctx: ClientCallContext,
        method: _Method,
        started: float,
        error: BaseException | None,
    ) -> None:
        code = _finish(span, error, error, False)
        self._duration.record((time.perf_counter() - started) * 1000, method.with_code(code))
        sizes = ctx.sizes
        if sizes is not None and sizes.request:  # 0: the call was never sent
            self._request_size.record(sizes.request, method.metric)
        span.end()

    async def __call__(self, ctx: ClientCallContext, call_next: Callable[..., Any]) -> Any:
        """Make the call (`AsyncRPC`) inside a CLIENT span."""
        span, ctx, method = self._start(ctx)
        started = time.perf_counter()
        try:
            result = await call_next(ctx)
        except BaseException as exc:
            self._end(span, ctx, method, started, exc)
            raise
        self._end(span, ctx, method, started, None)
        return result

    @property
    def sync(self) -> Callable[[ClientCallContext, Callable[..., Any]], Any]:
        """The same interceptor for the blocking `RPC` client."""

        def intercept(ctx: ClientCallContext, call_next: Callable[..., Any]) -> Any:
            span, ctx, method = self._start(ctx)
            started = time.perf_counter()
            try:
                result = call_next(ctx)
            except BaseException as exc:
                self._end(span, ctx, method, started, exc)
                raise
            self._end(span, ctx, method, started, None)
            return result

        intercept.message_sizes = self.message_sizes  # type: ignore[attr-defined]
        return intercept
