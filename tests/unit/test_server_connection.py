"""The server state machine, driven with bytes only."""

from __future__ import annotations

import json
from typing import Any

import pytest

from helpers import pack, unpack
from pymprpc.errors import RPCRuntimeError
from pymprpc.protocol import (
    SEPARATOR,
    Authenticated,
    CallRequest,
    CancelRequest,
    Credentials,
    LengthFramer,
    ServerConnection,
    ServerSettings,
    State,
)

AUTH = {"MPRPC": "0.1", "AUTH": {"USERNAME": "u", "PASSWORD": "p"}}


def frame(msg: Any) -> bytes:
    return pack(msg) + SEPARATOR


def replies(conn: ServerConnection) -> list[Any]:
    data = b"".join(conn.chunks_to_send())
    return [unpack(f) for f in data.split(SEPARATOR)[:-1]]


def ready(features: list[str] | None = None) -> ServerConnection:
    conn = ServerConnection(ServerSettings(version="1"), Credentials([("u", "p")]))
    auth = dict(AUTH)
    if features is not None:
        auth["FEATURES"] = features
    events = conn.receive_data(frame(auth))
    assert isinstance(events[0], Authenticated)
    b"".join(conn.chunks_to_send())
    return conn


def test_welcome_without_features_for_old_clients() -> None:
    conn = ServerConnection(ServerSettings(version="1", description="d"), Credentials([("u", "p")]))
    conn.receive_data(frame(AUTH))
    assert replies(conn) == [
        {
            "MPRPC": "0.1",
            "CODE": 100,
            "VERSION": "1",
            "DESC": "d",
            "DEBUG": False,
            "COMPRESER": None,
            "TIMEOUT": 180.0,
        }
    ]
    assert conn.state is State.READY


def test_features_are_negotiated_when_announced() -> None:
    conn = ServerConnection(ServerSettings(), Credentials())
    conn.receive_data(
        frame(
            {
                **AUTH,
                "AUTH": {"USERNAME": None, "PASSWORD": ""},
                "FEATURES": ["cancel", "warp-drive"],
            }
        )
    )
    assert replies(conn)[0]["FEATURES"] == ["cancel"]


@pytest.mark.parametrize(
    ("configured", "user", "password", "ok"),
    [
        ([("u", "p")], "u", "p", True),
        ([("u", "p")], "u", "x", False),
        ([("u", "p")], None, None, False),
        ([], None, None, True),
        ([], "", "", True),
        ([], "u", "p", False),
    ],
)
def test_auth_rules(configured: list[tuple[str, str]], user: Any, password: Any, ok: bool) -> None:
    conn = ServerConnection(ServerSettings(), Credentials(configured))
    conn.receive_data(frame({"MPRPC": "0.1", "AUTH": {"USERNAME": user, "PASSWORD": password}}))
    code = replies(conn)[0]["CODE"]
    assert code == (100 if ok else 501)
    assert conn.closed is not ok


def test_call_before_auth_is_refused_and_closes() -> None:
    conn = ServerConnection(ServerSettings(), Credentials())
    events = conn.receive_data(frame({"MPRPC": "0.1", "ID": "1", "METHOD": "m"}))
    assert events == []
    assert replies(conn) == [{"MPRPC": "0.1", "CODE": 501}]
    assert conn.closed


def test_ping_pong() -> None:
    conn = ready()
    assert conn.receive_data(frame({"MPRPC": "0.1", "HEARTBEAT": "ping"})) == []
    assert replies(conn) == [{"MPRPC": "0.1", "CODE": 101, "HEARTBEAT": "pong"}]


def test_call_events_and_defaults() -> None:
    conn = ready()
    events = conn.receive_data(
        frame({"MPRPC": "0.1", "ID": "a", "METHOD": "add", "ARGS": [1, 2]})
        + frame({"MPRPC": "0.1", "ID": "b", "METHOD": "f", "KWARGS": {"x": 1}, "RETURN": False})
    )
    assert events == [
        CallRequest("a", "add", [1, 2], {}, True, None),
        CallRequest("b", "f", [], {"x": 1}, False, None),
    ]


def test_duplicate_inflight_id_gets_400_and_the_original_survives() -> None:
    conn = ready()
    call = frame({"MPRPC": "0.1", "ID": "a", "METHOD": "m"})
    assert len(conn.receive_data(call)) == 1
    assert conn.receive_data(call) == []
    [reply] = replies(conn)
    assert reply["CODE"] == 400 and reply["MESSAGE"]["ID"] == "a"
    conn.send_result("a", 5)
    assert replies(conn)[0] == {"MPRPC": "0.1", "CODE": 200, "MESSAGE": {"ID": "a", "RESULT": 5}}
    # Once finished, the ID may be reused.
    assert len(conn.receive_data(call)) == 1


@pytest.mark.parametrize(
    "bad",
    [
        {"METHOD": 5},
        {"METHOD": "m", "ARGS": {"a": 1}},
        {"METHOD": "m", "KWARGS": [1]},
        {"METHOD": "m", "RETURN": "yes"},
        {},
    ],
)
def test_malformed_call_gets_400_and_connection_lives(bad: dict[str, Any]) -> None:
    conn = ready()
    assert conn.receive_data(frame({"MPRPC": "0.1", "ID": "a", **bad})) == []
    [reply] = replies(conn)
    assert reply["CODE"] == 400 and reply["MESSAGE"]["ID"] == "a"
    assert not conn.closed


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"\xc1\xc1\xc1" + SEPARATOR, 506),
        (frame([1, 2]), 506),
        (frame({"MPRPC": "0.2", "ID": "a", "METHOD": "m"}), 505),
        (frame({"MPRPC": "0.1", "WHAT": 1}), 506),
    ],
)
def test_garbage_closes_with_5xx(data: bytes, code: int) -> None:
    conn = ready()
    assert conn.receive_data(data) == []
    assert replies(conn) == [{"MPRPC": "0.1", "CODE": code}]
    assert conn.closed


def test_stream_sequence_and_error_midway() -> None:
    conn = ready()
    conn.receive_data(frame({"MPRPC": "0.1", "ID": "s", "METHOD": "gen"}))
    assert conn.send_stream_start("s")
    assert conn.send_stream_item("s", 1)
    conn.send_error("s", RPCRuntimeError("boom", exception="ValueError"))
    assert not conn.send_stream_item("s", 2)
    assert [r["CODE"] for r in replies(conn)] == [201, 202, 404]


def test_undeliverable_result_becomes_405() -> None:
    conn = ready()
    conn.receive_data(frame({"MPRPC": "0.1", "ID": "a", "METHOD": "m"}))
    conn.send_result("a", b"xx" + SEPARATOR)
    [reply] = replies(conn)
    assert reply["CODE"] == 405 and "separator" in reply["MESSAGE"]["MESSAGE"]


def test_length_framing_after_welcome() -> None:
    conn = ready(features=["length-framing"])
    events = conn.receive_data(
        b"".join(LengthFramer().frame(pack({"MPRPC": "0.1", "ID": "a", "METHOD": "m"})))
    )
    assert [e.id for e in events if isinstance(e, CallRequest)] == ["a"]
    conn.send_result("a", SEPARATOR)
    assert LengthFramer().feed(b"".join(conn.chunks_to_send())) == [
        pack({"MPRPC": "0.1", "CODE": 200, "MESSAGE": {"ID": "a", "RESULT": SEPARATOR}})
    ]


def test_cancel_needs_negotiation() -> None:
    conn = ready(features=["cancel"])
    conn.receive_data(frame({"MPRPC": "0.1", "ID": "a", "METHOD": "m"}))
    assert conn.receive_data(frame({"MPRPC": "0.1", "ID": "a", "CANCEL": True})) == [
        CancelRequest("a")
    ]
    conn.send_result("a", 1)  # nothing more for a cancelled ID
    assert conn.chunks_to_send() == []


@pytest.mark.parametrize("first", [b'{"MPRPC": "0.1", "AUTH": {}, "X": "', b' \n{"X": "'])
def test_a_json_first_message_refused_unread_is_answered_in_json(first: bytes) -> None:
    """Over max_auth_message_size, the message is refused before it is decoded: the
    client's encoding is guessed from its first byte, so a JSON client can read why."""
    settings = ServerSettings(max_auth_message_size=1024)
    conn = ServerConnection(settings, Credentials([("u", "p")]))
    conn.receive_data(first)
    conn.receive_data(b"a" * 2048)
    assert conn.closed
    reply = json.loads(b"".join(conn.chunks_to_send()).split(SEPARATOR)[0])
    assert reply["CODE"] == 505, reply


def test_a_msgpack_first_message_refused_unread_is_answered_in_msgpack() -> None:
    settings = ServerSettings(max_auth_message_size=1024)
    conn = ServerConnection(settings, Credentials([("u", "p")]))
    conn.receive_data(b"\x83" + b"\xa1x" * 2048)
    assert conn.closed
    assert replies(conn)[0]["CODE"] == 505


def test_a_violation_after_calls_in_the_same_read_waits_for_settle() -> None:
    """The calls before a bad message are returned with the connection still open, so
    the shell can answer them before the 505 (as if the bad message came in a later read)."""
    conn = ready()
    events = conn.receive_data(
        frame({"MPRPC": "0.1", "ID": "a", "METHOD": "m"}) + frame({"MPRPC": "9", "ID": "x"})
    )
    assert [e.id for e in events if isinstance(e, CallRequest)] == ["a"]
    assert not conn.closed
    conn.send_result("a", 3)
    conn.settle()
    assert conn.closed
    assert [r["CODE"] for r in replies(conn)] == [200, 505]
    conn.settle()  # nothing more
    assert conn.chunks_to_send() == []


def test_a_held_violation_closes_before_parsing_more() -> None:
    conn = ready()
    conn.receive_data(
        frame({"MPRPC": "0.1", "ID": "a", "METHOD": "m"}) + frame({"MPRPC": "9", "ID": "x"})
    )
    assert conn.receive_data(frame({"MPRPC": "0.1", "ID": "b", "METHOD": "m"})) == []
    assert conn.closed and [r["CODE"] for r in replies(conn)] == [505]


def json_ready() -> ServerConnection:
    conn = ServerConnection(ServerSettings(), Credentials([("u", "p")]))
    conn.receive_data(json.dumps(AUTH).encode() + SEPARATOR)
    conn.chunks_to_send()
    return conn


def json_replies(conn: ServerConnection) -> list[Any]:
    data = b"".join(conn.chunks_to_send())
    return [json.loads(f) for f in data.split(SEPARATOR)[:-1]]


def test_an_error_text_holding_the_separator_is_answered_405() -> None:
    conn = ready()
    conn.receive_data(frame({"MPRPC": "0.1", "ID": "a", "METHOD": "m"}))
    conn.send_error("a", RPCRuntimeError("bad " + SEPARATOR.decode(), exception="ValueError"))
    [reply] = replies(conn)
    assert reply["CODE"] == 405 and reply["MESSAGE"]["ID"] == "a"
    assert "error 404 not delivered" in reply["MESSAGE"]["MESSAGE"]
    assert not conn.closed


def test_a_method_name_spelling_the_separator_in_json_escapes_is_answered() -> None:
    """A JSON peer can put the separator in a string with escapes: the 401 echoing it
    cannot be framed, and is answered 405 instead of never."""
    conn = json_ready()
    conn.receive_data(b'{"MPRPC":"0.1","ID":"a","METHOD":"\\u0023#PRO-END##"}' + SEPARATOR)
    conn.send_error("a", RPCRuntimeError(f"unknown method {SEPARATOR.decode()!r}", id="a"))
    [reply] = json_replies(conn)
    assert reply["CODE"] == 405 and reply["MESSAGE"]["ID"] == "a"


def test_an_id_spelling_the_separator_closes_the_connection() -> None:
    """No reply can echo such an ID: the connection closes (500) rather than leave the
    caller waiting for ever."""
    conn = json_ready()
    [event] = conn.receive_data(
        b'{"MPRPC":"0.1","ID":"\\u0023#PRO-END##","METHOD":"m"}' + SEPARATOR
    )
    assert isinstance(event, CallRequest)
    conn.send_result(event.id, 1)
    assert conn.closed and json_replies(conn) == [{"MPRPC": "0.1", "CODE": 500}]
