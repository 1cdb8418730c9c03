"""A large binary result is framed with its value as a chunk of its own (no packing
copies): the bytes on the wire are exactly those of the packed message."""

from __future__ import annotations

import array
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pymprpc.protocol import (
    CallRequest,
    Credentials,
    LengthFramer,
    ServerConnection,
    ServerSettings,
)
from pymprpc.protocol.connection import _BULK_MIN

AUTH = {"MPRPC": "0.1", "AUTH": {"USERNAME": "u", "PASSWORD": "p"}, "FEATURES": ["length-framing"]}
SEP = b"##PRO-END##"


def ready(max_message_size: int = 64 * 1024 * 1024) -> ServerConnection:
    settings = ServerSettings(max_message_size=max_message_size)
    conn = ServerConnection(settings, Credentials([("u", "p")]))
    conn.receive_data(msgpack.packb(AUTH) + SEP)
    conn.chunks_to_send()
    return conn


def call(conn: ServerConnection, id: str) -> None:
    message = {"MPRPC": "0.1", "ID": id, "METHOD": "m"}
    events = conn.receive_data(b"".join(LengthFramer().frame(msgpack.packb(message))))
    assert [e.id for e in events if isinstance(e, CallRequest)] == [id]


def expected(id: str, value: Any, code: int = 200) -> bytes:
    message = {"MPRPC": "0.1", "CODE": code, "MESSAGE": {"ID": id, "RESULT": value}}
    return b"".join(LengthFramer().frame(msgpack.packb(message, use_bin_type=True)))


@settings(max_examples=40, deadline=None)
@given(
    size=st.one_of(
        st.integers(min_value=_BULK_MIN - 3, max_value=_BULK_MIN + 3),
        st.integers(min_value=0, max_value=300_000),
    ),
    kind=st.sampled_from(["bytes", "bytearray", "memoryview"]),
    deprecated=st.booleans(),
    id=st.text(min_size=1, max_size=40),
)
def test_wire_bytes_are_those_of_the_packed_message(
    size: int, kind: str, deprecated: bool, id: str
) -> None:
    data = bytes([size % 251]) * size
    value: Any = {"bytes": data, "bytearray": bytearray(data), "memoryview": memoryview(data)}[kind]
    conn = ready()
    call(conn, id)
    conn.send_result(id, value, deprecated=deprecated)
    chunks = conn.chunks_to_send()
    assert b"".join(chunks) == expected(id, data, 300 if deprecated else 200)
    if size >= _BULK_MIN and kind == "bytes":
        assert any(chunk is data for chunk in chunks)  # the value itself, not a copy
    else:
        assert not any(chunk is data for chunk in chunks)


def test_a_mutable_value_is_sent_as_it_was_when_the_result_was_queued() -> None:
    value = bytearray(b"a") * (_BULK_MIN * 2)
    conn = ready()
    call(conn, "x")
    conn.send_result("x", value)
    value[:] = b"b" * len(value)
    assert b"".join(conn.chunks_to_send()) == expected("x", b"a" * (_BULK_MIN * 2))


def test_a_memoryview_of_wide_items_is_sent_as_its_bytes() -> None:
    numbers = array.array("i", range(_BULK_MIN))
    conn = ready()
    call(conn, "x")
    conn.send_result("x", memoryview(numbers))
    assert b"".join(conn.chunks_to_send()) == expected("x", numbers.tobytes())


def test_a_non_contiguous_memoryview_is_left_to_the_packer() -> None:
    conn = ready()
    assert conn._bulk_result("x", memoryview(b"ab" * _BULK_MIN)[::2], False) is None


@pytest.mark.parametrize("over", [0, 1])
def test_the_size_limit_counts_the_whole_message(over: int) -> None:
    head = len(expected("x", b"\0" * _BULK_MIN)) - 4 - _BULK_MIN
    limit = 1 << 20
    conn = ready(max_message_size=limit)
    call(conn, "x")
    conn.send_result("x", b"\0" * (limit - head + over))
    [payload] = LengthFramer().feed(b"".join(conn.chunks_to_send()))
    reply = msgpack.unpackb(payload)
    assert reply["CODE"] == (405 if over else 200)
    if over:
        assert "exceeds the maximum message size" in reply["MESSAGE"]["MESSAGE"]


def test_metadata_and_separator_framing_take_the_packed_path() -> None:
    conn = ServerConnection(ServerSettings(), Credentials([("u", "p")]))
    conn.receive_data(msgpack.packb({**AUTH, "FEATURES": []}) + SEP)
    conn.chunks_to_send()
    conn.receive_data(msgpack.packb({"MPRPC": "0.1", "ID": "x", "METHOD": "m"}) + SEP)
    data = b"z" * (_BULK_MIN * 2)
    conn.send_result("x", data)
    out = b"".join(conn.chunks_to_send())
    assert (
        out
        == msgpack.packb({"MPRPC": "0.1", "CODE": 200, "MESSAGE": {"ID": "x", "RESULT": data}})
        + SEP
    )


@pytest.mark.parametrize("size", [8, _BULK_MIN * 2])
def test_a_non_contiguous_memoryview_result_is_answered_405(size: int) -> None:
    """send_result never raises: msgpack's BufferError for a strided view becomes a 405
    naming the problem, small or large, nested or not."""
    conn = ready()
    for id, value in (("x", memoryview(b"ab" * size)[::2]), ("y", [memoryview(b"ab" * size)[::2]])):
        call(conn, id)
        conn.send_result(id, value)
        [payload] = LengthFramer().feed(b"".join(conn.chunks_to_send()))
        reply = msgpack.unpackb(payload)
        assert reply["CODE"] == 405
        assert "contiguous" in reply["MESSAGE"]["MESSAGE"]
