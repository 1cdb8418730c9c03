"""Attacks on the message-size contract: `ctx.sizes.request` and every `on_response`
callback must equal the bytes of the frames seen on the wire (framing included,
compressed if negotiated), whatever happens to the call."""

from __future__ import annotations

import asyncio
import gc
import socket
import struct
import threading
import tracemalloc
import zlib
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import msgpack
import pytest

from helpers import arun, wait_for
from pymprpc import RPC, AsyncRPC, Server
from pymprpc.client.interceptors import ClientCallContext
from pymprpc.context import CallContext
from pymprpc.interceptors.chain import CallNext
from pymprpc.testing import client_for, serve_in_thread, server_url

SEP = b"##PRO-END##"
V = {"MPRPC": "0.1"}
MiB = 1 << 20


def pack(m: Any) -> bytes:
    return msgpack.packb(m, use_bin_type=True)


def unpack(b: bytes) -> Any:
    return msgpack.unpackb(b, raw=False, strict_map_key=False)


class Rec:
    """Asks for sizes; records them by call ID (thread-safe enough: list appends)."""

    message_sizes = True

    def __init__(self) -> None:
        self.requests: dict[str, int] = {}
        self.responses: dict[str, list[int]] = defaultdict(list)
        self.order: list[int] = []

    async def __call__(self, ctx: CallContext, call_next: CallNext) -> Any:
        assert ctx.sizes is not None
        self.requests[ctx.id] = ctx.sizes.request
        self.order.append(ctx.sizes.request)
        ctx.sizes.on_response(self.responses[ctx.id].append)
        return await call_next(ctx)


class Plain:
    async def __call__(self, ctx: CallContext, call_next: CallNext) -> Any:
        return await call_next(ctx)


class Refuse:
    async def __call__(self, ctx: CallContext, call_next: CallNext) -> Any:
        if ctx.method == "echo" and ctx.id.startswith("refuse"):
            raise PermissionError("refused by interceptor")
        return await call_next(ctx)


class Wire:
    """Raw MPRPC 0.1 client: either framing, optional zlib; counts frame bytes."""

    def __init__(self, port: int, *, length: bool = False, compress: bool = False) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.buf = b""
        self.length = False
        self.want_length = length
        self.compress = compress

    def frame(self, payload: bytes) -> bytes:
        if self.compress:
            payload = zlib.compress(payload)
        if self.length:
            return struct.pack(">I", len(payload)) + payload
        return payload + SEP

    def send(self, m: Any) -> int:
        data = self.frame(pack(m))
        self.sock.sendall(data)
        return len(data)

    def recv(self) -> tuple[Any, int]:
        while True:
            if self.length:
                if len(self.buf) >= 4:
                    (n,) = struct.unpack(">I", self.buf[:4])
                    if len(self.buf) >= 4 + n:
                        f, self.buf = self.buf[4 : 4 + n], self.buf[4 + n :]
                        return self.decode(f), n + 4
            elif SEP in self.buf:
                f, _, self.buf = self.buf.partition(SEP)
                return self.decode(f), len(f) + len(SEP)
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise EOFError(self.buf[:200])
            self.buf += chunk

    def decode(self, f: bytes) -> Any:
        if self.compress:
            f = zlib.decompress(f)
        return unpack(f)

    def login(self, features: list[str]) -> Any:
        if self.want_length:
            features = [*features, "length-framing"]
        self.send({**V, "AUTH": {"USERNAME": None, "PASSWORD": None}, "FEATURES": features})
        r, _ = self.recv()
        assert r["CODE"] == 100, r
        if "length-framing" in (r.get("FEATURES") or []):
            self.length = True
        assert self.length == self.want_length
        return r

    def call(self, id: str, method: str, *args: Any, **extra: Any) -> int:
        return self.send({**V, "ID": id, "METHOD": method, "ARGS": list(args), **extra})

    def close(self) -> None:
        self.sock.close()


def build(*interceptors: Any, **opts: Any) -> tuple[Server, dict[str, Any]]:
    server = Server(("127.0.0.1", 0), interceptors=list(interceptors), **opts)
    state: dict[str, Any] = {"gate": None}

    @server.register_function()
    async def echo(value: Any) -> Any:
        return value

    @server.register_function()
    async def count(n: int, text: str) -> AsyncIterator[str]:
        for i in range(n):
            yield f"{i}{text}"

    @server.register_function()
    async def broken(text: str) -> None:
        raise ValueError(text)

    @server.register_function()
    async def slow(seconds: float) -> str:
        await asyncio.sleep(seconds)
        return "late"

    @server.register_function()
    async def sep(kind: str, n: int) -> Any:
        text = "x" + SEP.decode() * n  # the arguments never hold the separator
        if kind == "raise":
            raise ValueError(text)
        if kind == "stream":

            async def items() -> AsyncIterator[str]:
                yield "clean"
                yield text

            return items()
        return text

    @server.register_function()
    async def blob(n: int) -> bytes:
        return bytes(range(256)) * (n // 256)

    return server, state


def rid(r: Any) -> str:
    return str(r.get("ID") or (r.get("MESSAGE") or {}).get("ID"))


def _replies(w: Wire, n: int) -> dict[str, list[int]]:
    got: dict[str, list[int]] = defaultdict(list)
    for _ in range(n):
        r, size = w.recv()
        got[rid(r)].append(size)
    return got


def _settle(rec: Rec, expected: dict[str, list[int]]) -> None:
    wait_for(lambda: all(len(rec.responses[k]) >= len(v) for k, v in expected.items()))


FRAMINGS = [(False, False), (False, True), (True, False), (True, True)]


@pytest.mark.parametrize(
    ("length", "compress"), FRAMINGS, ids=["sep", "sep-zlib", "len", "len-zlib"]
)
def test_raw_wire_sizes_large_values_streams_errors(length: bool, compress: bool) -> None:
    rec = Rec()
    server, _ = build(rec)
    with serve_in_thread(server) as running:
        w = Wire(running.server.port, length=length, compress=compress)
        try:
            w.login([])
            sent: dict[str, int] = {}
            big = bytes(range(256)) * (MiB // 256)
            sent["big1"] = w.call("big1", "echo", big)
            sent["big5"] = w.call("big5", "echo", "z" * (5 * MiB - 100))
            sent["blob"] = w.call("blob", "blob", 3 * MiB)
            sent["stream"] = w.call("stream", "count", 300, "q" * 50)
            sent["err"] = w.call("err", "broken", "boom" * 100)
            got = _replies(w, 3 + 302 + 1)
            # pre-handler errors: unknown method, bad args
            sent["unknown"] = w.call("unknown", "nope", 1)
            sent["badargs"] = w.call("badargs", "echo", 1, 2, 3)
            got.update(_replies(w, 2))
        finally:
            w.close()
        _settle(rec, {k: v for k, v in got.items() if k in rec.requests})
    for k in ("big1", "big5", "blob", "stream", "err"):
        assert rec.requests[k] == sent[k], k
        assert rec.responses[k] == got[k], k
    assert len(got["stream"]) == 302
    # calls refused before the handler: if the interceptor saw them, it must be exact
    for k in ("unknown", "badargs"):
        if k in rec.requests:
            assert rec.requests[k] == sent[k], k
            assert rec.responses[k] == got[k], k


def test_pipelined_calls_on_one_connection() -> None:
    rec = Rec()
    server, _ = build(rec)
    with serve_in_thread(server) as running:
        w = Wire(running.server.port, length=True, compress=True)
        try:
            w.login([])
            sent = {f"p{i}": w.call(f"p{i}", "echo", "v" * (i * 37)) for i in range(300)}
            got = _replies(w, 300)
        finally:
            w.close()
        _settle(rec, got)
    assert rec.requests == sent
    assert {k: rec.responses[k] for k in got} == got


def test_chain_of_askers_and_non_askers_and_a_refuser() -> None:
    first, second = Rec(), Rec()
    server, _ = build(Plain(), first, Plain(), Refuse(), second)
    with serve_in_thread(server) as running:
        w = Wire(running.server.port)
        try:
            w.login([])
            s1 = w.call("ok", "echo", "x" * 500)
            s2 = w.call("refuse1", "echo", "y" * 500)
            got = _replies(w, 2)
        finally:
            w.close()
        _settle(first, got)
    assert first.requests == {"ok": s1, "refuse1": s2}
    assert first.responses["ok"] == got["ok"]
    assert first.responses["refuse1"] == got["refuse1"]  # the error reply is measured
    assert second.requests == {"ok": s1}  # the refused call never reached it
    assert second.responses["ok"] == got["ok"]


def test_oneway_and_kept_results_and_cancel_and_deadline() -> None:
    rec = Rec()
    server, _ = build(rec)
    with serve_in_thread(server) as running:
        w = Wire(running.server.port, length=True)
        try:
            w.login(["oneway", "cancel", "deadline"])
            s_one = w.call("one", "echo", "o" * 100, ONEWAY=True)
            s_keep = w.call("keep", "echo", "k" * 100, RETURN=False)
            s_dl = w.call("dl", "slow", 30, DEADLINE=0.05)
            s_can = w.call("can", "slow", 30)
            wait_for(lambda: "can" in rec.requests and "one" in rec.requests)
            w.send({**V, "ID": "can", "CANCEL": True})
            s_get = w.call("get", "system.getresult", "keep")
            s_after = w.call("after", "echo", "a")
            got: dict[str, list[int]] = defaultdict(list)
            while "after" not in got or "get" not in got or "dl" not in got:
                r, size = w.recv()
                got[rid(r)].append(size)
        finally:
            w.close()
        _settle(rec, got)
    assert rec.requests["one"] == s_one
    assert rec.responses["one"] == []  # nothing sent for a oneway call
    assert "one" not in got
    assert rec.requests["keep"] == s_keep
    assert rec.responses["keep"] == got.get("keep", [])
    assert rec.requests["dl"] == s_dl
    assert rec.responses["dl"] == got["dl"] and len(got["dl"]) == 1
    assert rec.requests["can"] == s_can
    assert rec.responses["can"] == got.get("can", [])
    assert rec.requests["after"] == s_after
    assert rec.responses["after"] == got["after"]
    if "get" in rec.requests:
        assert rec.requests["get"] == s_get
        assert rec.responses["get"] == got["get"]


def test_limits_max_inflight_and_oversized() -> None:
    rec = Rec()
    server, _ = build(rec, max_inflight=1, max_message_size=64 * 1024)
    with serve_in_thread(server) as running:
        w = Wire(running.server.port)
        try:
            w.login([])
            s_slow = w.call("slow", "slow", 0.3)
            s_over = w.call("over", "echo", "x")
            got = _replies(w, 2)
            s_big = w.call("big", "blob", 200 * 1024)  # reply too large: 405
            got.update(_replies(w, 1))
        finally:
            w.close()
        _settle(rec, {k: v for k, v in got.items() if k in rec.requests})
    assert rec.requests["slow"] == s_slow
    assert rec.responses["slow"] == got["slow"]
    assert rec.requests["big"] == s_big
    assert rec.responses["big"] == got["big"]
    if "over" in rec.requests:
        assert rec.requests["over"] == s_over
        assert rec.responses["over"] == got["over"]


def test_a_raising_callback_and_a_late_callback_do_not_break_calls() -> None:
    kept: list[Any] = []
    late_calls: list[int] = []

    class Bad:
        message_sizes = True

        async def __call__(self, ctx: CallContext, call_next: CallNext) -> Any:
            assert ctx.sizes is not None

            def boom(size: int) -> None:
                raise RuntimeError("callback failed")

            ctx.sizes.on_response(boom)
            kept.append(ctx.sizes)
            return await call_next(ctx)

    rec = Rec()
    server, _ = build(Bad(), rec)
    with serve_in_thread(server) as running:
        w = Wire(running.server.port)
        try:
            w.login([])
            s = w.call("a", "echo", "x" * 200)
            got = _replies(w, 1)
            s2 = w.call("b", "count", 3, "y")
            got.update(_replies(w, 5))
            # register a callback after the reply was sent: must not raise or crash
            for sizes in kept:
                sizes.on_response(late_calls.append)
            s3 = w.call("c", "echo", "z")
            got.update(_replies(w, 1))
        finally:
            w.close()
        _settle(rec, got)
    assert rec.requests == {"a": s, "b": s2, "c": s3}
    assert {k: rec.responses[k] for k in got} == got
    # a late callback on a finished call is never called with sizes of other calls
    assert all(x in got["a"] + got["b"] for x in late_calls)


class CRec:
    message_sizes = True

    def __init__(self) -> None:
        self.requests: list[int] = []
        self.responses: list[int] = []

    async def __call__(self, ctx: ClientCallContext, call_next: Any) -> Any:
        assert ctx.sizes is not None
        sizes = ctx.sizes
        sizes.on_response(self.responses.append)
        try:
            return await call_next(ctx)
        finally:
            self.requests.append(sizes.request)

    def sync(self, ctx: ClientCallContext, call_next: Any) -> Any:
        assert ctx.sizes is not None
        sizes = ctx.sizes
        sizes.on_response(self.responses.append)
        try:
            return call_next(ctx)
        finally:
            self.requests.append(sizes.request)


CRec.sync.message_sizes = True  # type: ignore[attr-defined]


class Proxy:
    """Counts bytes per frame both ways between a client and the server."""

    def __init__(self, target: int, length: bool) -> None:
        self.target = target
        self.length = length
        self.up: list[int] = []
        self.down: list[int] = []
        self.lsock = socket.create_server(("127.0.0.1", 0))
        self.port = self.lsock.getsockname()[1]
        self.threads: list[threading.Thread] = []
        self.socks: list[socket.socket] = []
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()

    def _accept(self) -> None:
        try:
            while True:
                c, _ = self.lsock.accept()
                s = socket.create_connection(("127.0.0.1", self.target))
                self.socks += [c, s]
                for a, b, out in ((c, s, self.up), (s, c, self.down)):
                    t = threading.Thread(target=self._pump, args=(a, b, out), daemon=True)
                    t.start()
        except OSError:
            return

    def _pump(self, src: socket.socket, dst: socket.socket, out: list[int]) -> None:
        buf = b""
        first = True
        try:
            while True:
                d = src.recv(1 << 20)
                if not d:
                    dst.shutdown(socket.SHUT_WR)
                    return
                buf += d
                while True:
                    if first or not self.length:
                        i = buf.find(SEP)
                        if i < 0:
                            break
                        out.append(i + len(SEP))
                        buf = buf[i + len(SEP) :]
                        first = False
                    else:
                        if len(buf) < 4:
                            break
                        (n,) = struct.unpack(">I", buf[:4])
                        if len(buf) < 4 + n:
                            break
                        out.append(4 + n)
                        buf = buf[4 + n :]
                # forward only once counted, so a reader never races the count
                dst.sendall(d)
        except OSError:
            return

    def close(self) -> None:
        self.lsock.close()
        for s in self.socks:
            s.close()


@pytest.mark.parametrize("length", [True, False], ids=["len", "sep"])
@pytest.mark.parametrize("compreser", [None, "zlib", "bz2", "lzma", "json"])
def test_proxy_counts_match_both_clients(length: bool, compreser: str | None) -> None:
    srv = Rec()
    server, _ = build(srv)
    opts: dict[str, Any] = {} if length else {"features": ()}
    if compreser == "json":
        opts["debug"] = True
    elif compreser:
        opts["compreser"] = compreser
    with serve_in_thread(server) as running:
        port = running.server.port
        # async client through a proxy
        proxy = Proxy(port, length)
        cli = CRec()

        async def main() -> None:
            rpc = AsyncRPC(f"tcp://127.0.0.1:{proxy.port}", interceptors=[cli], **opts)
            await rpc.connect()
            try:
                big = "e" * (MiB if compreser in (None, "zlib") else 200_000)  # bz2/lzma: slow
                assert await rpc.echo(big) == big
                items = [x async for x in await rpc.count(50, "s" * 100)]
                assert len(items) == 50
                with pytest.raises(Exception, match="bang"):
                    await rpc.broken("bang")
                with pytest.raises(Exception):  # noqa: B017
                    await rpc.nope()
                await asyncio.gather(*(rpc.echo("g" * i) for i in range(50)))
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(rpc.slow(30), 0.1)
                assert await rpc.echo("fin") == "fin"
            finally:
                await rpc.close()

        arun(main())
        proxy.close()
        # first frame each way is the login / welcome; the timed-out call also sent a CANCEL
        up = sorted(proxy.up[1:])
        for size in cli.requests:
            assert size in up, f"client request size {size} is no frame the proxy saw"
            up.remove(size)
        # the CANCEL (no call), negotiated unless `features=()` turned every feature off
        assert len(up) == (1 if length else 0), up
        assert sorted(cli.responses) == sorted(proxy.down[1:])
        # the sync client through another proxy
        proxy2 = Proxy(port, length)
        cli2 = CRec()
        with RPC(f"tcp://127.0.0.1:{proxy2.port}", interceptors=[cli2.sync], **opts) as rpc:
            assert rpc.echo("e" * MiB) == "e" * MiB
            assert len(list(rpc.count(20, "s"))) == 20
            with pytest.raises(Exception, match="bang"):
                rpc.broken("bang")
        proxy2.close()
        assert cli2.requests == proxy2.up[1:]
        assert cli2.responses == proxy2.down[1:]


def test_many_connections_at_once_client_and_server_agree() -> None:
    srv = Rec()
    server, _ = build(srv)
    clis = [CRec() for _ in range(20)]

    async def main() -> None:
        url = None
        async with client_for(server) as first:
            url = server_url(server)
            assert await first.echo("w") == "w"
            rpcs = [AsyncRPC(url, interceptors=[c]) for c in clis]
            await asyncio.gather(*(r.connect() for r in rpcs))
            try:
                await asyncio.gather(
                    *(r.echo("m" * (i * 100 + j)) for i, r in enumerate(rpcs) for j in range(20))
                )
            finally:
                await asyncio.gather(*(r.close() for r in rpcs))

    arun(main())
    creqs = sorted(x for c in clis for x in c.requests)
    cresp = sorted(x for c in clis for x in c.responses)
    sreqs = sorted(srv.order)[:]
    # the server also saw the first client's one call
    assert len(creqs) == 400
    assert all(creqs.count(x) <= sreqs.count(x) for x in set(creqs))
    sresp = sorted(x for v in srv.responses.values() for x in v)
    assert all(cresp.count(x) <= sresp.count(x) for x in set(cresp))


def test_no_memory_growth_over_10000_measured_calls() -> None:
    srv = Rec()
    cli = CRec()

    class Drop:  # asks, keeps nothing
        message_sizes = True

        async def __call__(self, ctx: CallContext, call_next: CallNext) -> Any:
            assert ctx.sizes is not None
            total = [ctx.sizes.request]
            ctx.sizes.on_response(total.append)
            return await call_next(ctx)

    class CDrop:
        message_sizes = True

        async def __call__(self, ctx: ClientCallContext, call_next: Any) -> Any:
            assert ctx.sizes is not None
            ctx.sizes.on_response(lambda n: None)
            return await call_next(ctx)

    del srv, cli
    server, _ = build(Drop())

    async def main() -> int:
        async with client_for(server, interceptors=[CDrop()]) as rpc:

            async def batch(n: int) -> None:
                for _ in range(n // 100):
                    await asyncio.gather(*(rpc.echo("x" * 64) for _ in range(100)))

            await batch(1000)
            gc.collect()
            tracemalloc.start()
            try:
                before = tracemalloc.get_traced_memory()[0]
                await batch(10_000)
                gc.collect()
                after = tracemalloc.get_traced_memory()[0]
            finally:
                tracemalloc.stop()
            return after - before

    delta = arun(main(), timeout=120)
    assert delta < 2 * MiB, f"{delta} bytes retained after 10,000 measured calls"


def test_otel_histograms_match_measured_sizes() -> None:
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider

    from pymprpc.otel import ClientTelemetry, ServerTelemetry

    reader = InMemoryMetricReader()
    mp = MeterProvider(metric_readers=[reader])
    tp = TracerProvider()
    srv = Rec()
    cli = CRec()
    server = Server(("127.0.0.1", 0), interceptors=[ServerTelemetry(tp, mp), srv])

    @server.register_function()
    async def echo(v: Any) -> Any:
        return v

    @server.register_function()
    async def count(n: int) -> AsyncIterator[int]:
        for i in range(n):
            yield i

    @server.register_function()
    async def broken() -> None:
        raise ValueError("x")

    async def main() -> None:
        async with client_for(
            server, interceptors=[ClientTelemetry(tp, mp), cli], compreser="zlib"
        ) as rpc:
            await rpc.echo("a" * 5000)
            assert [x async for x in await rpc.count(10)] == list(range(10))
            with pytest.raises(Exception):  # noqa: B017
                await rpc.broken()

    arun(main())
    wait_for(lambda: sum(len(v) for v in srv.responses.values()) == 14)
    points: dict[str, tuple[int, float]] = {}
    data = reader.get_metrics_data()
    assert data is not None
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                if m.name.endswith(".size"):
                    cnt = sum(p.count for p in m.data.data_points)
                    tot = sum(p.sum for p in m.data.data_points)
                    points[m.name] = (cnt, tot)
    sresp = [x for v in srv.responses.values() for x in v]
    assert points["rpc.server.request.size"] == (3, sum(srv.order))
    assert points["rpc.server.response.size"] == (14, sum(sresp))
    assert points["rpc.client.request.size"] == (3, sum(cli.requests))
    assert points["rpc.client.response.size"] == (14, sum(cli.responses))
    assert sum(cli.requests) == sum(srv.order)
    assert sorted(cli.responses) == sorted(sresp)


def test_a_raising_client_callback_does_not_break_the_call_or_the_connection() -> None:
    class CBad:
        message_sizes = True

        async def __call__(self, ctx: ClientCallContext, call_next: Any) -> Any:
            assert ctx.sizes is not None

            def boom(size: int) -> None:
                raise RuntimeError("client callback failed")

            ctx.sizes.on_response(boom)
            return await call_next(ctx)

        def sync(self, ctx: ClientCallContext, call_next: Any) -> Any:
            assert ctx.sizes is not None

            def boom(size: int) -> None:
                raise RuntimeError("client callback failed")

            ctx.sizes.on_response(boom)
            return call_next(ctx)

    CBad.sync.message_sizes = True  # type: ignore[attr-defined]
    after = CRec()
    server, _ = build()

    async def main() -> None:
        async with client_for(server, interceptors=[CBad(), after]) as rpc:
            assert await asyncio.wait_for(rpc.echo("x"), 10) == "x"
            items = await asyncio.wait_for(rpc.count(3, "y"), 10)
            assert [x async for x in items] == ["0y", "1y", "2y"]
            assert await asyncio.wait_for(rpc.echo("again"), 10) == "again"

    arun(main())
    assert len(after.responses) == 7  # the other listener still hears every reply
    with (
        serve_in_thread(server) as running,
        RPC(server_url(running.server), interceptors=[CBad().sync], timeout=10) as rpc,
    ):
        assert rpc.echo("x") == "x"
        assert list(rpc.count(2, "z")) == ["0z", "1z"]
        assert rpc.echo("again") == "again"


def test_a_listener_added_during_a_reply_hears_only_later_replies() -> None:
    heard: list[tuple[str, int]] = []

    class Adder:
        message_sizes = True

        async def __call__(self, ctx: CallContext, call_next: CallNext) -> Any:
            assert ctx.sizes is not None
            sizes = ctx.sizes
            n = [0]

            def first(size: int) -> None:
                n[0] += 1
                heard.append(("first", size))
                if n[0] == 1:  # while the stream's start is reported: "from now on"
                    sizes.on_response(lambda size: heard.append(("second", size)))

            sizes.on_response(first)
            return await call_next(ctx)

    server, _ = build(Adder())
    with serve_in_thread(server) as running:
        w = Wire(running.server.port)
        try:
            w.login([])
            w.call("s", "count", 3, "y")
            got = _replies(w, 5)
        finally:
            w.close()
        wait_for(lambda: sum(1 for who, _ in heard if who == "first") == 5)
    firsts = [size for who, size in heard if who == "first"]
    seconds = [size for who, size in heard if who == "second"]
    assert firsts == got["s"]
    assert seconds == got["s"][1:]  # not the reply during which it was added


class PairRec:
    """Client side: maps each call's request size to the reply sizes its listener heard."""

    message_sizes = True

    def __init__(self) -> None:
        self.pairs: list[tuple[int, list[int]]] = []

    async def __call__(self, ctx: ClientCallContext, call_next: Any) -> Any:
        assert ctx.sizes is not None
        sizes, heard = ctx.sizes, []
        sizes.on_response(heard.append)
        try:
            return await call_next(ctx)
        finally:
            self.pairs.append((sizes.request, heard))

    def sync(self, ctx: ClientCallContext, call_next: Any) -> Any:
        assert ctx.sizes is not None
        sizes, heard = ctx.sizes, []
        sizes.on_response(heard.append)
        try:
            return call_next(ctx)
        finally:
            self.pairs.append((sizes.request, heard))


PairRec.sync.message_sizes = True  # type: ignore[attr-defined]


def test_replies_are_attributed_to_their_own_call_under_concurrency() -> None:
    srv = Rec()
    server, _ = build(srv)
    cli = PairRec()

    async def main() -> None:
        async with client_for(server, interceptors=[cli]) as rpc:
            # unique lengths, answered out of order by the event loop
            await asyncio.gather(*(rpc.echo("a" * (10 + 3 * i)) for i in range(200)))

    arun(main())
    threaded = PairRec()
    with (
        serve_in_thread(server) as running,
        RPC(server_url(running.server), interceptors=[threaded.sync]) as rpc,
    ):

        def worker(k: int) -> None:
            for j in range(25):
                text = "b" * (2000 + 8 * (k * 25 + j))
                assert rpc.echo(text) == text

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    wait_for(lambda: sum(len(v) for v in srv.responses.values()) == 400)
    by_request = {srv.requests[k]: v for k, v in srv.responses.items()}
    for pairs in (cli.pairs, threaded.pairs):
        assert len(pairs) == 200
        for request, heard in pairs:
            assert heard == by_request[request], (request, heard)


def test_a_call_answered_at_shutdown_is_measured() -> None:
    rec = Rec()
    server, _ = build(rec, grace_period=0.2)
    with serve_in_thread(server) as running:
        w = Wire(running.server.port, length=True)
        w.login(["cancel"])
        sent = w.call("s", "slow", 30)
        wait_for(lambda: "s" in rec.requests)
    try:  # the server has stopped: what it sent is in our socket
        got = _replies(w, 1)
    finally:
        w.close()
    assert rec.requests["s"] == sent
    assert rec.responses["s"] == got["s"]


def test_client_notify_and_delay_request_sizes_match_the_wire() -> None:
    srv = Rec()
    server, _ = build(srv)
    with serve_in_thread(server) as running:
        proxy = Proxy(running.server.port, length=True)
        cli = CRec()

        async def main() -> None:
            rpc = AsyncRPC(f"tcp://127.0.0.1:{proxy.port}", interceptors=[cli])
            await rpc.connect()
            try:
                await rpc.notify("echo", "n" * 777)
                kept = await rpc.delay("echo", "d" * 555)
                assert await rpc.echo("done") == "done"  # the others were sent before
                assert await rpc.system.getresult(kept) == "d" * 555
            finally:
                await rpc.close()

        arun(main())
        wait_for(lambda: len(proxy.up) >= 5)
        proxy.close()
    # every call the client made is measured on the client as the proxy saw it
    assert sorted(cli.requests) == sorted(proxy.up[1:5])
    assert sorted(cli.responses) == sorted(proxy.down[1:])


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "zlib"])
def test_replies_rewritten_because_of_the_separator_are_measured_as_sent(compress: bool) -> None:
    """Separator framing: a result holding the separator becomes a 405, an error whose
    DATA holds it is sent without DATA; the size must be the frame actually sent."""
    rec = Rec()
    server, _ = build(rec)
    with serve_in_thread(server) as running:
        w = Wire(running.server.port, compress=compress)
        try:
            w.login([])
            sent = {
                "res": w.call("res", "sep", "return", 50),
                "err": w.call("err", "sep", "raise", 50),
                "item": w.call("item", "sep", "stream", 50),
            }
            more = w.call("ok", "echo", "fine")
            got: dict[str, list[int]] = defaultdict(list)
            while "ok" not in got:
                r, size = w.recv()
                got[rid(r)].append(size)
        finally:
            w.close()
        wait_for(lambda: all(len(rec.responses[k]) >= len(v) for k, v in got.items()))
    sent["ok"] = more
    assert len(got["item"]) >= 3  # start, the clean item, then the refused item's error
    assert rec.requests == sent
    assert {k: rec.responses[k] for k in got} == dict(got)


def test_metadata_and_deadlines_are_part_of_the_measured_request() -> None:
    srv = Rec()
    server, _ = build(srv)
    with serve_in_thread(server) as running:
        proxy = Proxy(running.server.port, length=True)
        cli = CRec()

        async def main() -> None:
            rpc = AsyncRPC(f"tcp://127.0.0.1:{proxy.port}", interceptors=[cli])
            await rpc.connect()
            try:
                tagged = rpc.echo.with_options(metadata={"k" * 50: "v" * 3000}, timeout=5)
                assert await tagged("m") == "m"
                assert await rpc.echo("m") == "m"
            finally:
                await rpc.close()

        arun(main())
        proxy.close()
        wait_for(lambda: len(srv.order) == 2)
    assert cli.requests == proxy.up[1:3] == srv.order
    assert cli.requests[0] > cli.requests[1] + 3000  # the metadata travelled and counted
    assert cli.responses == proxy.down[1:]


def test_otel_message_sizes_false_measures_nothing() -> None:
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider

    from pymprpc.otel import ClientTelemetry, ServerTelemetry

    reader = InMemoryMetricReader()
    mp = MeterProvider(metric_readers=[reader])
    tp = TracerProvider()
    seen: list[Any] = []

    class Look:
        async def __call__(self, ctx: CallContext, call_next: CallNext) -> Any:
            seen.append(ctx.sizes)
            return await call_next(ctx)

    server, _ = build(ServerTelemetry(tp, mp, message_sizes=False), Look())

    async def main() -> None:
        async with client_for(
            server, interceptors=[ClientTelemetry(tp, mp, message_sizes=False)]
        ) as rpc:
            assert await rpc.echo("a") == "a"

    arun(main())
    names = set()
    data = reader.get_metrics_data()
    for rm in data.resource_metrics if data else []:
        for sm in rm.scope_metrics:
            names.update(m.name for m in sm.metrics)
    assert "rpc.server.duration" in names and "rpc.client.duration" in names
    assert not {n for n in names if n.endswith(".size")}
    assert seen == [None]


def test_many_raw_connections_at_once_exact_per_call() -> None:
    rec = Rec()
    server, _ = build(rec)
    sent: dict[str, int] = {}
    got: dict[str, list[int]] = {}
    errors: list[BaseException] = []

    def conn(k: int, port: int) -> None:
        try:
            w = Wire(port, length=k % 2 == 0, compress=k % 3 == 0)
            try:
                w.login([])
                for j in range(30):
                    sent[f"c{k}-{j}"] = w.call(f"c{k}-{j}", "echo", "r" * (k * 97 + j))
                sent[f"c{k}-s"] = w.call(f"c{k}-s", "count", 5, "t" * k)
                got.update(_replies(w, 30 + 7))
            finally:
                w.close()
        except BaseException as exc:  # noqa: BLE001 - reported in the test thread
            errors.append(exc)

    with serve_in_thread(server) as running:
        threads = [threading.Thread(target=conn, args=(k, running.server.port)) for k in range(24)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors
        wait_for(lambda: all(len(rec.responses[k]) == len(v) for k, v in got.items()))
    assert rec.requests == sent
    assert {k: rec.responses[k] for k in got} == got


@pytest.mark.parametrize(("flag", "measured"), [(1, True), ("yes", True), (0, False), ("", False)])
def test_any_true_message_sizes_attribute_asks(flag: Any, measured: bool) -> None:
    seen: list[Any] = []

    class Asker:
        message_sizes = flag

        async def __call__(self, ctx: CallContext, call_next: CallNext) -> Any:
            seen.append(ctx.sizes)
            return await call_next(ctx)

    def sync_asker(ctx: ClientCallContext, call_next: Any) -> Any:
        seen.append(ctx.sizes)
        return call_next(ctx)

    sync_asker.message_sizes = flag  # type: ignore[attr-defined]
    server, _ = build(Asker())
    with (
        serve_in_thread(server) as running,
        RPC(server_url(running.server), interceptors=[sync_asker]) as rpc,
    ):
        assert rpc.echo("q") == "q"
    assert len(seen) == 2
    assert all((s is not None) == measured for s in seen), seen


def test_a_call_refused_before_sending_reports_no_bytes() -> None:
    server, _ = build()
    cli = CRec()

    async def main() -> None:
        async with client_for(server, interceptors=[cli]) as rpc:
            with pytest.raises(Exception, match="set"):
                await rpc.echo({1, 2})  # cannot be encoded: never sent
            assert await rpc.echo("after") == "after"

    arun(main())
    assert cli.requests[0] == 0 and cli.requests[1] > 0
    assert len(cli.responses) == 1
    sync_cli = CRec()
    with (
        serve_in_thread(server) as running,
        RPC(server_url(running.server), interceptors=[sync_cli.sync]) as rpc,
    ):
        with pytest.raises(Exception, match="set"):
            rpc.echo({1, 2})
        assert rpc.echo("after") == "after"
    assert sync_cli.requests[0] == 0 and sync_cli.requests[1] > 0
    assert len(sync_cli.responses) == 1


def test_oneway_and_kept_streams_report_what_was_sent() -> None:
    rec = Rec()
    server, _ = build(rec)
    with serve_in_thread(server) as running:
        w = Wire(running.server.port, length=True, compress=True)
        try:
            w.login(["oneway"])
            sent = {
                "ow": w.call("ow", "count", 5, "o", ONEWAY=True),
                "kept": w.call("kept", "count", 5, "k", RETURN=False),
            }
            wait_for(lambda: "kept" in rec.requests and "ow" in rec.requests)
            sent["get"] = w.call("get", "system.getresult", "kept")
            sent["end"] = w.call("end", "echo", "e")
            got: dict[str, list[int]] = defaultdict(list)
            while "end" not in got or "get" not in got:
                r, size = w.recv()
                got[rid(r)].append(size)
        finally:
            w.close()
        wait_for(lambda: len(rec.responses["end"]) == 1)
    assert "ow" not in got and rec.responses["ow"] == []
    assert rec.requests["ow"] == sent["ow"] and rec.requests["kept"] == sent["kept"]
    assert rec.responses["kept"] == got.get("kept", [])
    assert rec.responses["end"] == got["end"]
    if "get" in rec.requests:
        assert rec.responses["get"] == got["get"]
