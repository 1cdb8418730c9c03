"""Review 23: numeric options and auth= checked at construction; every documented-valid
value still accepted (no server is started)."""

from __future__ import annotations

from typing import Any

import pytest

from pymprpc import RPC, AsyncRPC, Server


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("max_connections", None),
        ("max_workers", None),
        ("idle_timeout", None),
        ("idle_timeout", 0),
        ("timeout", 180),
        ("timeout", None),
        ("max_buffered_input", 0),
        ("max_output_buffer", 0),
        ("half_close_timeout", 0),
        ("login_backoff", 0),
        ("worker_spin", 0),
        ("worker_spin", None),
        ("kept_results_ttl", 600),
        ("grace_period", 0),
        ("max_inflight", 10**12),
        ("auth", [("admin", "admin")]),
        ("auth", (["a", "b"],)),
        ("auth", iter([("a", "b")])),
        ("auth", None),
    ],
)
def test_documented_server_values_are_accepted(name: str, value: Any) -> None:
    Server(("127.0.0.1", 0), **{name: value})


@pytest.mark.parametrize(
    ("name", "value", "error"),
    [
        ("max_inflight", "10", TypeError),
        ("grace_period", True, TypeError),
        ("kept_results", 1.0, TypeError),
        ("auth_timeout", -1, ValueError),
        ("kept_results_ttl", float("inf"), ValueError),
        ("idle_timeout", float("nan"), ValueError),
        ("max_message_size", 0, ValueError),
    ],
)
def test_bad_server_values_are_refused_naming_them(name: str, value: Any, error: type) -> None:
    with pytest.raises(error, match=name):
        Server(("127.0.0.1", 0), **{name: value})


@pytest.mark.parametrize("auth", [[("alice", 5)], [("alice", "s3cret-pw", "x")], "alice:s3cret-pw"])
def test_bad_auth_is_refused_without_the_password(auth: Any) -> None:
    with pytest.raises(TypeError, match="auth") as raised:
        Server(("127.0.0.1", 0), auth=auth)
    assert "s3cret" not in str(raised.value)


@pytest.mark.parametrize("client", [RPC, AsyncRPC])
def test_client_values(client: Any) -> None:
    for options in (
        {"timeout": None},
        {"timeout": 0},
        {"timeout": 5},
        {"heart_beat": None},
        {"heart_beat": 40},
        {"connect_timeout": 0.5},
    ):
        client("tcp://127.0.0.1:1", **options)
    for name, value, error in (
        ("timeout", "5", TypeError),
        ("heart_beat", 0, ValueError),
        ("connect_timeout", float("nan"), ValueError),
        ("stream_buffer_size", True, TypeError),
    ):
        with pytest.raises(error, match=name):
            client("tcp://127.0.0.1:1", **{name: value})
