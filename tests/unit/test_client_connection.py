"""The client state machine, driven with bytes only."""

from __future__ import annotations

from typing import Any

import pytest

from helpers import OLD_WELCOME, pack, unpack
from pymprpc.errors import (
    LocalProtocolError,
    LoginError,
    ProtocolException,
    RemoteProtocolError,
    RpcUnavailableException,
)
from pymprpc.protocol import (
    SEPARATOR,
    CallFailed,
    ClientConnection,
    ConnectionFailed,
    Feature,
    Result,
    StreamEnd,
    StreamItem,
    StreamStart,
    Welcome,
)

WELCOME = {**OLD_WELCOME, "TIMEOUT": 180}


def frame(msg: Any) -> bytes:
    return pack(msg) + SEPARATOR


def ready() -> ClientConnection:
    conn = ClientConnection("u", "p", features=frozenset())
    conn.start()
    conn.chunks_to_send()
    [welcome] = conn.receive_data(frame(WELCOME))
    assert isinstance(welcome, Welcome) and welcome.idle_timeout == 180
    return conn


def test_auth_request_without_features_looks_like_0_0_3() -> None:
    conn = ClientConnection("u", "p", features=frozenset())
    conn.start()
    data = b"".join(conn.chunks_to_send())
    assert unpack(data[: -len(SEPARATOR)]) == {
        "MPRPC": "0.1",
        "AUTH": {"USERNAME": "u", "PASSWORD": "p"},
    }


def test_login_failure() -> None:
    conn = ClientConnection("u", "bad")
    conn.start()
    [event] = conn.receive_data(frame({"MPRPC": "0.1", "CODE": 501}))
    assert isinstance(event, ConnectionFailed) and isinstance(event.error, LoginError)
    assert conn.closed


def test_responses_are_routed_and_unknown_ids_ignored() -> None:
    conn = ready()
    a = conn.send_call("add", [1, 2])
    s = conn.send_call("gen")
    events = conn.receive_data(
        frame({"MPRPC": "0.1", "CODE": 200, "MESSAGE": {"ID": "zzz", "RESULT": 0}})
        + frame({"MPRPC": "0.1", "CODE": 300, "MESSAGE": {"ID": a, "RESULT": 3}})
        + frame({"MPRPC": "0.1", "CODE": 201, "MESSAGE": {"ID": s}})
        + frame({"MPRPC": "0.1", "CODE": 202, "MESSAGE": {"ID": s, "RESULT": 7}})
        + frame({"MPRPC": "0.1", "CODE": 206, "MESSAGE": {"ID": s}})
        + frame({"MPRPC": "0.1", "CODE": 202, "MESSAGE": {"ID": s, "RESULT": 8}})
    )
    assert events == [Result(a, 3, True), StreamStart(s), StreamItem(s, 7), StreamEnd(s)]


def test_call_error_carries_details() -> None:
    conn = ready()
    a = conn.send_call("f")
    [event] = conn.receive_data(
        frame(
            {
                "MPRPC": "0.1",
                "CODE": 404,
                "MESSAGE": {
                    "ID": a,
                    "EXCEPTION": "ZeroDivisionError",
                    "MESSAGE": "division by zero",
                    "DATA": {"METHOD": "f", "FRAME": "Traceback..."},
                },
            }
        )
    )
    assert isinstance(event, CallFailed)
    assert str(event.error) == "ZeroDivisionError: division by zero"
    assert event.error.remote_traceback == "Traceback..."


def test_per_call_5xx_fails_only_that_call() -> None:
    conn = ready()
    a = conn.send_call("f")
    [event] = conn.receive_data(
        frame(
            {
                "MPRPC": "0.1",
                "CODE": 503,
                "MESSAGE": {"ID": a, "EXCEPTION": "RpcUnavailableException", "MESSAGE": "draining"},
            }
        )
    )
    assert isinstance(event, CallFailed) and isinstance(event.error, RpcUnavailableException)
    assert not conn.closed


def test_separator_in_request_is_a_local_error() -> None:
    conn = ready()
    with pytest.raises(LocalProtocolError, match="separator"):
        conn.send_call("echo", ["a##PRO-END##b"])
    assert conn.chunks_to_send() == []  # nothing queued


def test_garbage_from_server_fails_connection() -> None:
    conn = ready()
    [event] = conn.receive_data(b"\xc1" + SEPARATOR)
    assert isinstance(event, ConnectionFailed)


def test_oversized_frame_from_server_fails_the_connection() -> None:
    conn = ClientConnection("u", "p", features=frozenset(), max_message_size=200)
    conn.start()
    conn.receive_data(frame(WELCOME))
    [event] = conn.receive_data(b"\x81" + b"x" * 300)
    assert isinstance(event, ConnectionFailed)
    assert "maximum message size" in str(event.error)


def test_oversized_request_is_a_local_error() -> None:
    conn = ClientConnection("u", "p", features=frozenset(), max_message_size=200)
    conn.start()
    conn.receive_data(frame(WELCOME))
    with pytest.raises(LocalProtocolError, match="max_message_size"):
        conn.send_call("echo", ["x" * 300])


def test_a_client_accepts_long_collections_within_the_message_size() -> None:
    conn = ready()
    a = conn.send_call("big")
    value = list(range(2_000_000))  # over the server's default max_collection_len
    [event] = conn.receive_data(
        frame({"MPRPC": "0.1", "CODE": 200, "MESSAGE": {"ID": a, "RESULT": value}})
    )
    assert isinstance(event, Result) and event.value == value


# -- replies out of order: a clear per-call protocol error, never a hang ---------------


def _reply(code: int, id: str, **fields: Any) -> bytes:
    return frame({"MPRPC": "0.1", "CODE": code, "MESSAGE": {"ID": id, **fields}})


@pytest.mark.parametrize(
    ("codes", "what"),
    [
        ([202], "stream item (202) before its start (201)"),
        ([206], "stream end (206) without a stream"),
        ([201, 201], "second stream start (201)"),
        ([201, 200], "result (200/300) inside a stream"),
        ([201, 300], "result (200/300) inside a stream"),
    ],
)
def test_replies_out_of_order_fail_the_call(codes: list[int], what: str) -> None:
    conn = ready()
    id = conn.send_call("f")
    other = conn.send_call("g")
    events = conn.receive_data(b"".join(_reply(c, id, RESULT=1) for c in codes))
    failed = events[-1]
    assert isinstance(failed, CallFailed) and failed.id == id
    assert isinstance(failed.error, RemoteProtocolError)
    assert isinstance(failed.error, ProtocolException)  # `except ProtocolException` works
    assert str(failed.error) == f"the server sent a {what} for call {id}"
    # The call is forgotten (later replies to it dropped); the connection and others live.
    assert conn.receive_data(_reply(206, id) + _reply(202, id, RESULT=2)) == []
    assert not conn.closed
    [result] = conn.receive_data(_reply(200, other, RESULT=3))
    assert result == Result(other, 3, False)


def test_a_stream_in_order_and_an_error_inside_it_are_fine() -> None:
    conn = ready()
    id = conn.send_call("f")
    events = conn.receive_data(
        _reply(201, id) + _reply(202, id, RESULT=1) + _reply(404, id, MESSAGE="boom")
    )
    assert [type(e) for e in events] == [StreamStart, StreamItem, CallFailed]


@pytest.mark.parametrize("code", [700, -1, 0, 99, 102, 199, 399, 600])
def test_codes_outside_the_table_are_protocol_errors(code: int) -> None:
    conn = ready()
    id = conn.send_call("f")
    [event] = conn.receive_data(_reply(code, id, MESSAGE="x"))
    assert isinstance(event, ConnectionFailed) and conn.closed
    assert isinstance(event.error, RemoteProtocolError)
    assert f"unknown response code {code}" in str(event.error)


def test_a_future_4xx_code_still_fails_only_its_call() -> None:
    conn = ready()
    id = conn.send_call("f")
    [event] = conn.receive_data(_reply(409, id, MESSAGE="new"))
    assert isinstance(event, CallFailed) and not conn.closed
    assert not isinstance(event.error, RemoteProtocolError)


@pytest.mark.parametrize("wanted", [frozenset(), frozenset({Feature.CANCEL})])
def test_a_welcome_with_features_never_asked_for_is_refused(wanted: frozenset[Feature]) -> None:
    conn = ClientConnection("u", "p", features=wanted)
    conn.start()
    [event] = conn.receive_data(frame({**WELCOME, "FEATURES": ["length-framing"]}))
    assert isinstance(event, ConnectionFailed) and conn.closed
    assert isinstance(event.error, RemoteProtocolError)
    assert "FEATURES lists length-framing, which this client did not ask for" in str(event.error)


def test_a_welcome_with_fewer_features_than_asked_is_fine() -> None:
    conn = ClientConnection("u", "p")
    conn.start()
    [event] = conn.receive_data(frame({**WELCOME, "FEATURES": ["cancel", "newer-thing"]}))
    assert isinstance(event, Welcome) and conn.features == {Feature.CANCEL}
