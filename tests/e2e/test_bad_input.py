"""Hostile or broken peers: each gets the protocol's answer and the server keeps serving."""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import math
from collections.abc import Callable
from typing import Any

import pytest
from service import PASSWORD, USER, Probe, url

from helpers import RawClient, ServerThread, pack, wait_for
from pymprpc.client import RPC, AsyncRPC
from pymprpc.errors import LocalProtocolError, ResultLimitError
from pymprpc.protocol import SEPARATOR, Codec

V = {"MPRPC": "0.1"}


def still_serving(srv: ServerThread) -> None:
    with RPC(url(srv)) as rpc:
        assert rpc.coro_add(20, 22) == 42


def login(srv: ServerThread) -> RawClient:
    c = RawClient(srv.port)
    assert c.login(USER, PASSWORD)["CODE"] == 100
    return c


@pytest.mark.parametrize(
    "garbage", [b"\xc1\xff\x00garbage" + SEPARATOR, b"GET / HTTP/1.1\r\n\r\n" + SEPARATOR]
)
def test_garbage_bytes(srv: ServerThread, garbage: bytes) -> None:
    with RawClient(srv.port) as c:
        c.send_raw(garbage)
        assert c.recv()["CODE"] == 506
        assert c.at_eof()
    still_serving(srv)


def test_garbage_after_auth(srv: ServerThread) -> None:
    with login(srv) as c:
        c.send_raw(b"\x93\x01\x02" + SEPARATOR)  # a msgpack array, not a map
        assert c.recv() == {**V, "CODE": 506}
        assert c.at_eof()
    still_serving(srv)


def test_truncated_frame_then_disconnect(srv: ServerThread) -> None:
    with login(srv) as c:
        c.send_raw(pack({**V, "ID": "t", "METHOD": "record", "ARGS": ["x"]})[:7])
    wait_for(lambda: srv.call_in_loop(lambda: srv.server.connection_count) == 0)
    still_serving(srv)


def test_call_before_auth_is_not_executed(srv: ServerThread, probe: Probe) -> None:
    with RawClient(srv.port) as c:
        c.send({**V, "ID": "x", "METHOD": "record", "ARGS": ["before-auth"]})
        assert c.recv() == {**V, "CODE": 501}
        assert c.at_eof()
    still_serving(srv)
    assert probe.executed == []


def test_wrong_password(srv: ServerThread) -> None:
    with RawClient(srv.port) as c:
        assert c.login(USER, PASSWORD + "x") == {**V, "CODE": 501}
        assert c.at_eof()
    still_serving(srv)


def test_payload_over_the_size_limit(serve: Callable[..., ServerThread]) -> None:
    srv = serve(max_message_size=4096)
    with login(srv) as c:
        c.send_raw(b"\x81" + b"x" * 5000)  # no separator within the limit
        assert c.recv() == {**V, "CODE": 505}
        assert c.at_eof()
    with login(srv) as c:
        c.send({**V, "ID": "big", "METHOD": "echo", "ARGS": ["y" * 5000]})
        assert c.recv() == {**V, "CODE": 505}
    still_serving(srv)


def test_result_over_the_size_limit_is_405(serve: Callable[..., ServerThread]) -> None:
    srv = serve(max_message_size=4096)
    with login(srv) as c:
        c.send({**V, "ID": "r", "METHOD": "system.listMethods"})
        assert c.recv()["CODE"] == 200
        c.send({**V, "ID": "big", "METHOD": "repeat", "ARGS": ["z", 5000]})
        reply = c.recv()
        assert reply["CODE"] == 405 and reply["MESSAGE"]["ID"] == "big"
        assert "maximum message size" in reply["MESSAGE"]["MESSAGE"]


def test_duplicate_inflight_id(srv: ServerThread, probe: Probe) -> None:
    with login(srv) as c:
        c.send({**V, "ID": "dup", "METHOD": "wait_release"})
        c.send({**V, "ID": "dup", "METHOD": "record", "ARGS": ["second"]})
        reply = c.recv()
        assert (reply["CODE"], reply["MESSAGE"]["ID"]) == (400, "dup")
        assert "duplicate" in reply["MESSAGE"]["MESSAGE"]
        probe.release.set()
        assert c.recv() == {**V, "CODE": 200, "MESSAGE": {"ID": "dup", "RESULT": "released"}}
    assert probe.executed == []
    still_serving(srv)


def test_legacy_result_containing_the_separator_is_405(srv: ServerThread) -> None:
    with login(srv) as c:
        c.send({**V, "ID": "s", "METHOD": "add", "ARGS": ["##PRO-", "END##"]})
        reply = c.recv()
        assert (reply["CODE"], reply["MESSAGE"]["ID"]) == (405, "s")
        assert "length framing" in reply["MESSAGE"]["MESSAGE"]
        c.send({**V, "ID": "t", "METHOD": "coro_add", "ARGS": [1, 2]})
        assert c.recv()["MESSAGE"]["RESULT"] == 3


def test_client_disconnecting_mid_stream_closes_the_generator(
    srv: ServerThread, probe: Probe
) -> None:
    with login(srv) as c:
        c.send({**V, "ID": "e", "METHOD": "endless"})
        assert [c.recv()["CODE"] for _ in range(3)] == [201, 202, 202]
    assert probe.stream_closed.wait(10)
    wait_for(lambda: srv.call_in_loop(lambda: srv.server.running_call_count) == 0)
    still_serving(srv)


def test_function_that_raises(srv: ServerThread) -> None:
    with login(srv) as c:
        c.send({**V, "ID": "f", "METHOD": "divide", "ARGS": [1, 0]})
        reply = c.recv()
        assert (reply["CODE"], reply["MESSAGE"]["EXCEPTION"]) == (404, "ZeroDivisionError")
        assert reply["MESSAGE"]["MESSAGE"] == "division by zero"
    still_serving(srv)


def test_generator_raising_after_items(srv: ServerThread) -> None:
    with login(srv) as c:
        c.send({**V, "ID": "g", "METHOD": "fail_midway", "ARGS": [2]})
        replies = [c.recv() for _ in range(4)]
        assert [r["CODE"] for r in replies] == [201, 202, 202, 404]
        assert replies[-1]["MESSAGE"]["EXCEPTION"] == "ValueError"
    still_serving(srv)


def test_process_pool_worker_that_dies(srv: ServerThread) -> None:
    with login(srv) as c:
        c.send({**V, "ID": "d", "METHOD": "die"})
        reply = c.recv()
        assert (reply["CODE"], reply["MESSAGE"]["ID"]) == (404, "d")
        assert "worker process" in reply["MESSAGE"]["MESSAGE"]
        c.send({**V, "ID": "a", "METHOD": "add", "ARGS": [1, 2]})
        assert c.recv()["MESSAGE"]["RESULT"] == 3  # the pool was restarted
    still_serving(srv)


def test_auth_must_complete_in_time(serve: Callable[..., ServerThread]) -> None:
    srv = serve(auth_timeout=0.2)
    with RawClient(srv.port) as c:
        assert c.recv() == {**V, "CODE": 504}
        assert c.at_eof()
    still_serving(srv)


def test_too_many_calls_in_flight_get_503(serve: Callable[..., ServerThread], probe: Probe) -> None:
    srv = serve(max_inflight=1)
    with login(srv) as c:
        c.send({**V, "ID": "1", "METHOD": "wait_release"})
        c.send({**V, "ID": "2", "METHOD": "coro_add", "ARGS": [1, 1]})
        reply = c.recv()
        assert (reply["CODE"], reply["MESSAGE"]["ID"]) == (503, "2")
        probe.release.set()
        assert c.recv()["MESSAGE"] == {"ID": "1", "RESULT": "released"}


def test_cancel_with_an_integer_id_is_400_like_a_call(srv: ServerThread) -> None:
    with RawClient(srv.port) as c:
        c.send({**V, "AUTH": {"USERNAME": USER, "PASSWORD": PASSWORD}, "FEATURES": ["cancel"]})
        assert c.recv()["CODE"] == 100
        c.send({**V, "ID": 5, "CANCEL": True})
        reply = c.recv()
        assert reply["CODE"] == 400 and reply["MESSAGE"]["ID"] == 5
        c.send({**V, "ID": 6, "METHOD": "record", "ARGS": ["x"]})
        assert c.recv()["CODE"] == 400
        c.send({**V, "ID": "ok", "METHOD": "coro_add", "ARGS": [1, 2]})
        assert c.recv()["MESSAGE"] == {"ID": "ok", "RESULT": 3}
    still_serving(srv)


def test_non_string_keys_travel_both_ways(srv: ServerThread) -> None:
    value = {1: "a", 2.5: [None], None: {3: b"x"}}
    with RPC(url(srv)) as rpc:
        assert rpc.echo(value) == value
        assert rpc.coro_add(1, 2) == 3  # the connection lives on
    with RawClient(srv.port, decode=Codec().decode) as c:
        assert c.login(USER, PASSWORD)["CODE"] == 100
        fields = ["MPRPC", "0.1", "ID", "k", "METHOD", "echo", "ARGS"]
        args = b"\x91\x81\x92\x01\x02\xa1a"  # [{[1, 2]: "a"}]: an array as a map key
        c.send_raw(b"\x84" + b"".join(pack(f) for f in fields) + args + SEPARATOR)
        assert c.recv()["MESSAGE"] == {"ID": "k", "RESULT": {(1, 2): "a"}}


def register_inline(srv: ServerThread, name: str, func: Callable[[], Any]) -> None:
    srv.call_in_loop(lambda: srv.server.register_function(name, executor="inline")(func))


@pytest.mark.parametrize(
    ("value", "named"),
    [({1, 2}, "is a set"), (datetime.datetime(2020, 1, 1), "is a datetime.datetime")],
)
def test_unencodable_result_says_what_cannot_be_encoded(
    srv: ServerThread, value: Any, named: str
) -> None:
    register_inline(srv, "odd", lambda: value)
    with RPC(url(srv)) as rpc:
        with pytest.raises(ResultLimitError) as info:
            rpc.odd()
        text = str(info.value)
        assert "cannot encode as MessagePack" in text and named in text
        assert "too large" not in text
        assert rpc.coro_add(1, 2) == 3


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_json_mode_refuses_nan_and_infinity(srv: ServerThread, value: float) -> None:
    register_inline(srv, "not_a_number", lambda: [value])
    with RPC(url(srv), debug=True) as rpc:
        with pytest.raises(ResultLimitError, match="strict JSON"):
            rpc.not_a_number()
        with pytest.raises(LocalProtocolError, match="strict JSON"):
            rpc.echo(value)
        assert rpc.coro_add(1, 2) == 3


def test_json_login_with_a_lone_surrogate_is_501_without_a_traceback(
    srv: ServerThread, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    for _ in range(3):
        with RawClient(srv.port, decode=json.loads) as c:
            c.send_raw(b'{"MPRPC":"0.1","AUTH":{"USERNAME":"\\ud800","PASSWORD":"x"}}' + SEPARATOR)
            assert c.recv() == {**V, "CODE": 501}
            assert c.at_eof()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    still_serving(srv)


def test_float_keys_nan_included_round_trip_on_both_clients(srv: ServerThread) -> None:
    """What a client can send, its own decoder reads back: float keys (NaN and infinity
    too) echoed by the server leave the connection alive, on both clients."""
    value = {math.nan: 1, math.inf: 2, -0.5: 3, (1, 2.5): 4}

    def check(echoed: Any) -> None:
        assert len(echoed) == 4
        nan = [k for k in echoed if isinstance(k, float) and math.isnan(k)]
        assert len(nan) == 1 and echoed[nan[0]] == 1
        assert {k: v for k, v in echoed.items() if k not in nan} == {
            math.inf: 2,
            -0.5: 3,
            (1, 2.5): 4,
        }

    with RPC(url(srv)) as rpc:
        check(rpc.echo(value))
        assert rpc.coro_add(1, 2) == 3

    async def run() -> None:
        async with AsyncRPC(url(srv)) as arpc:
            check(await arpc.echo(value))
            assert await arpc.coro_add(1, 2) == 3

    asyncio.run(run())
    # JSON cannot carry a NaN key: refused before sending, the connection unharmed.
    with RPC(url(srv), debug=True) as rpc:
        with pytest.raises(LocalProtocolError, match="strict JSON"):
            rpc.echo({math.nan: 1})
        assert rpc.coro_add(1, 2) == 3
