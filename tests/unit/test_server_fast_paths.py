"""The server core's fused fast paths agree with the general ones on any input: a flat
result's reply from pre-packed parts (`ServerConnection.send_result`) is the bytes, the
chunks and the errors that packing `messages.result` and framing it give."""

from __future__ import annotations

import dataclasses
from typing import Any
from unittest import mock

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pymprpc.protocol import CallRequest, Credentials, ServerConnection, ServerSettings, connection

SURROGATE = "\ud800"  # packs in no msgpack string: the general path's 405


def ready(max_message_size: int, features: list[str] | None) -> ServerConnection:
    conn = ServerConnection(
        ServerSettings(max_message_size=max_message_size), Credentials([("u", "p")])
    )
    auth: dict[str, Any] = {"MPRPC": "0.1", "AUTH": {"USERNAME": "u", "PASSWORD": "p"}}
    if features is not None:
        auth["FEATURES"] = features
    conn.receive_data(msgpack.packb(auth) + b"##PRO-END##")
    conn.chunks_to_send()
    return conn


def in_flight(conn: ServerConnection, id: str) -> None:
    """Make `id` a call in flight, as receiving it would."""
    conn._inflight[id] = False


flat = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),  # beyond 64 bits too: 405
    st.floats(allow_nan=True),
    st.text(),
    st.text().map(lambda t: t + SURROGATE),
    # Around the one-chunk limit (64 KiB: 2 bytes a character) and the size limits.
    st.sampled_from([90, 32_700, 32_740, 32_760, 32_800, 36_000]).map(lambda n: "é" * n),
)
others = st.one_of(
    st.binary(max_size=4),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
)
# Call IDs: any text, or long ones (a reply's size crosses the limits with its ID's).
ids = st.one_of(st.text(min_size=1), st.integers(0, 300).map(lambda n: "i" * (n + 1)))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            ids,
            st.one_of(flat, others),
            st.booleans(),
            st.one_of(st.none(), st.just({"k": "v"}), st.just({"k": 1})),
        ),
        min_size=1,
        max_size=4,
    ),
    st.sampled_from([200, 70_000, 1 << 20]),
    st.sampled_from([None, ["length-framing"], ["length-framing", "metadata"]]),
)
def test_a_flat_result_is_sent_as_the_general_path_sends_it(
    replies: list[tuple[str, Any, bool, dict[str, Any] | None]],
    max_message_size: int,
    features: list[str] | None,
) -> None:
    agree(replies, max_message_size, features)


def test_flat_results_around_the_chunk_and_size_limits_are_sent_as_the_general_path_does() -> None:
    """Strings whose reply is just under, at and over 64 KiB (one chunk, or a prefix and
    a payload) and over the message size limit (405)."""
    for limit in (65_000, 65_536, 1 << 20):
        for n in range(32_740, 32_800, 3):
            for id in ("a", "b" * 40):
                agree([(id, "é" * n, False, None)], limit, ["length-framing"])
                agree([(id, "é" * n + "x", False, None)], limit, ["length-framing"])


def agree(
    replies: list[tuple[str, Any, bool, dict[str, Any] | None]],
    max_message_size: int,
    features: list[str] | None,
) -> None:
    """Send `replies` on a connection with the fast path and on one without it (no type
    is flat there), and compare everything that comes out."""
    fast, general = ready(max_message_size, features), ready(max_message_size, features)
    for id, value, deprecated, metadata in replies:
        for conn in (fast, general):
            in_flight(conn, id)
        fast.send_result(id, value, deprecated=deprecated, metadata=metadata)
        with mock.patch.object(connection, "_FLAT_TYPES", frozenset()):
            general.send_result(id, value, deprecated=deprecated, metadata=metadata)
        compare(fast, general)


def agree_items(items: list[tuple[str, Any]], max_message_size: int, features: Any) -> None:
    """Send `items` as stream items (202) on a connection with the fast path and on one
    without it, and compare everything that comes out, the sent flag too."""
    fast, general = ready(max_message_size, features), ready(max_message_size, features)
    for id, value in items:
        for conn in (fast, general):
            conn._inflight[id] = True  # a stream that started
        sent = fast.send_stream_item(id, value, "count")
        with mock.patch.object(connection, "_FLAT_TYPES", frozenset()):
            assert sent == general.send_stream_item(id, value, "count")
        compare(fast, general)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            ids,
            st.one_of(flat, others),
        ),
        min_size=1,
        max_size=4,
    ),
    st.sampled_from([200, 70_000, 1 << 20]),
    st.sampled_from([None, ["length-framing"], ["length-framing", "metadata"]]),
)
def test_a_flat_stream_item_is_sent_as_the_general_path_sends_it(
    items: list[tuple[str, Any]], max_message_size: int, features: list[str] | None
) -> None:
    agree_items(items, max_message_size, features)


def test_flat_stream_items_around_the_chunk_and_size_limits_are_sent_as_the_general_path_does() -> (
    None
):
    for limit in (65_000, 65_536, 1 << 20):
        for n in range(32_740, 32_800, 3):
            for id in ("a", "b" * 40):
                agree_items([(id, "é" * n), (id, "é" * n + "x")], limit, ["length-framing"])


def compare(fast: ServerConnection, general: ServerConnection) -> None:
    """Everything the two connections queued and hold is the same."""
    assert fast.pending_bytes == general.pending_bytes
    assert fast.chunks_to_send() == general.chunks_to_send()
    assert fast._inflight == general._inflight
    assert fast.closed == general.closed


def test_a_flat_result_is_one_chunk_packed_once() -> None:
    """The reply of an `add` packs only its MESSAGE map (one Packer.pack, no
    messages.result map): counted by wrapping the thread's packer."""
    conn = ready(1 << 20, ["length-framing"])
    conn.send_result("warm", 0)  # not in flight: nothing sent, the packer made
    in_flight(conn, "a")
    packed: list[Any] = []
    real = msgpack.Packer(use_bin_type=True)

    class Counting:
        def pack(self, obj: Any) -> bytes:
            packed.append(obj)
            return real.pack(obj)

    with mock.patch.object(connection._packers, "packer", Counting()):
        conn.send_result("a", 3)
    assert packed == [{"ID": "a", "RESULT": 3}]
    [chunk] = conn.chunks_to_send()
    assert msgpack.unpackb(chunk[4:]) == {
        "MPRPC": "0.1",
        "CODE": 200,
        "MESSAGE": {"ID": "a", "RESULT": 3},
    }


# -- receive_call: a call laid out as our client writes it ----------------------------

ID36 = "c0ffee00-0000-4000-8000-000000000001"


def laid_out(id: str, method: Any, args: Any) -> bytes:
    """A call framed as pymprpc's client frames it (`send_call_data`); `args` an int
    depth: arrays nested that deep (msgpack's packer refuses to nest past 511)."""
    head = msgpack.packb({"MPRPC": "0.1", "ID": id, "METHOD": method, "ARGS": None})[:-1]
    packed = b"\x91" * args + b"\x01" if type(args) is int else msgpack.packb(args)
    return (len(head) + len(packed)).to_bytes(4, "big") + head + packed


def tokens(value: Any) -> list[Any]:
    """`value` as a flat list (nested arrays a thousand deep compare without recursing)."""
    out: list[Any] = []
    stack = [value]
    while stack:
        item = stack.pop()
        if type(item) is list:
            out.append(("array", len(item)))
            stack.extend(reversed(item))
        elif type(item) is dict:
            out.append(("map", len(item)))
            for key, val in reversed(list(item.items())):
                stack += (val, key)
        else:
            out.append((type(item), item))
    return out


def shape(events: list[Any]) -> list[Any]:
    return [
        (dataclasses.replace(e, args=[]), tokens(e.args)) if type(e) is CallRequest else e
        for e in events
    ]


arguments = st.one_of(
    st.lists(
        st.one_of(st.integers(-(2**63), 2**64 - 1), st.text(max_size=3), st.binary(max_size=3)),
        max_size=5,
    ),
    st.integers(1018, 1026),  # arrays nested around msgpack's unpacking limit
    st.dictionaries(st.text(max_size=2), st.integers(0, 9), max_size=2),  # not an array
    st.text(max_size=2),
)
call_ids = st.one_of(
    st.just(ID36),
    st.text(alphabet="0123456789abcdef-", min_size=36, max_size=36),
    st.text(min_size=35, max_size=37),
)
names = st.one_of(st.sampled_from(["add", "x" * 31, "x" * 32, "x" * 56, ""]), st.text(max_size=60))


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(call_ids, names, arguments, st.lists(st.integers(0, 200), max_size=2)),
        min_size=1,
        max_size=4,
    ),
    st.integers(0, 300),
    st.sampled_from([1 << 20, 60, 100]),
    st.sampled_from([1000, 3, 4, 60, 75, 90]),  # around the frames' lengths too
)
def test_a_call_laid_out_as_our_client_writes_it_agrees_with_receive_data(
    calls: list[tuple[str, Any, Any, list[int]]],
    cut: int,
    max_message_size: int,
    max_items: int,
) -> None:
    """The same bytes (laid out as our client writes a call, then with bytes flipped, cut
    short or carried over, one call per read or all in one) to `receive_call` and to
    `receive_data`: the same events, replies, state and buffers."""
    agree_on_calls(calls, cut, max_message_size, max_items)


def test_collections_over_the_limit_in_a_laid_out_call_are_refused_as_the_general_path_does() -> (
    None
):
    for max_items in (4, 5, 6, 60):
        for args in ([1, 2, 3, 4, 5], [[1, 2, 3, 4, 5, 6]], [{str(i): i for i in range(7)}]):
            agree_on_calls([(ID36, "add", args, [])], 1, 1 << 20, max_items)


def test_names_in_other_string_formats_are_read_as_the_general_path_reads_them() -> None:
    """A name of 32 bytes or more is a str8 (0xd9, its length, its bytes), whose header
    read as a fixstr's would say 57 bytes: one of 56 bytes lines up with ARGS' key."""
    for n in (31, 32, 55, 56, 57, 100):
        agree_on_calls([(ID36, "x" * n, [1], [])], 1, 1 << 20, 1000)


def agree_on_calls(
    calls: list[tuple[str, Any, Any, list[int]]], cut: int, max_message_size: int, max_items: int
) -> None:
    settings = ServerSettings(max_message_size=max_message_size, max_collection_len=max_items)
    fast, general = (ready_with(settings) for _ in range(2))
    frames: list[bytes] = []
    for id, method, args, flips in calls:
        data = bytearray(laid_out(id, method, args))
        for flip in flips:
            data[flip % len(data)] ^= 1 + flip % 255
        frames.append(bytes(data))
    if cut % 2:  # pipelined: every call in one read (cut short, or not, below)
        frames = [b"".join(frames)]
    reads: list[bytes] = []
    for data in frames:
        reads.append(data)
        if cut % 3 == 0:  # cut short: the rest comes in the next read
            at = cut % len(data)
            reads[-1:] = [data[:at], data[at:]]
    for read in reads:
        received = fast.receive_call(read)
        events = (
            [CallRequest(*received)]
            if type(received) is tuple
            else [CallRequest(*e) if type(e) is tuple else e for e in received]
        )
        assert shape(events) == shape(general.receive_data(read))
        assert fast.chunks_to_send() == general.chunks_to_send()
        assert fast.closed == general.closed
        assert repr(fast.error) == repr(general.error)
        assert fast.buffered_bytes == general.buffered_bytes
        assert fast._inflight == general._inflight


def ready_with(settings: ServerSettings) -> ServerConnection:
    conn = ServerConnection(settings, Credentials([("u", "p")]))
    auth = {"MPRPC": "0.1", "AUTH": {"USERNAME": "u", "PASSWORD": "p"}}
    conn.receive_data(msgpack.packb({**auth, "FEATURES": ["length-framing"]}) + b"##PRO-END##")
    conn.chunks_to_send()
    return conn


def test_a_call_laid_out_as_our_client_writes_it_is_read_without_the_envelope() -> None:
    """Only the arguments are unpacked (one array, not the envelope map), by msgpack
    without the codec's keywords (the frame is shorter than any limit), and the call
    comes back as receive_data's CallRequest would be: counted by wrapping both."""
    conn = ready_with(ServerSettings())
    unpacked: list[Any] = []
    real_unpackb, codec_unpack = msgpack.unpackb, conn._plain_unpack
    assert codec_unpack is not None

    def counting(payload: Any, **options: Any) -> Any:
        unpacked.append((bytes(payload), options))
        return real_unpackb(payload, **options)

    conn._plain_unpack = lambda payload: counting(payload, codec=True)
    with mock.patch.object(connection, "_unpackb", counting):
        assert conn.receive_call(laid_out(ID36, "add", [1, 2])) == (ID36, "add", [1, 2], {})
    assert unpacked == [(b"\x91\x92\x01\x02", {"strict_map_key": False})]
    assert conn._inflight == {ID36: False}
    # The same ID again: the general path's 400 for a duplicate.
    conn._plain_unpack = codec_unpack
    assert conn.receive_call(laid_out(ID36, "add", [1, 2])) == []
    assert b"duplicate in-flight ID" in b"".join(conn.chunks_to_send())


def test_pipelined_calls_laid_out_as_our_client_writes_them_are_read_without_the_envelope() -> None:
    """A read of several such calls (W2's shape) comes back as their tuples, in order,
    each registered in flight; one duplicate ID among them, or a partial frame at the
    end, and the whole read takes the general path (which answers the duplicate)."""
    conn = ready_with(ServerSettings())
    ids = [ID36[:-1] + str(i) for i in range(3)]
    read = b"".join(laid_out(id, "add", [i, 1]) for i, id in enumerate(ids))
    assert conn.receive_call(read) == [(id, "add", [i, 1], {}) for i, id in enumerate(ids)]
    assert list(conn._inflight) == ids
    again = laid_out(ids[0], "add", [0, 0])
    fresh = laid_out(ID36[:-1] + "f", "add", [5, 5])
    [event] = conn.receive_call(fresh + again)
    assert type(event) is CallRequest and event.id == ID36[:-1] + "f"
    assert b"duplicate in-flight ID" in b"".join(conn.chunks_to_send())
    other = ID36[:-1] + "x"
    events = conn.receive_call(laid_out(other, "add", [1]) + fresh[:9])
    assert [type(e) for e in events] == [CallRequest]
    assert conn.buffered_bytes == 9
