"""Any mix of calls and frames pipelined in one write: the fast lane server answers
exactly as a server with an interceptor (which never takes it), reply for reply and in
order, and closes the connection alike. Hypothesis draws the mix: laid-out plain calls,
duplicate IDs, DEADLINE / METADATA / RETURN false / ONEWAY, cancels, unknown methods,
wrong argument counts, malformed, oversized, truncated and non-map frames, deep nesting,
collections over max_collection_len; sent in one write, or cut into several."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .fastlane_kit import State, Wire, passthrough, run_on, serving

pytestmark = pytest.mark.timeout(240)

MAX_ITEMS = 8


def _id(i: int) -> str:
    return f"c0ffee00-0000-4000-8000-{i:012d}"


def _call(i: int, method: str, args: list[Any], **extra: Any) -> dict[str, Any]:
    m: dict[str, Any] = {"MPRPC": "0.1", "ID": _id(i), "METHOD": method, "ARGS": args}
    m.update(extra)
    return m


def _framed(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


def _packed(m: Any) -> bytes:
    return _framed(msgpack.packb(m, use_bin_type=True))


ids = st.integers(0, 6)  # few: duplicates are common
plain = st.builds(
    lambda i, m, a: _packed(_call(i, m, a)),
    ids,
    st.sampled_from(["echo", "add", "echo_await", "nope", "getvar"]),
    st.lists(st.integers(-3, 3) | st.text(max_size=3), max_size=3),
)
extras = st.builds(
    lambda i, extra: _packed(_call(i, "echo", [i], **extra)),
    ids,
    st.sampled_from(
        [
            {"DEADLINE": 30},
            {"DEADLINE": -1},
            {"DEADLINE": "x"},
            {"METADATA": {"k": "v"}},
            {"METADATA": {"k": 1}},
            {"RETURN": False},
            {"ONEWAY": True},
            {"RETURN": "no"},
        ]
    ),
)
special = st.sampled_from(
    [
        _packed({"MPRPC": "0.1", "ID": _id(1), "CANCEL": True}),
        _packed({"MPRPC": "0.1", "ID": _id(9), "CANCEL": True}),
        _packed(_call(2, "echo", [list(range(MAX_ITEMS + 1))])),  # over max_collection_len
        _packed(_call(3, "echo", [{str(i): i for i in range(MAX_ITEMS + 1)}])),
        _packed(_call(4, "echo", [[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]])),
        _framed(msgpack.packb(_call(5, "echo", [None]))[:-1] + b"\x91" * 600 + b"\x01"),
        _packed([1, 2, 3]),  # not a map
        _framed(b"\xc1"),  # not MessagePack
        _framed(b""),
        _packed({"MPRPC": "0.1", "ID": 7, "METHOD": "echo", "ARGS": [1]}),  # int ID
        _packed({"MPRPC": "0.2", "ID": _id(6), "METHOD": "echo", "ARGS": [1]}),
        _packed({"MPRPC": "0.1", "ID": _id(6), "METHOD": "echo", "ARGS": {"x": 1}}),
        _packed({"MPRPC": "0.1", "ID": _id(6), "METHOD": "add"}),  # no ARGS
        _packed(_call(6, "add", [1, 2, 3, 4])),  # too many arguments
        _packed(_call(6, "add", [])),  # too few
        struct.pack(">I", 1 << 30),  # a length over max_message_size
        _packed({"MPRPC": "0.1", "HEARTBEAT": "ping"}),
    ]
)
frames = st.lists(st.one_of(plain, plain, extras, special), min_size=1, max_size=12)


async def _replies(
    interceptors: list[Any], data: bytes, cuts: list[int], options: dict[str, Any], held: bool
) -> tuple[list[Any], bool]:
    async with serving(
        State(), interceptors=interceptors, max_collection_len=MAX_ITEMS, **options
    ) as (_server, port):
        other = await Wire.open(port) if held else None  # replies held to the pass's end
        wire = await Wire.open(port)
        try:
            pos = 0
            for cut in [*sorted(set(cuts)), len(data)]:
                if cut > pos:
                    wire.writer.write(data[pos:cut])
                    await wire.writer.drain()
                    pos = cut
            wire.writer.write_eof()
            got: list[Any] = []
            closed = False
            while True:
                try:
                    got.append(await asyncio.wait_for(wire.recv(), 10))
                except (asyncio.IncompleteReadError, ConnectionError):
                    closed = True
                    break
            return got, closed
        finally:
            await wire.close()
            if other is not None:
                await other.close()


def _view(m: Any) -> Any:
    msg = m.get("MESSAGE")
    if isinstance(msg, dict):
        msg = {k: v for k, v in msg.items() if k != "TRACEBACK"}
    return (m.get("CODE"), msg, m.get("HEARTBEAT"))


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    frames,
    st.lists(st.integers(0, 400), max_size=2),
    st.sampled_from([{}, {"max_inflight": 2}]),
    st.sampled_from(["asyncio", "uvloop"]),
    st.booleans(),
)
def test_a_pipelined_mix_is_answered_as_the_general_path_answers_it(
    parts: list[bytes], cuts: list[int], options: dict[str, Any], loop: str, held: bool
) -> None:
    data = b"".join(parts)
    cuts = [c % (len(data) + 1) for c in cuts]
    fast = run_on(loop, lambda: _replies([], data, cuts, options, held))
    general = run_on(loop, lambda: _replies([passthrough], data, cuts, options, held))
    assert [_view(m) for m in fast[0]] == [_view(m) for m in general[0]]
    assert fast[1] == general[1]


async def _while_draining(interceptors: list[Any], held: bool) -> list[Any]:
    """A call holds the server open while close(grace) drains it; then a pipelined read
    of plain calls (and one duplicate of the held call's ID) arrives."""
    state = State()
    async with serving(state, interceptors=interceptors) as (server, port):
        other = await Wire.open(port) if held else None
        wire = await Wire.open(port)
        wire.write([_call(0, "hold", ["k"])])
        await state.started_event("k").wait()
        closing = asyncio.ensure_future(server.close(grace=5))
        await state.wait_until(lambda: server.draining)
        batch = [_call(i, "echo", [i]) for i in range(1, 6)] + [_call(0, "echo", [0])]
        wire.writer.write(b"".join(_packed(m) for m in batch))
        got = [await wire.recv() for _ in range(len(batch))]
        state.event("k").set()
        got.append(await wire.recv())
        await closing
        if other is not None:
            await other.close()
        await wire.close()
        return [_view(m) for m in got]


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
@pytest.mark.parametrize("held", [False, True])
def test_a_pipelined_read_while_draining_is_answered_as_the_general_path_answers_it(
    loop: str, held: bool
) -> None:
    fast = run_on(loop, lambda: _while_draining([], held))
    general = run_on(loop, lambda: _while_draining([passthrough], held))
    assert fast == general
    assert [code for code, _, _ in fast] == [400] + [503] * 5 + [200]
