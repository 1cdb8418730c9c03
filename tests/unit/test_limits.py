"""Memory a hostile peer can pin through the sans-IO core, measured in bytes (tracemalloc).

Bounds are generous (several times what the fixed code needs); each test fails by a wide
margin without its fix.
"""

from __future__ import annotations

import bz2
import gc
import math
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import msgpack
import pytest

from helpers import OLD_WELCOME, pack, unpack
from pymprpc.errors import (
    LocalProtocolError,
    ProtocolException,
    RemoteProtocolError,
)
from pymprpc.protocol import (
    SEPARATOR,
    CallRequest,
    ClientConnection,
    Codec,
    Compression,
    ConnectionFailed,
    Credentials,
    LengthFramer,
    ServerConnection,
    ServerSettings,
)

MiB = 1024 * 1024
AUTH = {"MPRPC": "0.1", "AUTH": {"USERNAME": "u", "PASSWORD": "p"}}


def frame(msg: Any) -> bytes:
    return pack(msg) + SEPARATOR


def replies(conn: ServerConnection | ClientConnection, codec: Codec | None = None) -> list[Any]:
    data = b"".join(conn.chunks_to_send())
    decode = codec.decode if codec is not None else unpack
    return [decode(f) for f in data.split(SEPARATOR)[:-1]]


def server(**settings: Any) -> ServerConnection:
    conn = ServerConnection(ServerSettings(**settings), Credentials([("u", "p")]))
    return conn


def authenticated(**settings: Any) -> ServerConnection:
    conn = server(**settings)
    conn.receive_data(frame(AUTH))
    assert replies(conn)[0]["CODE"] == 100
    return conn


@contextmanager
def traced() -> Iterator[Callable[[], tuple[int, int]]]:
    """Yield a function giving (current, peak) traced bytes above the starting point,
    with the cycle collector off so only reference counting frees memory."""
    gc.collect()
    gc.disable()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    try:
        yield lambda: tuple(x - base for x in tracemalloc.get_traced_memory())  # type: ignore[return-value]
    finally:
        tracemalloc.stop()
        gc.enable()


# -- stored errors do not pin what failed -------------------------------------------


def test_a_failed_message_is_freed_without_a_garbage_collection() -> None:
    conn = authenticated()
    bad = frame(list(range(200_000)))  # a list, not a map: 506 after decoding
    with traced() as usage:
        conn.receive_data(bad)
        current, _ = usage()
    assert conn.closed and isinstance(conn.error, RemoteProtocolError)
    assert replies(conn) == [{"MPRPC": "0.1", "CODE": 506}]
    # The decoded list (~8 MB with its ints) must not survive in the error's traceback.
    assert current < 1 * MiB, current


def test_a_client_does_not_keep_a_bad_reply_alive() -> None:
    conn = ClientConnection("u", "p", features=frozenset())
    conn.start()
    conn.receive_data(frame(OLD_WELCOME))
    with traced() as usage:
        [event] = conn.receive_data(frame({"MPRPC": "0.1", "CODE": "x" * 4 * MiB}))
        del event
        current, _ = usage()
    assert isinstance(conn.error, RemoteProtocolError)
    assert current < 1 * MiB, current


# -- decoding is bounded before it allocates ---------------------------------------


def test_collections_over_the_length_limit_are_refused_from_their_header() -> None:
    codec = Codec(max_items=1000)
    assert codec.decode(pack([0] * 1000)) == [0] * 1000
    for value in ([0] * 1001, {i: 0 for i in range(1001)}, [[[0] * 1001]]):
        with pytest.raises(RemoteProtocolError, match="max_collection_len=1000") as info:
            codec.decode(pack(value))
        assert info.value.reply_code == 505


def test_deep_nesting_is_refused() -> None:
    with pytest.raises(RemoteProtocolError):
        Codec().decode(b"\x91" * 100_000 + b"\xc0")


def bomb(elements: int) -> bytes:
    """bz2 of an array of `elements` empty maps: a few hundred bytes that decode into
    ~64 bytes of Python objects per element."""
    header = b"\xdd" + elements.to_bytes(4, "big")
    return bz2.compress(header + b"\x80" * elements)


def test_compression_bomb_before_auth_stops_at_the_small_pre_auth_limit() -> None:
    conn = server()
    payload = bomb(2_000_000)
    assert len(payload) < 200
    with traced() as usage:
        conn.receive_data(payload + SEPARATOR)
        _, peak = usage()
    assert replies(conn) == [{"MPRPC": "0.1", "CODE": 505}]
    assert "65536 bytes" in str(conn.error)
    assert peak < 4 * MiB, peak  # 64 KiB inflated at most, never the 2M maps (~130 MB)


def test_compression_bomb_after_auth_is_refused_by_the_length_limit() -> None:
    conn = server()
    conn.receive_data(bz2.compress(pack(AUTH)) + SEPARATOR)  # a bz2 connection
    codec = Codec(compression=Compression.BZ2)
    assert replies(conn, codec)[0]["CODE"] == 100
    with traced() as usage:
        conn.receive_data(bomb(2_000_000) + SEPARATOR)
        _, peak = usage()
    assert replies(conn, codec) == [{"MPRPC": "0.1", "CODE": 505}]
    assert "max_collection_len" in str(conn.error)
    assert peak < 16 * MiB, peak  # the 2 MB inflated and the decompressor, not 2M maps


def test_pre_auth_frames_are_limited_to_max_auth_message_size() -> None:
    conn = server(max_auth_message_size=1000)
    conn.receive_data(b"\x81" + b"x" * 2000)  # no separator yet
    assert conn.closed and replies(conn) == [{"MPRPC": "0.1", "CODE": 505}]
    assert "1000 bytes" in str(conn.error)


def test_after_auth_the_full_message_size_applies() -> None:
    conn = authenticated(max_auth_message_size=1000)
    big = "x" * 5000
    [call] = conn.receive_data(frame({"MPRPC": "0.1", "ID": "a", "METHOD": "m", "ARGS": [big]}))
    assert isinstance(call, CallRequest) and call.args == [big]


# -- buffering and packing ---------------------------------------------------------


def test_length_framing_one_byte_per_read_costs_about_the_frame_size() -> None:
    size = 512 * 1024
    wire = size.to_bytes(4, "big") + b"\xa0" * size
    framer = LengthFramer()
    with traced() as usage:
        for i in range(len(wire) - 1):
            assert framer.feed(wire[i : i + 1]) == []
        current, peak = usage()
    # Before the fix: a list of one-byte chunks, ~50 bytes per byte received (25 MB).
    assert peak < 3 * size, peak
    assert current < 2 * size, current
    [payload] = framer.feed(wire[-1:])
    assert len(payload) == size


def test_packing_a_large_message_does_not_keep_its_buffer() -> None:
    codec = Codec()
    message = {"X": b"x" * (32 * MiB)}
    with traced() as usage:
        data = codec.encode(message)
        assert len(data) > 32 * MiB
        del data
        current, _ = usage()
    assert current < 4 * MiB, current  # the packer's buffer grew to 64 MiB and stayed


# -- local and remote protocol errors ----------------------------------------------


def test_garbage_from_a_server_is_a_remote_error_not_a_reported_505() -> None:
    conn = ClientConnection("u", "p", features=frozenset())
    conn.start()
    conn.receive_data(frame(OLD_WELCOME))
    [event] = conn.receive_data(b"\xc1" + SEPARATOR)
    assert isinstance(event, ConnectionFailed)
    assert isinstance(event.error, RemoteProtocolError)
    # Detected, not reported: a ProtocolException (caught like one) without a wire code.
    assert isinstance(event.error, ProtocolException) and event.error.code is None
    # A 505 the server reports is still the server's ProtocolException.
    conn = ClientConnection("u", "p", features=frozenset())
    conn.start()
    [event] = conn.receive_data(frame({"MPRPC": "0.1", "CODE": 505}))
    assert isinstance(event, ConnectionFailed) and type(event.error) is ProtocolException


def test_a_malformed_welcome_is_a_remote_error_naming_the_field() -> None:
    conn = ClientConnection("u", "p")
    conn.start()
    [event] = conn.receive_data(frame({**OLD_WELCOME, "FEATURES": [["x"]]}))
    assert isinstance(event, ConnectionFailed)
    assert isinstance(event.error, RemoteProtocolError)
    assert "FEATURES must be an array of strings" in str(event.error)


# -- per-call problems stay per call -----------------------------------------------


@pytest.mark.parametrize("id", [7, 0, ""])
def test_cancel_with_a_bad_id_is_400_like_a_call_with_one(id: Any) -> None:
    conn = authenticated()
    conn.receive_data(frame({"MPRPC": "0.1", "ID": id, "CANCEL": True}))
    conn.receive_data(frame({"MPRPC": "0.1", "ID": id, "METHOD": "m"}))
    cancel, call = replies(conn)
    assert cancel["CODE"] == call["CODE"] == 400
    assert cancel["MESSAGE"]["ID"] == call["MESSAGE"]["ID"] == id
    assert not conn.closed


def test_non_string_map_keys_are_carried() -> None:
    conn = authenticated()
    value = {1: "a", None: [1], 2.5: {b"k": True}}
    [call] = conn.receive_data(frame({"MPRPC": "0.1", "ID": "a", "METHOD": "m", "ARGS": [value]}))
    assert isinstance(call, CallRequest) and call.args == [value]
    conn.send_result("a", {1: "one"})
    data = b"".join(conn.chunks_to_send())[: -len(SEPARATOR)]
    reply = msgpack.unpackb(data, strict_map_key=False)
    assert reply["MESSAGE"]["RESULT"] == {1: "one"}


def test_array_keys_arrive_as_tuples() -> None:
    raw = b"\x81\x92\x01\x02\xa1a"  # {[1, 2]: "a"}
    assert Codec().decode(raw) == {(1, 2): "a"}


def test_kwargs_with_non_string_keys_fail_only_that_call() -> None:
    conn = authenticated()
    conn.receive_data(frame({"MPRPC": "0.1", "ID": "a", "METHOD": "m", "KWARGS": {1: 2}}))
    [reply] = replies(conn)
    assert reply["CODE"] == 400 and "string keys" in reply["MESSAGE"]["MESSAGE"]
    assert not conn.closed


class Opaque:
    pass


@pytest.mark.parametrize(
    ("value", "named"),
    [({1, 2}, "is a set"), ([1, Opaque()], "[1] is a test_limits.Opaque"), (2**70, "64-bit")],
)
def test_unencodable_result_gets_405_naming_the_type(value: Any, named: str) -> None:
    conn = authenticated()
    conn.receive_data(frame({"MPRPC": "0.1", "ID": "a", "METHOD": "m"}))
    conn.send_result("a", value)
    [reply] = replies(conn)
    assert reply["CODE"] == 405
    text = reply["MESSAGE"]["MESSAGE"]
    assert "cannot encode" in text and named in text and "too large" not in text


def test_json_refuses_nan_and_infinity() -> None:
    codec = Codec(json=True)
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(LocalProtocolError, match="strict JSON"):
            codec.encode({"X": [bad]})


def test_json_login_with_a_lone_surrogate_is_a_login_failure() -> None:
    conn = server()
    events = conn.receive_data(
        b'{"MPRPC":"0.1","AUTH":{"USERNAME":"\\ud800","PASSWORD":"p"}}' + SEPARATOR
    )
    assert events == []
    assert conn.closed
    data = b"".join(conn.chunks_to_send())
    assert data == b'{"MPRPC":"0.1","CODE":501}' + SEPARATOR


def test_request_error_messages_do_not_repr_huge_values() -> None:
    conn = authenticated()
    with traced() as usage:
        conn.receive_data(frame({"MPRPC": "0.1", "ID": ["x" * 1000] * 1000, "METHOD": "m"}))
        _, peak = usage()
    assert conn.closed  # an ID that is neither string nor integer: nothing to answer
    assert peak < 8 * MiB, peak


@pytest.mark.parametrize("json", [False, True])
def test_self_containing_or_too_deep_values_are_refused_not_a_recursion_error(json: bool) -> None:
    loop: list[Any] = []
    loop.append(loop)
    deep: list[Any] = []
    inner = deep
    for _ in range(100_000):
        inner.append([])
        inner = inner[0]
    for value in (loop, deep):
        with pytest.raises(LocalProtocolError, match="nests deeper than"):
            Codec(json=json).encode({"X": value})
