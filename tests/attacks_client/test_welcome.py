"""Malformed welcome replies: each must be a clear pymprpc error, identical on both clients."""

from __future__ import annotations

from typing import Any

import pytest

from .fake import HANG, PROTO, WELCOME, both, echo_server


def test_baseline_echo_works_on_both() -> None:
    async def call(rpc: Any) -> Any:
        return await rpc.f(1, "x")

    a, b = both(echo_server(), lambda rpc: rpc.f(1, "x"), call)
    assert a == ("ok", [1, "x"]) or a == ("ok", (1, "x")), a
    assert a == b


def w(**changes: Any) -> dict[str, Any]:
    d = dict(WELCOME)
    for k, v in changes.items():
        if v is ...:
            d.pop(k, None)
        else:
            d[k] = v
    return d


BAD = {
    "code-missing": w(CODE=...),
    "code-str": w(CODE="100"),
    "code-float": w(CODE=100.5),
    "code-200": w(CODE=200),
    "code-bool": w(CODE=True),
    "mprpc-missing": w(MPRPC=...),
    "mprpc-0.2": w(MPRPC="0.2"),
    "mprpc-int": w(MPRPC=1),
    "version-int": w(VERSION=12),
    "desc-list": w(DESC=["a"]),
    "debug-str": w(DEBUG="yes"),
    "debug-true-mismatch": w(DEBUG=True),
    "compreser-unknown": w(COMPRESER="gzip"),
    "compreser-int": w(COMPRESER=5),
    "compreser-zlib-mismatch": w(COMPRESER="zlib"),
    "timeout-str": w(TIMEOUT="x"),
    "timeout-negative": w(TIMEOUT=-1),
    "timeout-list": w(TIMEOUT=[1]),
    "features-str": w(FEATURES="length-framing"),
    "features-ints": w(FEATURES=[1, 2]),
    "features-nested": w(FEATURES=[["cancel"]]),
    "features-map": w(FEATURES={"cancel": True}),
    "features-null-item": w(FEATURES=[None]),
    "nonstr-key": {**WELCOME, 1: 2},
    "bytes-key": {**WELCOME, b"CODE": 100},
}


@pytest.mark.timeout(40)
@pytest.mark.parametrize("name", sorted(BAD))
def test_malformed_welcome_is_clear_and_same(name: str) -> None:
    a, b = both(echo_server(BAD[name]), limit=6)
    assert a != HANG and b != HANG, (a, b)
    # Harmless fields (VERSION/DESC types) may be tolerated, but then the call must work.
    for out in (a, b):
        assert out[0] == "ok" or out[0] in PROTO, out
    assert a == b, f"clients differ: sync={a} async={b}"


@pytest.mark.timeout(40)
def test_welcome_not_a_map() -> None:
    def script(peer: Any) -> None:
        peer.recv()
        peer.send([100, "hello"])
        peer.wait_eof(5)

    a, b = both(script, limit=6)
    assert a != HANG and b != HANG, (a, b)
    assert a[0] in PROTO, a
    assert a == b, (a, b)


@pytest.mark.timeout(40)
def test_readme_malformed_welcome_is_a_protocol_exception() -> None:
    """README 'Errors': a malformed welcome reply is a RemoteProtocolError naming the
    field, and `except ProtocolException` catches it (0.0.3 code kept working)."""
    from pymprpc.errors import ProtocolException, RemoteProtocolError

    assert issubclass(RemoteProtocolError, ProtocolException)
    a, b = both(echo_server(w(TIMEOUT="x")), limit=6)
    assert a[0] == "RemoteProtocolError" and "TIMEOUT" in a[1], a
    assert a == b, (a, b)


@pytest.mark.timeout(40)
def test_welcome_features_never_asked_for() -> None:
    """Client asks for nothing (features=()); server claims length-framing and uses it."""
    a, b = both(echo_server(w(FEATURES=["length-framing"])), limit=6, features=())
    assert a != HANG and b != HANG, (a, b)
    for out in (a, b):
        assert out[0] in PROTO, out
    assert a == b, (a, b)


@pytest.mark.timeout(40)
def test_welcome_unknown_feature_ignored() -> None:
    a, b = both(echo_server(features=["length-framing", "cancel", "deadline", "zstd"]), limit=6)
    assert a == b, (a, b)
    assert a != HANG


@pytest.mark.timeout(40)
def test_welcome_login_error_501_same() -> None:
    a, b = both(echo_server({"MPRPC": "0.1", "CODE": 501}), limit=6)
    assert a[0] == "LoginError", a
    assert a == b, (a, b)


@pytest.mark.timeout(40)
def test_no_welcome_server_closes() -> None:
    def script(peer: Any) -> None:
        peer.recv()

    a, b = both(script, limit=6)
    assert a != HANG and b != HANG, (a, b)
    assert a[0] in PROTO, a
    assert a == b, (a, b)


@pytest.mark.timeout(40)
def test_welcome_never_sent_connect_timeout() -> None:
    """A server that accepts and never answers the auth: connect_timeout must fire."""

    def script(peer: Any) -> None:
        peer.recv()
        peer.wait_eof(8)

    a, b = both(script, limit=6, connect_timeout=1)
    assert a != HANG and b != HANG, (a, b)
    assert a == b, (a, b)
