"""MPRPC 0.1 spoken by hand, as pymprpc 0.0.3 clients do (no FEATURES key): byte-exact replies."""

from __future__ import annotations

import bz2
import json
import lzma
import zlib
from collections.abc import Callable
from typing import Any

import pytest
from service import PASSWORD, USER

from helpers import RawClient, ServerThread, json_decode, pack, unpack
from pymprpc.protocol import Codec, Compression

V = {"MPRPC": "0.1"}


def codec_client(port: int, json_mode: bool, compression: Compression | None) -> RawClient:
    codec = Codec(json=json_mode, compression=compression)
    return RawClient(port, encode=codec.encode, decode=codec.decode)


COMPRESS = {
    None: bytes,
    Compression.ZLIB: zlib.compress,
    Compression.BZ2: bz2.compress,
    Compression.LZMA: lzma.compress,
}


def exact(codec: Codec, msg: dict[str, Any]) -> bytes:
    """The bytes a peer must receive for `msg` (key order as docs/protocol.md lists it)."""
    if codec.json:
        data = json.dumps(msg, ensure_ascii=False, separators=(",", ":")).encode()
    else:
        data = pack(msg)
    return COMPRESS[codec.compression](data)


CODECS = [(False, None), (True, None)] + [(j, c) for j in (False, True) for c in Compression]


@pytest.mark.parametrize(("json_mode", "compression"), CODECS)
def test_session_in_every_encoding(
    srv: ServerThread, json_mode: bool, compression: Compression | None
) -> None:
    codec = Codec(json=json_mode, compression=compression)
    with codec_client(srv.port, json_mode, compression) as c:
        c.send({**V, "AUTH": {"USERNAME": USER, "PASSWORD": PASSWORD}})
        assert c.recv_frame() == exact(
            codec,
            {
                **V,
                "CODE": 100,
                "VERSION": "1.0",
                "DESC": "test service",
                "DEBUG": json_mode,
                "COMPRESER": compression.value if compression else None,
                "TIMEOUT": 180.0,
            },
        )
        c.send({**V, "HEARTBEAT": "ping"})
        assert c.recv_frame() == exact(codec, {**V, "CODE": 101, "HEARTBEAT": "pong"})
        c.send({**V, "ID": "c1", "METHOD": "coro_add", "ARGS": [1], "KWARGS": {"b": 41}})
        assert c.recv_frame() == exact(
            codec, {**V, "CODE": 200, "MESSAGE": {"ID": "c1", "RESULT": 42}}
        )
        c.send({**V, "ID": "s1", "METHOD": "count", "ARGS": [3]})
        assert [c.recv_frame() for _ in range(5)] == [
            exact(codec, {**V, "CODE": 201, "MESSAGE": {"ID": "s1"}}),
            exact(codec, {**V, "CODE": 202, "MESSAGE": {"ID": "s1", "RESULT": 0}}),
            exact(codec, {**V, "CODE": 202, "MESSAGE": {"ID": "s1", "RESULT": 1}}),
            exact(codec, {**V, "CODE": 202, "MESSAGE": {"ID": "s1", "RESULT": 2}}),
            exact(codec, {**V, "CODE": 206, "MESSAGE": {"ID": "s1"}}),
        ]


def login(srv: ServerThread, **kw: Any) -> RawClient:
    c = RawClient(srv.port, **kw)
    assert c.login(USER, PASSWORD)["CODE"] == 100
    return c


def test_wrong_password_gets_501_and_close(srv: ServerThread) -> None:
    with RawClient(srv.port) as c:
        c.send({**V, "AUTH": {"USERNAME": USER, "PASSWORD": "nope"}})
        assert c.recv_frame() == pack({**V, "CODE": 501})
        assert c.at_eof()


def test_old_anonymous_client_against_server_without_credentials(
    serve: Callable[..., ServerThread],
) -> None:
    srv = serve(auth=None)
    with RawClient(srv.port) as c:
        welcome = c.login(None, None)
        assert welcome["CODE"] == 100 and "FEATURES" not in welcome
    with RawClient(srv.port) as c:
        assert c.login("someone", "pw") == {**V, "CODE": 501}


def call_error(c: RawClient, request: dict[str, Any]) -> dict[str, Any]:
    c.send({**V, **request})
    reply = c.recv()
    assert set(reply) == {"MPRPC", "CODE", "MESSAGE"}
    assert reply["MESSAGE"]["ID"] == request["ID"]
    return reply


def test_call_errors(srv: ServerThread) -> None:
    with login(srv) as c:
        r = call_error(c, {"ID": "e1", "METHOD": "nope"})
        assert (r["CODE"], r["MESSAGE"]["EXCEPTION"]) == (401, "NotFindError")
        r = call_error(c, {"ID": "e2", "METHOD": "add", "ARGS": [1, 2, 3]})
        assert (r["CODE"], r["MESSAGE"]["EXCEPTION"]) == (402, "ParamError")
        assert "too many positional arguments" in r["MESSAGE"]["MESSAGE"]
        r = call_error(c, {"ID": "e3", "METHOD": "divide", "ARGS": [1, 0]})
        assert (r["CODE"], r["MESSAGE"]["EXCEPTION"]) == (404, "ZeroDivisionError")
        assert r["MESSAGE"]["DATA"] == {"METHOD": "divide", "ARGS": [1, 0], "KWARGS": {}}
        r = call_error(c, {"ID": "e4", "METHOD": "system.nope"})
        assert (r["CODE"], r["MESSAGE"]["EXCEPTION"]) == (406, "UnsupportSysMethodError")
        # The connection is still good.
        c.send({**V, "ID": "ok", "METHOD": "coro_add", "ARGS": [1, 1]})
        assert c.recv() == {**V, "CODE": 200, "MESSAGE": {"ID": "ok", "RESULT": 2}}


def test_traceback_frame_only_in_debug_mode(serve: Callable[..., ServerThread]) -> None:
    srv = serve(debug=True)
    with login(srv) as c:
        r = call_error(c, {"ID": "e", "METHOD": "divide", "ARGS": [1, 0]})
        assert "ZeroDivisionError" in r["MESSAGE"]["DATA"]["FRAME"]


def test_return_false_then_getresult(srv: ServerThread) -> None:
    with login(srv) as c:
        c.send({**V, "ID": "k1", "METHOD": "add", "ARGS": [2, 3], "RETURN": False})
        c.send({**V, "ID": "k2", "METHOD": "count", "ARGS": [2], "RETURN": False})
        c.send({**V, "ID": "k3", "METHOD": "divide", "ARGS": [1, 0], "RETURN": False})
        c.send({**V, "ID": "g1", "METHOD": "system.getresult", "ARGS": ["k1"]})
        assert c.recv_frame() == pack({**V, "CODE": 200, "MESSAGE": {"ID": "g1", "RESULT": 5}})
        c.send({**V, "ID": "g2", "METHOD": "system.getresult", "ARGS": ["k2"]})
        assert [c.recv()["CODE"] for _ in range(4)] == [201, 202, 202, 206]
        r = call_error(c, {"ID": "g3", "METHOD": "system.getresult", "ARGS": ["k3"]})
        assert (r["CODE"], r["MESSAGE"]["EXCEPTION"]) == (404, "ZeroDivisionError")
        r = call_error(c, {"ID": "g4", "METHOD": "system.getresult", "ARGS": ["k1"]})
        assert r["CODE"] == 400  # fetched once already


def test_deprecated_answers_300_and_301(srv: ServerThread) -> None:
    with login(srv) as c:
        c.send({**V, "ID": "d1", "METHOD": "old_add", "ARGS": [1, 2]})
        assert c.recv() == {**V, "CODE": 300, "MESSAGE": {"ID": "d1", "RESULT": 3}}
        c.send({**V, "ID": "d2", "METHOD": "old_count", "ARGS": [1]})
        assert [c.recv()["CODE"] for _ in range(3)] == [301, 202, 206]


def test_introspection(srv: ServerThread) -> None:
    with login(srv, encode=lambda m: json.dumps(m).encode(), decode=json_decode) as c:
        c.send({**V, "ID": "i1", "METHOD": "system.methodSignature", "ARGS": ["add"]})
        assert c.recv()["MESSAGE"]["RESULT"] == "add(a: int, b: int) -> int"
        c.send({**V, "ID": "i2", "METHOD": "system.methodHelp", "ARGS": ["add"]})
        assert c.recv()["MESSAGE"]["RESULT"] == "Add two numbers."
        c.send({**V, "ID": "i3", "METHOD": "system.lenConnections"})
        assert c.recv()["MESSAGE"]["RESULT"] == 1
        c.send({**V, "ID": "i4", "METHOD": "system.listMethods"})
        names = c.recv()["MESSAGE"]["RESULT"]
        assert {"add", "count", "system.getresult", "system.lenUndoneTasks"} <= set(names)


def test_idle_timeout_sends_504_and_closes(serve: Callable[..., ServerThread]) -> None:
    srv = serve(timeout=0.3)
    with login(srv) as c:
        assert c.recv_frame() == pack({**V, "CODE": 504})
        assert c.at_eof()


def test_pings_keep_the_connection_alive(serve: Callable[..., ServerThread]) -> None:
    srv = serve(timeout=1.0)
    with login(srv) as c:
        for _ in range(4):
            c.sock.settimeout(0.4)
            with pytest.raises(TimeoutError):
                c.recv_frame()  # nothing for 0.4 s: not yet idle
            c.send({**V, "HEARTBEAT": "ping"})
            c.sock.settimeout(10)
            assert c.recv()["CODE"] == 101


def test_unpack_helper_roundtrip() -> None:
    assert unpack(pack({"a": b"x"})) == {"a": b"x"}


def test_kept_stream_is_bounded(serve: Callable[..., ServerThread]) -> None:
    srv = serve(kept_results_bytes=4096)
    with login(srv) as c:
        c.send({**V, "ID": "k", "METHOD": "endless", "RETURN": False})
        r = call_error(c, {"ID": "g", "METHOD": "system.getresult", "ARGS": ["k"]})
        assert (r["CODE"], r["MESSAGE"]["EXCEPTION"]) == (405, "ResultLimitError")
