"""The server's fast lane for plain calls gives exactly what the general path gives.

`ServerConnection.receive_call` and the handler's `_run_plain` skip the general layers
for the most common message; these tests feed the same bytes, random ones included, to a
connection with the fast lane and to one without, and compare everything that comes out.
They also pin, by counting Python function calls, that a plain call takes the fast lane.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import zlib
from collections.abc import AsyncIterator, Callable
from types import FrameType
from typing import Any

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from service import PASSWORD, USER, Probe, build_server
from test_handler_writes import RecordingTransport, from_callback

import pymprpc
from pymprpc import Server
from pymprpc.protocol import (
    SEPARATOR,
    CallRequest,
    ClientConnection,
    Credentials,
    Feature,
    Result,
    ServerConnection,
    ServerSettings,
)
from pymprpc.protocol.framing import LengthFramer
from pymprpc.schema import INT, Param, Signature
from pymprpc.server.handler import ConnectionHandler
from pymprpc.server.kept_results import current_scope
from pymprpc.server.shares import current_owner

ALL = sorted(f.value for f in Feature)


# -- the core: receive_call against receive_data ------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.floats(allow_nan=True),
    st.text(max_size=3),
    st.binary(max_size=3),
)
ids = st.one_of(st.sampled_from(["a", "b", "c", ""]), scalars)
values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(scalars, inner, max_size=2)
)
fields = {
    "MPRPC": st.one_of(st.just("0.1"), st.just("0.1"), scalars),
    "ID": ids,
    "METHOD": st.one_of(st.sampled_from(["add", "x.y", ""]), scalars),
    "ARGS": st.one_of(st.lists(scalars, max_size=3), values),
    "KWARGS": st.one_of(st.dictionaries(st.sampled_from(["a", "b"]), scalars), values),
    "RETURN": st.one_of(st.booleans(), scalars),
    "DEADLINE": st.one_of(st.floats(-1, 5), scalars),
    "METADATA": st.one_of(st.dictionaries(st.text(max_size=2), st.text(max_size=2)), values),
    "ONEWAY": st.one_of(st.booleans(), scalars),
    "CANCEL": st.one_of(st.just(True), scalars),
    "HEARTBEAT": st.one_of(st.just("PING"), scalars),
    "AUTH": values,
    "OTHER": values,
}
# Mostly the keys of a call, now and then anything else.
likely = {"MPRPC": 0.95, "ID": 0.9, "METHOD": 0.9, "ARGS": 0.7, "KWARGS": 0.2}


@st.composite
def messages(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 19)) == 0:
        return draw(values)  # not even a map
    msg = {}
    for key, strategy in fields.items():
        if draw(st.floats(0, 1)) < likely.get(key, 0.05):
            msg[key] = draw(strategy)
    return msg


def ready_pair(
    features: list[str] | None, compressed: bool
) -> tuple[ServerConnection, ServerConnection, bool]:
    """Two connections authenticated alike; whether they use length framing."""
    pair = []
    for _ in range(2):
        conn = ServerConnection(ServerSettings(version="1"), Credentials([("u", "p")]))
        auth: dict[str, Any] = {"MPRPC": "0.1", "AUTH": {"USERNAME": "u", "PASSWORD": "p"}}
        if features is not None:
            auth["FEATURES"] = features
        payload = msgpack.packb(auth)
        conn.receive_data((zlib.compress(payload) if compressed else payload) + SEPARATOR)
        conn.chunks_to_send()
        pair.append(conn)
    return pair[0], pair[1], features is not None and "length-framing" in features


def frame(msg: Any, length: bool, compressed: bool) -> bytes:
    payload = msgpack.packb(msg)
    if compressed:
        payload = zlib.compress(payload)
    return b"".join(LengthFramer().frame(payload)) if length else payload + SEPARATOR


def as_events(received: Any) -> list[Any]:
    """receive_call's answer as receive_data's events: a plain call's tuple, alone or in a
    list (a read of several), is the CallRequest receive_data would give."""
    if type(received) is tuple:
        return [CallRequest(*received)]
    return [CallRequest(*event) if type(event) is tuple else event for event in received]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(messages(), min_size=1, max_size=6),
    st.sampled_from([None, [], ALL, ["length-framing"], ["deadline", "metadata", "oneway"]]),
    st.booleans(),
    st.lists(st.integers(0, 40), max_size=3),
    st.integers(0, 9),
)
def test_receive_call_gives_what_receive_data_gives(
    msgs: list[Any],
    features: list[str] | None,
    compressed: bool,
    cuts: list[int],
    garbage: int,
) -> None:
    fast, general, length = ready_pair(features, compressed)
    wire = [frame(m, length, compressed) for m in msgs]
    if garbage == 0:
        wire.append(b"\x00\x00\x00\x02\xc1\xc1" if length else b"\xc1" + SEPARATOR)
    if cuts:  # the same bytes, cut elsewhere (partial frames, several in one read)
        data = b"".join(wire)
        points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
        wire = [data[a:b] for a, b in itertools.pairwise(points)]
    for chunk in wire:
        assert as_events(fast.receive_call(chunk)) == general.receive_data(chunk)
        assert fast.chunks_to_send() == general.chunks_to_send()
        assert fast.closed == general.closed
        assert repr(fast.error) == repr(general.error)
        assert fast.buffered_bytes == general.buffered_bytes
        assert fast._inflight == general._inflight


def test_a_plain_call_comes_back_as_a_tuple_and_is_in_flight() -> None:
    for features in (None, ALL):
        conn, _, length = ready_pair(features, False)
        msg = {"MPRPC": "0.1", "ID": "a", "METHOD": "add", "ARGS": [1, 2]}
        assert conn.receive_call(frame(msg, length, False)) == ("a", "add", [1, 2], {})
        conn.send_result("a", 3)
        assert conn.chunks_to_send()  # it was in flight: the result is queued


def test_anything_but_a_plain_call_takes_the_general_path() -> None:
    conn, _, length = ready_pair(ALL, False)
    call = {"MPRPC": "0.1", "ID": "a", "METHOD": "add", "ARGS": [1, 2]}
    for extra in ({"DEADLINE": 1.0}, {"RETURN": False}, {"METADATA": {"k": "v"}}):
        msg = {**call, **extra, "ID": str(extra)}
        [event] = conn.receive_call(frame(msg, length, False))  # type: ignore[misc]
        assert isinstance(event, CallRequest)
    # A duplicate ID: refused by the general path with its 400.
    assert type(conn.receive_call(frame(call, length, False))) is tuple
    assert conn.receive_call(frame(call, length, False)) == []
    assert b"duplicate in-flight ID" in b"".join(conn.chunks_to_send())


# -- the handler: fast lane on against forced off -------------------------------------


async def two_handlers(
    options: dict[str, Any], features: list[str] | None
) -> tuple[list[tuple[ConnectionHandler, RecordingTransport]], ClientConnection]:
    """A connection with the fast lane and one without, each to its own server (an
    account's kept results are server-wide), authenticated by the same client bytes."""
    handlers = []
    for plain in (True, False):
        handler = ConnectionHandler(serving(options)._core)
        handler._plain_calls = plain
        transport = RecordingTransport()
        handler.connection_made(transport)
        handlers.append((handler, transport))
    client = ClientConnection(
        USER, PASSWORD, features=frozenset(Feature(f) for f in features or ())
    )
    client.start()
    hello = b"".join(client.chunks_to_send())
    for handler, _ in handlers:
        await from_callback(handler, hello)
    client.receive_data(b"".join(handlers[0][1].writes))
    for _, transport in handlers:
        transport.writes.clear()
    return handlers, client


def serving(options: dict[str, Any]) -> Server:
    server = build_server(Probe(), **options)

    @server.register_function()
    async def plus(a: int, b: int = 0) -> int:
        return a + b

    @server.register_function()
    async def later(a: Any) -> Any:
        await asyncio.sleep(0)
        return a

    @server.register_function()
    async def fails(a: Any) -> Any:
        raise ValueError(f"no {a!r}")

    @server.register_function()
    async def who(a: Any = None) -> Any:
        ctx = pymprpc.current_call()
        ctx.set_response_metadata("seen", str(a))
        return [ctx.id, ctx.method, ctx.returns, ctx.user, ctx.deadline is None, ctx.streaming]

    @server.register_function()
    async def gives_stream(n: int) -> Any:
        async def items() -> AsyncIterator[int]:
            for i in range(n):
                yield i

        return items()

    @server.register_function()
    async def keyword_only(*, a: int) -> int:
        return a

    @server.register_function()
    async def odd(a: Any) -> Any:
        return {1, 2} if a else object()  # not encodable: 405

    @server.register_function()
    async def exits(a: Any) -> Any:
        raise SystemExit(a)

    # Typed (as mprpcgen registers a method): arguments checked on the fast lane, and
    # a result of another type than the declared int (a bool, past 64 bits, a str) or
    # an int at the edges, as the general path encodes (or refuses) it.
    @server.register_function(schema=Signature((Param("a", INT),), INT, name="typed", wire="typed"))
    async def typed(a: int) -> Any:
        edges = {0: True, 1: 2**64, 2: "x", 3: 2**64 - 1, 4: -(2**63) - 1, 5: -(2**63)}
        return edges.get(a, a)

    @server.register_function()
    async def whose() -> Any:
        return [current_scope.get(), id(current_owner.get())]

    return server


methods = st.sampled_from(
    [
        "plus",
        "typed",
        "later",
        "fails",
        "who",
        "gives_stream",
        "keyword_only",
        "odd",
        "exits",
        "count",
        "record",
        "nothing",
        "system.listMethods",
        "system.nothing",
    ]
)
call_args = st.lists(st.one_of(st.integers(0, 3), st.text(max_size=2)), max_size=3)
call_kwargs = st.dictionaries(st.sampled_from(["a", "b", "c"]), st.integers(0, 3), max_size=2)
calls = st.tuples(
    methods, call_args, call_kwargs, st.sampled_from([None, None, None, "deadline", "return"])
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.lists(calls, min_size=1, max_size=3), min_size=1, max_size=5),
    st.sampled_from([None, ALL]),
    st.sampled_from([{}, {"max_inflight": 2}, {"debug": True}]),
    st.booleans(),
)
def test_the_fast_lane_writes_what_the_general_path_writes(
    reads: list[list[tuple[str, list[Any], dict[str, Any], str | None]]],
    features: list[str] | None,
    options: dict[str, Any],
    cancel_some: bool,
) -> None:
    async def main() -> None:
        handlers, client = await two_handlers(options, features)
        for read in reads:
            wire = b""
            for method, args, kwargs, extra in read:
                deadline = 5.0 if extra == "deadline" else None
                id = client.send_call(
                    method, args, kwargs, returns=extra != "return", deadline=deadline
                )
                wire += b"".join(client.chunks_to_send())
                if cancel_some and method == "later":
                    client.send_cancel(id)
                    wire += b"".join(client.chunks_to_send())
            for handler, _ in handlers:
                await from_callback(handler, wire)
        for _ in range(50):  # settle: every call answered and written on both
            if not any(h.tasks or h._flush_scheduled for h, _ in handlers):
                break
            await asyncio.sleep(0)
        fast, general = (replies(b"".join(t.writes), features) for _, t in handlers)
        assert fast == general
        assert len(handlers[0][1].writes) == len(handlers[1][1].writes)  # as many syscalls
        assert not any(h.tasks for h, _ in handlers)

    asyncio.run(asyncio.wait_for(main(), 20))


def test_a_typed_result_on_the_fast_lane_is_sent_or_refused_as_the_general_path_does() -> None:
    """`typed` returns a bool, a str, an int at each edge of MessagePack's range and one
    past each, or its argument: the fast lane's own check of the declared type must let
    through or refuse (404, naming the method) exactly what the general path does, one
    call per read and all in one read."""

    async def main() -> None:
        for together in (False, True):
            handlers, client = await two_handlers({}, ["length-framing"])
            reads = []
            for a in range(7):
                client.send_call("typed", [a])
                reads.append(b"".join(client.chunks_to_send()))
            for handler, _ in handlers:
                for read in [b"".join(reads)] if together else reads:
                    await from_callback(handler, read)
            for _ in range(50):
                if not any(h.tasks or h._flush_scheduled for h, _ in handlers):
                    break
                await asyncio.sleep(0)
            fast, general = (replies(b"".join(t.writes), ["length-framing"]) for _, t in handlers)
            assert fast == general
            assert [m["CODE"] for m in fast] == [404, 404, 404, 200, 404, 200, 200]

    asyncio.run(asyncio.wait_for(main(), 20))


def replies(data: bytes, features: list[str] | None) -> list[Any]:
    """The messages written, with a debug traceback (FRAME) cut to its last line: the
    frames above the handler's differ between the two paths, the error does not."""
    if features is None:
        payloads = data.split(SEPARATOR)[:-1]
    else:
        payloads, pos = [], 0
        while pos < len(data):
            size = int.from_bytes(data[pos : pos + 4], "big")
            payloads.append(data[pos + 4 : pos + 4 + size])
            pos += 4 + size
    out = []
    for payload in payloads:
        msg = msgpack.unpackb(payload)
        frame = msg.get("MESSAGE", {}).get("DATA", {}).get("FRAME")
        if frame is not None:
            assert frame.startswith("Traceback"), frame
            msg["MESSAGE"]["DATA"]["FRAME"] = frame.rstrip().splitlines()[-1]
        out.append(msg)
    return out


# -- the fast lane is taken: Python function calls per plain call ---------------------


async def profiled_read(
    handler: ConnectionHandler, data: bytes, profile: Callable[[FrameType, str, Any], None]
) -> None:
    """`handler.data_received(data)` under `sys.setprofile(profile)`, run by the loop as a
    read callback is (not inside this coroutine's task), then awaited."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    def read() -> None:
        sys.setprofile(profile)
        try:
            handler.data_received(data)
        finally:
            sys.setprofile(None)
        done.set_result(None)

    loop.call_soon(read)
    await done


def python_calls_per_call() -> tuple[int, int]:
    """Python function calls made by data_received for one call that never suspends,
    with the fast lane and without."""

    async def main() -> tuple[int, int]:
        handlers, client = await two_handlers({}, ALL)
        counts = []
        for handler, transport in handlers:
            for i in range(3):  # the first calls warm caches (the thread's packer, ...)
                client.send_call("plus", [i, 1])
                data = b"".join(client.chunks_to_send())
                calls = 0

                def profile(frame: FrameType, event: str, arg: Any) -> None:
                    nonlocal calls
                    calls += event == "call"

                await profiled_read(handler, data, profile)
                [result] = client.receive_data(b"".join(transport.writes))
                transport.writes.clear()
                assert isinstance(result, Result) and result.value == i + 1
            counts.append(calls)
        return counts[0], counts[1]

    return asyncio.run(asyncio.wait_for(main(), 10))


def test_a_plain_call_takes_the_fused_lane() -> None:
    """Python function calls in data_received for `plus(i, 1)`: asyncio's own (the
    task's registration, the transport's methods) and ours. The fast lane made 30 when
    it was written, then 15 once a call laid out as our client writes it was read
    without the codec (`receive_call`) and a flat result replied to from pre-packed
    parts (`send_result`); the general path 53, then 39. Counts, not times: they do not
    flake."""
    fast, general = python_calls_per_call()
    print(f"Python function calls per plain call: fast lane {fast}, general path {general}")
    assert fast <= 16, fast  # parse, task, run, reply and write, fused
    assert fast + 20 <= general, (fast, general)


def test_a_call_sets_one_context_variable_and_sees_its_connection_in_its_context() -> None:
    """Each call's task starts from a copy of its connection's context, where the
    kept-results scope and the thread-pool owner are set once (`_calls_context`): a call
    sets only its own lazy call context (one ContextVar.set, where it took three), on
    the fast lane and the general path, and still sees its connection's scope and owner."""

    async def main() -> None:
        handlers, client = await two_handlers({}, ALL)
        for handler, transport in handlers:
            for method in ("plus", "whose", "plus", "whose"):
                client.send_call(method, [1] if method == "plus" else [])
                data = b"".join(client.chunks_to_send())
                sets = 0

                def profile(frame: FrameType, event: str, arg: Any) -> None:
                    nonlocal sets
                    sets += event == "c_call" and arg.__qualname__ == "ContextVar.set"

                await profiled_read(handler, data, profile)
                [result] = client.receive_data(b"".join(transport.writes))
                transport.writes.clear()
                assert isinstance(result, Result)
                if method == "whose":
                    assert result.value == [USER, id(handler._owner)]
                assert sets == 1, (handler._plain_calls, method, sets)

    asyncio.run(asyncio.wait_for(main(), 10))


def test_a_connection_that_measures_sizes_gets_every_call_as_an_event() -> None:
    conn, _, length = ready_pair(ALL, False)
    conn.measure_sizes()
    wire = frame({"MPRPC": "0.1", "ID": "a", "METHOD": "add", "ARGS": [1, 2]}, length, False)
    [event] = conn.receive_call(wire)  # type: ignore[misc]
    assert isinstance(event, CallRequest) and event.size == len(wire)
