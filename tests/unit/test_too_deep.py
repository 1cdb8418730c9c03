"""A message nested one level deeper than msgpack's parser reads (msgpack's packer lets
an empty array or map sit there): with length framing only its call fails and the
connection goes on; with separator framing, before login, or without an ID to answer,
it is the 506 it always was. Driven with bytes only."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from helpers import OLD_WELCOME, pack, unpack
from pymprpc.errors import RemoteProtocolError
from pymprpc.protocol import (
    SEPARATOR,
    Authenticated,
    CallFailed,
    CallRequest,
    ClientConnection,
    ConnectionFailed,
    Credentials,
    Feature,
    LengthFramer,
    Result,
    ServerConnection,
    ServerSettings,
    State,
    StreamItem,
    StreamStart,
)
from pymprpc.protocol.codec import Codec, TooDeep, envelope_id

AUTH = {"MPRPC": "0.1", "AUTH": {"USERNAME": "u", "PASSWORD": "p"}}


def deep(levels: int) -> Any:
    """`levels` nested lists, the innermost empty: what msgpack packs but cannot read
    at 1,025 levels counting the message's own."""
    value: Any = []
    for _ in range(levels - 1):
        value = [value]
    return value


def call(id: str, args: list[Any], **fields: Any) -> dict[str, Any]:
    return {"MPRPC": "0.1", "ID": id, "METHOD": "m", "ARGS": args, **fields}


def length_frames(*messages: dict[str, Any]) -> bytes:
    return b"".join(b"".join(LengthFramer().frame(pack(m))) for m in messages)


def server(length: bool = True) -> ServerConnection:
    conn = ServerConnection(ServerSettings(version="1"), Credentials([("u", "p")]))
    auth = {**AUTH, "FEATURES": ["length-framing"]} if length else AUTH
    [event] = conn.receive_data(pack(auth) + SEPARATOR)
    assert isinstance(event, Authenticated)
    conn.chunks_to_send()
    return conn


# 1,023 levels of arguments: with the message map and ARGS, 1,025 containers.
TOO_DEEP_ARGS = [deep(1023)]


def test_the_packer_sends_what_the_parser_refuses() -> None:
    # The premise: if msgpack ever agrees with itself, this whole path is moot.
    data = msgpack.packb(call("x", TOO_DEEP_ARGS))
    with pytest.raises(msgpack.StackError):
        msgpack.unpackb(data)
    with pytest.raises(TooDeep) as caught:
        Codec().decode(data)
    assert isinstance(caught.value, RemoteProtocolError)
    assert envelope_id(caught.value.payload) == "x"


def test_an_id_after_a_value_only_the_envelope_made_too_deep_is_found() -> None:
    # Read field by field, ARGS is one level less deep than inside the whole message.
    message = {"MPRPC": "0.1", "METHOD": "m", "ARGS": TOO_DEEP_ARGS, "ID": "after"}
    conn = server()
    assert conn.receive_data(length_frames(message)) == []
    [reply] = [unpack(p) for p in LengthFramer().feed(b"".join(conn.chunks_to_send()))]
    assert reply["CODE"] == 400 and reply["MESSAGE"]["ID"] == "after"


def test_a_too_deep_call_gets_400_and_the_next_call_is_read() -> None:
    conn = server()
    data = length_frames(call("deep", TOO_DEEP_ARGS), call("next", [1, 2]))
    events = conn.receive_data(data)
    assert [type(e) for e in events] == [CallRequest]
    assert events[0].id == "next" and events[0].args == [1, 2]
    [reply] = [unpack(p) for p in LengthFramer().feed(b"".join(conn.chunks_to_send()))]
    assert reply["CODE"] == 400 and reply["MESSAGE"]["ID"] == "deep"
    assert "nests deeper than msgpack's parser reads" in reply["MESSAGE"]["MESSAGE"]
    assert conn.state is not State.CLOSED
    # receive_call's fast lane gives the same outcome.
    assert conn.receive_call(length_frames(call("deep2", TOO_DEEP_ARGS))) == []
    [reply] = [unpack(p) for p in LengthFramer().feed(b"".join(conn.chunks_to_send()))]
    assert reply["CODE"] == 400 and reply["MESSAGE"]["ID"] == "deep2"


def _head(n: int, *pairs: Any) -> bytes:
    return bytes([0x80 + n]) + b"".join(pack(x) for x in pairs)


# ARGS holding 2,000 nested lists (only hand-made bytes get there), then the ID.
_FAR_TOO_DEEP = b"\x91" * 2000 + b"\x90"


@pytest.mark.parametrize(
    "payload",
    [
        _head(4, "MPRPC", "0.1", "METHOD", "m", "ARGS") + _FAR_TOO_DEEP + pack("ID") + pack("a"),
        _head(3, "MPRPC", "0.1", "METHOD", "m", "ARGS") + _FAR_TOO_DEEP,  # no ID
        pack(call(7, TOO_DEEP_ARGS)),  # type: ignore[arg-type]  # not a string
        pack(call("", TOO_DEEP_ARGS)),  # empty
    ],
    ids=["id-after", "no-id", "int-id", "empty-id"],
)
def test_without_an_id_read_before_the_deep_value_it_is_506(payload: bytes) -> None:
    conn = server()
    assert conn.receive_data(b"".join(LengthFramer().frame(payload))) == []
    assert conn.state is State.CLOSED
    [reply] = [unpack(p) for p in LengthFramer().feed(b"".join(conn.chunks_to_send()))]
    assert reply["CODE"] == 506


def test_separator_framing_keeps_506_and_close() -> None:
    conn = server(length=False)
    assert conn.receive_data(pack(call("deep", TOO_DEEP_ARGS)) + SEPARATOR) == []
    assert conn.state is State.CLOSED


def test_before_login_it_is_506_and_close() -> None:
    conn = ServerConnection(ServerSettings(version="1"), Credentials([("u", "p")]))
    conn.receive_data(pack({**AUTH, "X": deep(1024)}) + SEPARATOR)
    assert conn.state is State.CLOSED


def client() -> ClientConnection:
    conn = ClientConnection("u", "p", features=frozenset({Feature.LENGTH_FRAMING}))
    conn.start()
    conn.chunks_to_send()
    welcome = {**OLD_WELCOME, "TIMEOUT": 180, "FEATURES": ["length-framing"]}
    conn.receive_data(pack(welcome) + SEPARATOR)
    return conn


def reply(id: str, code: int, result: Any) -> dict[str, Any]:
    return {"MPRPC": "0.1", "CODE": code, "MESSAGE": {"ID": id, "RESULT": result}}


# The reply map and MESSAGE are two levels: 1,023 more reach 1,025.
TOO_DEEP_RESULT = deep(1023)


@pytest.mark.parametrize("receive", ["receive_data", "receive_replies", "receive_result"])
def test_a_too_deep_reply_fails_its_call_and_the_connection_goes_on(receive: str) -> None:
    conn = client()
    a, b = conn.send_call("m"), conn.send_call("m")
    # 300 (deprecated): not the layout the fast lanes read, so every path decodes it whole.
    data = length_frames(reply(a, 300, TOO_DEEP_RESULT), reply(b, 200, 5))
    events = getattr(conn, receive)(data)
    assert events[1] in ((b, 5), Result(b, 5))
    assert type(events[0]) is CallFailed and events[0].id == a
    assert isinstance(events[0].error, RemoteProtocolError)
    assert "cannot be read: it nests deeper" in str(events[0].error)
    assert conn.state is not State.CLOSED
    # A late reply to the failed call is dropped, as for any call no longer pending.
    assert conn.receive_data(length_frames(reply(a, 200, 1))) == []


def test_the_fast_lanes_read_a_plain_result_at_that_depth() -> None:
    # They decode the RESULT on its own, so the envelope's levels do not count against
    # the parser: the value arrives (more than the general path can, never less).
    for receive in ("receive_replies", "receive_result"):
        conn = client()
        a = conn.send_call("m")
        events = getattr(conn, receive)(length_frames(reply(a, 200, TOO_DEEP_RESULT)))
        events = [events] if type(events) is tuple else events
        assert [e[0] for e in events] == [a]
    conn = client()
    a = conn.send_call("m")
    [failed] = conn.receive_data(length_frames(reply(a, 200, TOO_DEEP_RESULT)))
    assert type(failed) is CallFailed


def test_a_too_deep_stream_item_fails_the_stream_and_later_items_are_dropped() -> None:
    conn = client()
    a = conn.send_call("m")
    start = {"MPRPC": "0.1", "CODE": 201, "MESSAGE": {"ID": a}}
    events = conn.receive_data(
        length_frames(start, reply(a, 202, 1), reply(a, 202, TOO_DEEP_RESULT), reply(a, 202, 2))
    )
    assert [type(e) for e in events] == [StreamStart, StreamItem, CallFailed]
    assert conn.state is not State.CLOSED


def test_a_too_deep_reply_without_a_pending_id_is_dropped_or_fails_the_connection() -> None:
    conn = client()
    assert conn.receive_data(length_frames(reply("unknown", 300, TOO_DEEP_RESULT))) == []
    events = conn.receive_data(
        length_frames({"MPRPC": "0.1", "CODE": 200, "MESSAGE": {"RESULT": TOO_DEEP_RESULT}})
    )
    assert [type(e) for e in events] == [ConnectionFailed]
    assert type(events[0].error) is RemoteProtocolError  # the public class, as before
