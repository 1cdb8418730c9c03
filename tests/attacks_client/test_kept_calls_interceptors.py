"""Attacks on client interceptors around delay() and notify(): kinds, refusal, rewriting,
order, short-circuit, metadata, message sizes (and no leak), old servers, OTel spans."""

# ruff: noqa: SIM117  (a server, then a client on it: nested reads clearer)
from __future__ import annotations

import gc
import threading
import tracemalloc
from typing import Any

import pytest

from helpers import arun, wait_for
from pymprpc import RPC, Server, current_call
from pymprpc.testing import client_for, serve_in_thread

pytestmark = pytest.mark.timeout(60)


class Box:
    def __init__(self) -> None:
        self.seen: list[tuple[str, Any, dict[str, str]]] = []
        self.lock = threading.Lock()
        self.count = 0


def build(box: Box, **options: Any) -> Server:
    server = Server(("127.0.0.1", 0), **options)

    def rec(*args: Any) -> Any:
        with box.lock:
            box.seen.append(("rec", args, dict(current_call().metadata)))
        return list(args)

    def other(*args: Any) -> Any:
        with box.lock:
            box.seen.append(("other", args, dict(current_call().metadata)))
        return "other"

    # inline: a later call's reply proves earlier messages' handlers already ran
    server.register_function("rec", executor="inline")(rec)
    server.register_function("other", executor="inline")(other)
    server.register_function("ping", executor="inline")(lambda: "pong")

    def tally(_: Any) -> None:
        box.count += 1  # keeps nothing per call, unlike `rec`

    server.register_function("tally", executor="inline")(tally)
    return server


class Refused(Exception):
    pass


def async_log(name: str, log: list[Any]) -> Any:
    async def icpt(ctx: Any, call_next: Any) -> Any:
        log.append((name, "in", ctx.kind, ctx.method))
        out = await call_next(ctx)
        log.append((name, "out", ctx.kind, out))
        return out

    return icpt


def sync_log(name: str, log: list[Any]) -> Any:
    def icpt(ctx: Any, call_next: Any) -> Any:
        log.append((name, "in", ctx.kind, ctx.method))
        out = call_next(ctx)
        log.append((name, "out", ctx.kind, out))
        return out

    return icpt


def test_async_kinds_order_and_outcomes() -> None:
    box, log = Box(), []
    server = build(box)

    async def main() -> None:
        icpts = [async_log("a", log), async_log("b", log)]
        async with client_for(server, interceptors=icpts) as rpc:
            assert await rpc.call("rec", 1) == [1]
            cid = await rpc.delay("rec", 2)
            assert await rpc.notify("rec", 3) is None
            assert await rpc.call("ping") == "pong"
            assert await rpc.system.getresult(cid) == [2]
            return cid

    cid = arun(main())
    kinds = [(e[0], e[1], e[2]) for e in log if e[3] != "ping" and e[3] != "system.getresult"]
    assert kinds[:12] == [
        ("a", "in", "call"),
        ("b", "in", "call"),
        ("b", "out", "call"),
        ("a", "out", "call"),
        ("a", "in", "delay"),
        ("b", "in", "delay"),
        ("b", "out", "delay"),
        ("a", "out", "delay"),
        ("a", "in", "notify"),
        ("b", "in", "notify"),
        ("b", "out", "notify"),
        ("a", "out", "notify"),
    ]
    outs = {(e[0], e[2]): e[3] for e in log if e[1] == "out"}
    assert outs[("a", "delay")] == cid and outs[("b", "delay")] == cid
    assert outs[("a", "notify")] is None
    assert sorted(s[1] for s in box.seen if s[0] == "rec") == [(1,), (2,), (3,)]


def test_sync_kinds_order_and_outcomes() -> None:
    box, log = Box(), []
    server = build(box)
    with serve_in_thread(server) as running:
        with RPC(running.url, interceptors=[sync_log("a", log), sync_log("b", log)]) as rpc:
            cid = rpc.delay("rec", 2)
            assert rpc.notify("rec", 3) is None
            assert rpc.call("ping") == "pong"
            assert rpc.system.getresult(cid) == [2]
    seq = [(e[0], e[1], e[2]) for e in log][:8]
    assert seq == [
        ("a", "in", "delay"),
        ("b", "in", "delay"),
        ("b", "out", "delay"),
        ("a", "out", "delay"),
        ("a", "in", "notify"),
        ("b", "in", "notify"),
        ("b", "out", "notify"),
        ("a", "out", "notify"),
    ]
    assert log[3][3] == cid and log[7][3] is None
    assert sorted(s[1] for s in box.seen) == [(2,), (3,)]


@pytest.mark.parametrize("kind", ["delay", "notify"])
def test_async_refusal_sends_nothing(kind: str) -> None:
    box = Box()
    server = build(box)

    async def refuse(ctx: Any, call_next: Any) -> Any:
        if ctx.kind != "call":
            raise Refused(ctx.kind)
        return await call_next(ctx)

    async def main() -> None:
        async with client_for(server, interceptors=[refuse]) as rpc:
            with pytest.raises(Refused):
                await getattr(rpc, kind)("rec", 1)
            assert await rpc.call("ping") == "pong"
            assert await rpc.call("ping") == "pong"

    arun(main())
    assert box.seen == []


@pytest.mark.parametrize("kind", ["delay", "notify"])
def test_sync_refusal_sends_nothing(kind: str) -> None:
    box = Box()
    server = build(box)

    def refuse(ctx: Any, call_next: Any) -> Any:
        if ctx.kind == kind:
            raise Refused(ctx.kind)
        return call_next(ctx)

    with serve_in_thread(server) as running, RPC(running.url, interceptors=[refuse]) as rpc:
        with pytest.raises(Refused):
            getattr(rpc, kind)("rec", 1)
        assert rpc.call("ping") == "pong"
    assert box.seen == []


def test_async_rewrite_method_args_metadata() -> None:
    box = Box()
    server = build(box)

    async def rewrite(ctx: Any, call_next: Any) -> Any:
        if ctx.kind == "call":
            return await call_next(ctx)
        md = ctx.metadata.with_items({"k": ctx.kind})
        return await call_next(ctx.replace(method="other", args=(ctx.kind, 9), metadata=md))

    async def main() -> Any:
        async with client_for(server, interceptors=[rewrite]) as rpc:
            cid = await rpc.delay("rec", 1)
            await rpc.notify("rec", 2)
            assert await rpc.call("ping") == "pong"
            return await rpc.system.getresult(cid)

    assert arun(main()) == "other"
    assert sorted(box.seen) == [
        ("other", ("delay", 9), {"k": "delay"}),
        ("other", ("notify", 9), {"k": "notify"}),
    ]


def test_sync_metadata_reaches_handler() -> None:
    box = Box()
    server = build(box)

    def tag(ctx: Any, call_next: Any) -> Any:
        return call_next(ctx.replace(metadata={"who": ctx.kind}))

    with serve_in_thread(server) as running, RPC(running.url, interceptors=[tag]) as rpc:
        rpc.delay("rec", 1)
        rpc.notify("rec", 2)
        rpc.call("rec", 3)
    assert sorted((s[1], s[2]) for s in box.seen) == [
        ((1,), {"who": "delay"}),
        ((2,), {"who": "notify"}),
        ((3,), {"who": "call"}),
    ]


def test_short_circuit_never_calls_next() -> None:
    box = Box()
    server = build(box)

    async def fake(ctx: Any, call_next: Any) -> Any:
        return (
            4242
            if ctx.kind == "delay"
            else None
            if ctx.kind == "notify"
            else (await call_next(ctx))
        )

    def sfake(ctx: Any, call_next: Any) -> Any:
        return 4242 if ctx.kind == "delay" else None if ctx.kind == "notify" else call_next(ctx)

    async def main() -> None:
        async with client_for(server, interceptors=[fake]) as rpc:
            assert await rpc.delay("rec", 1) == 4242
            assert await rpc.notify("rec", 1) is None
            assert await rpc.call("ping") == "pong"

    arun(main())
    with serve_in_thread(server) as running, RPC(running.url, interceptors=[sfake]) as rpc:
        assert rpc.delay("rec", 1) == 4242
        assert rpc.notify("rec", 1) is None
        assert rpc.call("ping") == "pong"
    assert box.seen == []


class Sizes:
    message_sizes = True

    def __init__(self) -> None:
        self.got: list[tuple[str, int, list[int]]] = []

    async def __call__(self, ctx: Any, call_next: Any) -> Any:
        assert ctx.sizes is not None
        replies: list[int] = []
        ctx.sizes.on_response(replies.append)
        out = await call_next(ctx)
        self.got.append((ctx.kind, ctx.sizes.request, replies))
        return out


class SyncSizes(Sizes):
    def __call__(self, ctx: Any, call_next: Any) -> Any:
        assert ctx.sizes is not None
        replies: list[int] = []
        ctx.sizes.on_response(replies.append)
        out = call_next(ctx)
        self.got.append((ctx.kind, ctx.sizes.request, replies))
        return out


@pytest.mark.parametrize("client", ["async", "sync"])
def test_sizes_for_kept_calls(client: str) -> None:
    box = Box()
    server = build(box)
    if client == "async":
        sizes: Sizes = Sizes()

        async def main() -> None:
            async with client_for(server, interceptors=[sizes]) as rpc:
                cid = await rpc.delay("rec", "x" * 100)
                await rpc.notify("rec", "x" * 100)
                await rpc.call("rec", "x" * 100)
                await rpc.system.getresult(cid)

        arun(main())
    else:
        sizes = SyncSizes()
        with serve_in_thread(server) as running:
            with RPC(running.url, interceptors=[sizes]) as rpc:
                cid = rpc.delay("rec", "x" * 100)
                rpc.notify("rec", "x" * 100)
                rpc.call("rec", "x" * 100)
                rpc.system.getresult(cid)
    by_kind = {k: (req, rep) for k, req, rep in sizes.got}
    for kind in ("delay", "notify", "call"):
        assert by_kind[kind][0] > 100, (kind, by_kind)
    assert by_kind["delay"][1] == [] and by_kind["notify"][1] == []
    assert len(by_kind["call"][1]) == 1 and by_kind["call"][1][0] > 100


def test_two_thousand_notifies_with_sizes_leave_nothing() -> None:
    box = Box()
    server = build(box)

    class Quiet:
        message_sizes = True

        async def __call__(self, ctx: Any, call_next: Any) -> Any:
            ctx.sizes.on_response(lambda n: None)
            return await call_next(ctx)

    async def main() -> int:
        async with client_for(server, interceptors=[Quiet()]) as rpc:
            for _ in range(200):
                await rpc.notify("tally", "y" * 200)
            await rpc.call("ping")
            gc.collect()
            tracemalloc.start()
            before = tracemalloc.get_traced_memory()[0]
            for _ in range(2000):
                await rpc.notify("tally", "y" * 200)
            await rpc.call("ping")
            gc.collect()
            after = tracemalloc.get_traced_memory()[0]
            tracemalloc.stop()
            return after - before

    delta = arun(main(), timeout=50)
    assert box.count == 2200
    # per-call state kept (ctx, sizes, listeners, a pending entry) would be >= 200 B per
    # notify, 400 kB over 2,000; 300 kB leaves room for noise (server and client share
    # this process)
    assert delta < 300_000, delta


def test_notify_to_server_without_oneway() -> None:
    box = Box()
    server = build(box, features=[])
    log: list[Any] = []

    async def main() -> None:
        async with client_for(server, interceptors=[async_log("a", log)]) as rpc:
            assert await rpc.notify("rec", 1) is None
            cid = await rpc.delay("rec", 2)
            assert await rpc.system.getresult(cid) == [2]

    arun(main())
    wait_for(lambda: len(box.seen) == 2)
    assert [e[2] for e in log if e[1] == "in"][:2] == ["notify", "delay"]
    with serve_in_thread(server) as running:
        with RPC(running.url, interceptors=[sync_log("s", log)], features=[]) as rpc:
            assert rpc.notify("rec", 3) is None
            assert rpc.call("ping") == "pong"
    wait_for(lambda: len(box.seen) == 3)


def test_otel_spans_for_notify_and_delay() -> None:
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from pymprpc.otel import ClientTelemetry

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    box = Box()
    server = build(box)

    async def main() -> None:
        async with client_for(server, interceptors=[ClientTelemetry(provider)]) as rpc:
            await rpc.notify("rec", 1)
            cid = await rpc.delay("rec", 2)
            await rpc.system.getresult(cid)

    arun(main())
    with serve_in_thread(server) as running:
        with RPC(running.url, interceptors=[ClientTelemetry(provider).sync]) as rpc:
            rpc.notify("rec", 3)
            rpc.delay("rec", 4)
            rpc.call("ping")
    spans = exporter.get_finished_spans()
    rec_spans = [s for s in spans if "rec" in s.name]
    assert len(rec_spans) == 4, [s.name for s in spans]
    assert all(s.end_time is not None for s in rec_spans)
    # the trace context travelled as metadata to the handler
    assert all("traceparent" in s[2] for s in box.seen), box.seen
    ids = {format(s.context.trace_id, "032x") for s in rec_spans}
    assert {s[2]["traceparent"].split("-")[1] for s in box.seen} == ids


def test_sync_client_rejects_async_interceptor() -> None:
    # An async interceptor on the blocking client would make every call return an
    # unawaited coroutine and send nothing: refused where the mistake is made.
    box = Box()
    server = build(box)

    async def wrong(ctx: Any, call_next: Any) -> Any:
        return await call_next(ctx)

    class AsyncObject:
        async def __call__(self, ctx: Any, call_next: Any) -> Any:
            return await call_next(ctx)

    with serve_in_thread(server) as running:
        for bad in (wrong, AsyncObject()):
            with pytest.raises(TypeError, match="plain functions"):
                RPC(running.url, interceptors=[bad])
        with RPC(running.url, interceptors=[lambda ctx, call_next: call_next(ctx)]) as rpc:
            assert rpc.call("ping") == "pong"
    assert box.seen == []
