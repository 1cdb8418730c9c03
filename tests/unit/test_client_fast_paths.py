"""The client core's fused fast paths (`send_call_data`, `receive_result`) agree with the
general ones (`send_call` + `chunks_to_send`, `receive_data`) on any input."""

from __future__ import annotations

import itertools
import struct
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pymprpc.errors import MPRPCError
from pymprpc.protocol import (
    ClientConnection,
    Compression,
    Credentials,
    Result,
    ServerConnection,
    ServerSettings,
    StreamItem,
    messages,
)

KNOWN = "c0ffee00-0000-4000-8000-000000000001"  # a pending call
STARTED = "c0ffee00-0000-4000-8000-000000000002"  # a pending call whose stream started


def logged_in(**options: Any) -> ClientConnection:
    conn = ClientConnection(**options)
    server = ServerConnection(ServerSettings(), Credentials())
    conn.start()
    for chunk in conn.chunks_to_send():
        server.receive_data(chunk)
    for chunk in server.chunks_to_send():
        conn.receive_data(chunk)
    conn._id_prefix = "c0ffee00-0000-4000-8000-"  # the same IDs on every connection
    return conn


def with_calls(**options: Any) -> ClientConnection:
    conn = logged_in(**options)
    conn._pending[KNOWN] = False
    conn._pending[STARTED] = True
    return conn


def framed(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


def shape(events: list[Any]) -> list[Any]:
    """Events as comparable values (errors compare by type and text; plain results as
    `(id, value)` pairs compare as the Result events they stand for)."""
    out: list[Any] = []
    for event in events:
        if type(event) is tuple:
            event = Result(event[0], event[1], False, None)
        error = getattr(event, "error", None)
        if isinstance(error, MPRPCError):
            out.append((type(event), event.id if hasattr(event, "id") else None, repr(error)))
        else:
            out.append(event)
    return out


values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=6,
)
ids = st.sampled_from([KNOWN, STARTED, "unknown-id", 7, None, b"bytes"])
codes = st.sampled_from([200, 300, 201, 202, 206, 400, 404, 500, 505, 7, 200.0, True, "200"])
metadata = st.none() | st.dictionaries(st.text(max_size=4), st.text(max_size=4) | st.integers(0, 9))


@st.composite
def replies(draw: st.DrawFn) -> Any:
    message: dict[str, Any] = {}
    if draw(st.booleans()):
        message["ID"] = draw(ids)
    if draw(st.booleans()):
        message["RESULT"] = draw(values)
    meta = draw(metadata)
    if meta is not None:
        message["METADATA"] = meta
    if draw(st.booleans()):
        message["EXCEPTION"] = draw(st.text(max_size=8))
        message["MESSAGE"] = draw(st.text(max_size=8))
    msg: dict[str, Any] = {
        "MPRPC": draw(st.sampled_from(["0.1", "0.1", "0.2", 1])),
        "CODE": draw(codes),
    }
    if draw(st.integers(0, 4)):
        msg["MESSAGE"] = message
    else:
        msg["MESSAGE"] = draw(values)
    return draw(st.sampled_from([msg, msg, msg, [msg], draw(values)]))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(replies(), st.booleans())
def test_receive_result_agrees_with_receive_data(reply: Any, garbage: bool) -> None:
    payload = msgpack.packb(reply, use_bin_type=True)
    if garbage:
        payload = payload[:-1] + b"\xc1"  # never valid MessagePack
    data = framed(payload)
    general, fast = with_calls(), with_calls()
    expected = general.receive_data(data)
    got = fast.receive_result(data)
    # Compared by repr: a float cut by the garbage byte may read as NaN, never equal to
    # itself (`garbage` on a reply ending in `inf` found that).
    if type(got) is tuple:
        id, value = got
        assert repr(expected) == repr([Result(id, value, False, None)])
    else:
        assert isinstance(got, list)
        assert repr(shape(got)) == repr(shape(expected))
    assert fast._pending == general._pending
    assert fast.state is general.state


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=40), st.integers(0, 6))
def test_receive_result_on_any_bytes_agrees_with_receive_data(data: bytes, cut: int) -> None:
    # Partial frames, several frames per read, lengths that lie.
    general, fast = with_calls(), with_calls()
    for piece in (data[:cut], data[cut:]):
        expected = general.receive_data(piece)
        got = fast.receive_result(piece)
        if type(got) is tuple:
            assert expected == [Result(got[0], got[1], False, None)]
        else:
            assert shape(got) == shape(expected)  # type: ignore[arg-type]
    assert fast._pending == general._pending
    assert fast.state is general.state


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([KNOWN, STARTED, "d" * 36, "é" * 18]),
    values,
    st.none() | st.tuples(st.integers(0, 200), st.integers(0, 255)),
    st.booleans(),
)
def test_a_reply_laid_out_as_our_server_writes_it_agrees_with_receive_data(
    id: str, value: Any, flip: tuple[int, int] | None, truncate: bool
) -> None:
    # The envelope's bytes are compared rather than decoded: any byte changed, anywhere,
    # must give what the general path gives.
    payload = bytearray(msgpack.packb(messages.result(id, value), use_bin_type=True))
    if flip is not None:
        at, byte = flip
        payload[at % len(payload)] = byte
    if truncate:
        payload = payload[:-1]
    data = framed(bytes(payload))
    general, fast = with_calls(), with_calls()
    expected = general.receive_data(data)
    got = fast.receive_result(data)
    if type(got) is tuple:
        assert expected == [Result(got[0], got[1], False, None)]
    else:
        assert shape(got) == shape(expected)  # type: ignore[arg-type]
    assert fast._pending == general._pending
    assert fast.state is general.state


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from([KNOWN, STARTED, "d" * 36]), values, st.booleans()),
        min_size=1,
        max_size=5,
    ),
    st.integers(0, 400),
    st.none() | st.tuples(st.integers(0, 400), st.integers(0, 255)),
)
def test_several_replies_per_read_agree_with_receive_data(
    replies: list[tuple[str, Any, bool]], cut: int, flip: tuple[int, int] | None
) -> None:
    # Many calls in flight on one connection: reads hold several replies, or parts.
    stream = bytearray()
    for id, value, plain in replies:
        reply = messages.result(id, value) if plain else messages.stream_item(id, value)
        stream += framed(msgpack.packb(reply, use_bin_type=True))
    if flip is not None:
        stream[flip[0] % len(stream)] = flip[1]
    general, fast = with_calls(), with_calls()
    for piece in (bytes(stream[:cut]), bytes(stream[cut:])):
        assert shape(fast.receive_replies(piece)) == shape(general.receive_data(piece))
        assert fast._pending == general._pending
        assert fast.state is general.state


OTHER = "c0ffee00-0000-4000-8000-000000000003"  # a second call whose stream started


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([STARTED, STARTED, OTHER, KNOWN, "d" * 36]),
            st.sampled_from(["item", "item", "item", "result", "end", "error"]),
            values | st.binary(min_size=4090, max_size=4100),
        ),
        min_size=1,
        max_size=12,
    ),
    st.lists(st.integers(0, 600), max_size=3),
    st.lists(st.tuples(st.integers(0, 600), st.integers(0, 255)), max_size=2),
)
@example([(STARTED, "item", 1), (STARTED, "end", None), (STARTED, "item", 2)], [], [])
@example([(STARTED, "item", 1), (STARTED, "error", None), (STARTED, "item", 2)], [], [])
@example([(STARTED, "item", 1), (OTHER, "item", 2), (STARTED, "item", 3)], [], [])
@example([(STARTED, "item", 1), (STARTED, "item", 2)], [], [(77, 0x64)])  # in the 2nd ID
def test_interleaved_streams_read_in_one_go_agree_with_receive_data(
    replies: list[tuple[str, str, Any]],
    cuts: list[int],
    flips: list[tuple[int, int]],
) -> None:
    # Two streams' items interleaved with results, ends and errors, in reads cut
    # anywhere, some bytes changed: the fast lane remembers the last stream item's
    # envelope, and must still give exactly what the general path gives (an item after
    # its stream ended is dropped; a changed ID or code is not the remembered one).
    stream = bytearray()
    for id, kind, value in replies:
        if kind == "item":
            reply = messages.stream_item(id, value)
        elif kind == "result":
            reply = messages.result(id, value)
        elif kind == "end":
            reply = messages.response(messages.Code.STREAM_END, id)
        else:
            reply = messages.response(messages.Code.SERVER_ERROR, id, MESSAGE="boom")
        stream += framed(msgpack.packb(reply, use_bin_type=True))
    for at, byte in flips:
        stream[at % len(stream)] = byte
    general, fast = with_calls(), with_calls()
    general._pending[OTHER] = fast._pending[OTHER] = True
    bounds = [0, *sorted(cut % (len(stream) + 1) for cut in cuts), len(stream)]
    for start, stop in itertools.pairwise(bounds):
        piece = bytes(stream[start:stop])
        assert shape(fast.receive_replies(piece)) == shape(general.receive_data(piece))
        assert fast._pending == general._pending
        assert fast.state is general.state


def test_stream_items_laid_out_as_our_server_writes_them_are_read_without_the_envelope() -> None:
    """A read of a started stream's items (W3's shape) decodes only their values: no
    general-path decoding (`_reply_event`) runs; an item of a call not pending is
    dropped, one before its stream started takes the general path (which fails it)."""
    conn = with_calls()
    read = b"".join(
        framed(msgpack.packb(messages.stream_item(id, i), use_bin_type=True))
        for i, id in enumerate([STARTED, STARTED, "d" * 36, STARTED])
    )
    general = []
    real = conn._reply_event

    def counting(codec: Any, payload: Any) -> Any:
        general.append(bytes(payload))
        return real(codec, payload)

    conn._reply_event = counting  # type: ignore[method-assign]
    assert conn.receive_replies(read) == [
        StreamItem(STARTED, 0),
        StreamItem(STARTED, 1),
        StreamItem(STARTED, 3),
    ]
    assert general == []
    early = framed(msgpack.packb(messages.stream_item(KNOWN, 9), use_bin_type=True))
    [failed] = conn.receive_replies(early)
    assert len(general) == 1 and "before its start" in str(getattr(failed, "error", ""))


def test_a_plain_result_comes_back_as_id_and_value() -> None:
    conn = with_calls()
    reply = {"MPRPC": "0.1", "CODE": 200, "MESSAGE": {"ID": KNOWN, "RESULT": [1, "x"]}}
    assert conn.receive_result(framed(msgpack.packb(reply))) == (KNOWN, [1, "x"])
    assert KNOWN not in conn._pending
    # A second reply to it is dropped, as receive_data drops it.
    assert conn.receive_result(framed(msgpack.packb(reply))) == []


args_strategy = st.lists(values | st.just({1, 2}) | st.just(2**70), max_size=3)


@settings(max_examples=300, deadline=None)
@given(
    st.text(max_size=8),
    args_strategy,
    st.dictionaries(st.text(max_size=3), values, max_size=2),
    st.none() | st.floats(min_value=0, max_value=100),
    st.none() | st.dictionaries(st.text(max_size=4), st.text(max_size=4) | st.integers()),
    st.sampled_from(["msgpack", "json", "zlib"]),
)
def test_send_call_data_agrees_with_send_call(
    method: str,
    args: list[Any],
    kwargs: dict[str, Any],
    deadline: float | None,
    metadata: dict[str, Any] | None,
    codec: str,
) -> None:
    options: dict[str, Any] = {
        "json": {"json": True},
        "zlib": {"compression": Compression.ZLIB},
    }.get(codec, {})
    general, fast = logged_in(**options), logged_in(**options)
    try:
        id = general.send_call(method, args, kwargs, deadline=deadline, metadata=metadata)
        expected: Any = (id, general.chunks_to_send())
    except MPRPCError as exc:
        expected = repr(exc)
    try:
        got: Any = fast.send_call_data(method, args, kwargs, deadline=deadline, metadata=metadata)
    except MPRPCError as exc:
        got = repr(exc)
    assert got == expected
    assert fast._pending == general._pending
    assert fast.pending_bytes == general.pending_bytes == 0


def test_a_large_call_is_sent_without_copying_its_payload() -> None:
    conn = logged_in()
    blob = b"x" * (1024 * 1024)
    _, chunks = conn.send_call_data("echo", [blob])
    assert len(chunks) == 2 and len(chunks[0]) == 4  # the prefix, then the payload as packed


def test_a_call_over_the_size_limit_is_refused_and_not_pending() -> None:
    conn = logged_in(max_message_size=1000)
    with pytest.raises(MPRPCError, match="maximum message size"):
        conn.send_call_data("echo", [b"x" * 2000])
    assert conn._pending == {}


def test_ids_are_the_counter_in_hex_across_blocks() -> None:
    """IDs of a block of 256 share their head; across blocks, at the 48-bit wrap and
    after a change of prefix they are still `prefix + 12 hex digits of the counter`,
    whichever path made them."""
    conn = logged_in()
    prefix = conn._id_prefix
    for start in (0, 250, 0xFFFFFFFFFF00 - 3, 2**48 - 2):
        conn._id_counter = start
        for n in range(start + 1, start + 600):
            kind = n % 3
            if kind == 0:
                id = conn.send_call("add", [1, 2])
                conn.chunks_to_send()
            elif kind == 1:
                id, _ = conn.send_call_data("add", [1, n])
            else:
                id, _ = conn.send_call_data("add", [], deadline=1.0)  # the map path
            assert id == f"{prefix}{n & 0xFFFFFFFFFFFF:012x}"
            if n == start + 300:
                prefix = conn._id_prefix = "c0ffee00-0000-4000-8000-"
