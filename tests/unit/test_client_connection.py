"""The client state machine, driven with bytes only."""

from __future__ import annotations

from typing import Any

import pytest

from helpers import OLD_WELCOME, pack, unpack
from pymprpc.errors import LocalProtocolError, LoginError, RpcUnavailableException
from pymprpc.protocol import (
    SEPARATOR,
    CallFailed,
    ClientConnection,
    ConnectionFailed,
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
