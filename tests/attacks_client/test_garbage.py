"""Garbage after login: each must be a clear pymprpc error (or be ignored where the spec
says so), never a bare Python error or a hang, and the same on both clients."""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Callable
from typing import Any

import msgpack
import pytest

from .fake import HANG, PROTO, Peer, both, pack

Send = Callable[[Peer, dict[str, Any]], None]


def after_call(send: Send, features: Any = None) -> Callable[[Peer], None]:
    def script(peer: Peer) -> None:
        if peer.login(features=features) is None:
            return
        call = peer.next_call()
        if call is None:
            return
        send(peer, call)
        peer.wait_eof(6)

    return script


def raw(data: bytes) -> Send:
    return lambda peer, call: peer.send_raw(peer.frame(data))


def msg(m: Any) -> Send:
    return lambda peer, call: peer.send(m)


def with_id(code: int, message: Any = None, **extra: Any) -> Send:
    def send(peer: Peer, call: dict[str, Any]) -> None:
        body = {"ID": call["ID"]} if message is None else message
        peer.send({"MPRPC": "0.1", "CODE": code, "MESSAGE": body, **extra})

    return send


def deep(n: int) -> Any:
    v: Any = 1
    for _ in range(n):
        v = [v]
    return v


def deep_msgpack(n: int) -> bytes:
    # built by hand: msgpack.packb itself refuses depth > 512
    return b"\x91" * n + b"\x01"


GARBAGE: dict[str, Send] = {
    "list": msg([1, 2, 3]),
    "int": msg(42),
    "str": msg("hello"),
    "nil": msg(None),
    "invalid-msgpack-c1": raw(b"\xc1"),
    "truncated-msgpack": raw(pack({"MPRPC": "0.1", "CODE": 200})[:-3]),
    "two-objects-in-frame": raw(pack({"a": 1}) + pack({"b": 2})),
    "empty-frame": raw(b""),
    "no-mprpc": lambda p, c: p.send({"CODE": 200, "MESSAGE": {"ID": c["ID"], "RESULT": 1}}),
    "mprpc-0.2": lambda p, c: p.send(
        {"MPRPC": "0.2", "CODE": 200, "MESSAGE": {"ID": c["ID"], "RESULT": 1}}
    ),
    "code-missing": lambda p, c: p.send({"MPRPC": "0.1", "MESSAGE": {"ID": c["ID"]}}),
    "code-str-200": lambda p, c: p.send(
        {"MPRPC": "0.1", "CODE": "200", "MESSAGE": {"ID": c["ID"], "RESULT": 1}}
    ),
    "code-float": lambda p, c: p.send(
        {"MPRPC": "0.1", "CODE": 200.0, "MESSAGE": {"ID": c["ID"], "RESULT": 1}}
    ),
    "code-huge": lambda p, c: p.send(
        {"MPRPC": "0.1", "CODE": 2**70, "MESSAGE": {"ID": c["ID"], "RESULT": 1}}
    ),
    "code-299": with_id(299),
    "code-700": with_id(700),
    "code-minus1": with_id(-1),
    "code-100-again": msg({"MPRPC": "0.1", "CODE": 100, "TIMEOUT": 0, "DEBUG": False}),
    "message-list": with_id(200, [1, 2]),
    "message-missing": msg({"MPRPC": "0.1", "CODE": 200}),
    "message-id-int": with_id(200, {"ID": 7, "RESULT": 1}),
    "message-id-list": with_id(200, {"ID": [1], "RESULT": 1}),
    "message-id-map": with_id(200, {"ID": {"a": 1}, "RESULT": 1}),
    "4xx-no-id": msg({"MPRPC": "0.1", "CODE": 404, "MESSAGE": {"EXCEPTION": "X"}}),
    "2xx-no-id": msg({"MPRPC": "0.1", "CODE": 200, "MESSAGE": {"RESULT": 1}}),
    "202-before-201": with_id(202),
    "206-without-stream": with_id(206),
    "nonstr-envelope-key": lambda p, c: p.send(
        {"MPRPC": "0.1", 7: "x", "CODE": 200, "MESSAGE": {"ID": c["ID"], "RESULT": 1}}
    ),
    "float-envelope-key": lambda p, c: p.send(
        {"MPRPC": "0.1", 1.5: "x", "CODE": 200, "MESSAGE": {"ID": c["ID"], "RESULT": 1}}
    ),
    "bin-key-in-message": lambda p, c: p.send(
        {"MPRPC": "0.1", "CODE": 200, "MESSAGE": {b"ID": c["ID"], "RESULT": 1}}
    ),
    "deep-1e5": lambda p, c: p.send_raw(
        p.frame(
            b"\x83\xa5MPRPC\xa30.1\xa4CODE\xcc\xc8\xa7MESSAGE\x82\xa2ID"
            + pack(c["ID"])
            + b"\xa6RESULT"
            + deep_msgpack(100_000)
        )
    ),
    "4xx-exception-not-str": with_id(404, None),
    "4xx-fields-wrong-types": lambda p, c: p.send(
        {
            "MPRPC": "0.1",
            "CODE": 404,
            "MESSAGE": {"ID": c["ID"], "EXCEPTION": 5, "MESSAGE": ["x"], "DATA": "nope"},
        }
    ),
    "4xx-data-frame-int": lambda p, c: p.send(
        {
            "MPRPC": "0.1",
            "CODE": 404,
            "MESSAGE": {"ID": c["ID"], "EXCEPTION": "E", "MESSAGE": "m", "DATA": {"FRAME": 3}},
        }
    ),
}


@pytest.mark.timeout(40)
@pytest.mark.parametrize("name", sorted(GARBAGE))
def test_garbage_reply_is_clear_and_same(name: str) -> None:
    a, b = both(after_call(GARBAGE[name]), limit=6)
    assert a != HANG and b != HANG, f"hang: sync={a} async={b}"
    # An extra, unknown envelope key (any type) with valid protocol fields may be ignored.
    tolerable = ("ok", 1) if name.endswith("envelope-key") else None
    for out in (a, b):
        assert out[0] in PROTO or out[0] == "RPCRuntimeError" or out == tolerable, out
    assert a == b, f"clients differ: sync={a} async={b}"


@pytest.mark.timeout(40)
@pytest.mark.parametrize("name", ["deep-1e5", "two-objects-in-frame", "list", "invalid-msgpack-c1"])
def test_garbage_reply_with_separator_framing(name: str) -> None:
    """The same garbage on a 0.0.3-style connection (no FEATURES, separator framing)."""
    a, b = both(after_call(GARBAGE[name], features="old"), limit=6)
    assert a != HANG and b != HANG, (a, b)
    for out in (a, b):
        assert out[0] in PROTO, out
    assert a == b, (a, b)


def test_unknown_code_4xx_5xx_mapping_same() -> None:
    a, b = both(after_call(with_id(499, None)), limit=6)
    assert a[0] == "CallError", a
    assert a == b, (a, b)
    a, b = both(after_call(msg({"MPRPC": "0.1", "CODE": 599})), limit=6)
    assert a[0] == "RpcException", a
    assert a == b, (a, b)


def then_reply(first: Send) -> Send:
    def send(peer: Peer, call: dict[str, Any]) -> None:
        first(peer, call)
        peer.reply(call, "late")

    return send


@pytest.mark.timeout(40)
@pytest.mark.parametrize(
    "name,first",
    [
        ("pong-garbage", msg({"MPRPC": "0.1", "CODE": 101, "HEARTBEAT": [1]})),
        ("unsolicited-pong", msg({"MPRPC": "0.1", "CODE": 101, "HEARTBEAT": "pong"})),
        ("unknown-id", lambda p, c: p.reply({"ID": "nope"}, 1)),
        (
            "unknown-id-4xx",
            lambda p, c: p.send(
                {"MPRPC": "0.1", "CODE": 404, "MESSAGE": {"ID": "nope", "EXCEPTION": "E"}}
            ),
        ),
        (
            "unknown-id-202",
            lambda p, c: p.send(
                {"MPRPC": "0.1", "CODE": 202, "MESSAGE": {"ID": "nope", "RESULT": 1}}
            ),
        ),
    ],
)
def test_ignorable_then_real_reply(name: str, first: Send) -> None:
    """Replies for unknown IDs are ignored per spec; the real reply must still arrive."""
    a, b = both(after_call(then_reply(first)), limit=6)
    for out in (a, b):
        assert out != HANG and (out == ("ok", "late") or out[0] in PROTO), out
    assert a == b, (a, b)


@pytest.mark.timeout(40)
def test_json_deeply_nested_debug_mode() -> None:
    """Debug (JSON) mode: a 100k-deep array must not be a RecursionError."""

    def send(peer: Peer, call: dict[str, Any]) -> None:
        body = '{{"MPRPC":"0.1","CODE":200,"MESSAGE":{{"ID":{},"RESULT":{}}}}}'.format(
            json.dumps(call["ID"]),
            "[" * 100_000 + "]" * 100_000,
        )
        peer.send_raw(peer.frame(body.encode()))

    a, b = both(after_call(send), limit=8, debug=True)
    assert a != HANG and b != HANG, (a, b)
    for out in (a, b):
        assert out[0] in PROTO, out
    assert a == b, (a, b)


@pytest.mark.timeout(40)
def test_json_invalid_debug_mode() -> None:
    a, b = both(after_call(raw(b'{"MPRPC": "0.1", "CODE": 2')), limit=6, debug=True)
    for out in (a, b):
        assert out != HANG and out[0] in PROTO, out
    assert a == b, (a, b)


@pytest.mark.timeout(40)
def test_json_nan_and_non_utf8_debug_mode() -> None:
    a, b = both(after_call(raw(b'{"MPRPC": "0.1", "CODE": NaN, "\xff": 1}')), limit=6, debug=True)
    for out in (a, b):
        assert out != HANG and out[0] in PROTO, out
    assert a == b, (a, b)


@pytest.mark.timeout(40)
def test_result_map_with_int_keys() -> None:
    """A RESULT map with integer keys is valid MessagePack: return it or a clear error."""
    a, b = both(after_call(with_id(200, None)), limit=6)  # warm-up shape
    a, b = both(
        after_call(
            lambda p, c: p.send(
                {"MPRPC": "0.1", "CODE": 200, "MESSAGE": {"ID": c["ID"], "RESULT": {1: "a"}}}
            )
        ),
        limit=6,
    )
    for out in (a, b):
        assert out != HANG and (out[0] == "ok" or out[0] in PROTO), out
    assert a == b, (a, b)


@pytest.mark.timeout(60)
def test_oversized_frame_without_separator_bounded() -> None:
    """0.0.3 framing: a peer that sends 8 MiB with no separator, client max 64 KiB."""

    def send(peer: Peer, call: dict[str, Any]) -> None:
        chunk = b"x" * 65536
        for _ in range(128):
            peer.send_raw(chunk)

    a, b = both(after_call(send, features="old"), limit=8, max_message_size=65536)
    for out in (a, b):
        assert out != HANG and out[0] in PROTO, out
    assert a == b, (a, b)


@pytest.mark.timeout(40)
def test_length_prefix_4gb() -> None:
    def send(peer: Peer, call: dict[str, Any]) -> None:
        peer.send_raw(struct.pack(">I", 0xFFFFFFFF) + b"abc")

    a, b = both(after_call(send), limit=6)
    for out in (a, b):
        assert out != HANG and out[0] in PROTO, out
    assert a == b, (a, b)


@pytest.mark.timeout(40)
def test_length_prefix_just_above_max() -> None:
    def send(peer: Peer, call: dict[str, Any]) -> None:
        peer.send_raw(struct.pack(">I", 1025) + b"a" * 1025)

    a, b = both(after_call(send), limit=6, max_message_size=1024)
    for out in (a, b):
        assert out != HANG and out[0] in PROTO, out
    assert a == b, (a, b)


@pytest.mark.timeout(60)
def test_compression_bomb() -> None:
    """zlib payload inflating to 200 MiB with max_message_size 1 MiB."""
    bomb_obj = zlib.compressobj(9)
    zeros = b"\x00" * (1 << 20)
    bomb = b"".join(bomb_obj.compress(zeros) for _ in range(200)) + bomb_obj.flush()
    del zeros

    def send(peer: Peer, call: dict[str, Any]) -> None:
        peer.send_raw(peer.frame(bomb))

    import tracemalloc

    tracemalloc.start()
    try:
        a, b = both(after_call(send), limit=10, compression="zlib", max_message_size=1 << 20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    for out in (a, b):
        assert out != HANG and out[0] in PROTO, out
    assert a == b, (a, b)
    assert peak < 32 << 20, f"peak traced memory {peak >> 20} MiB"


@pytest.mark.timeout(40)
def test_truncated_compressed_payload() -> None:
    payload = zlib.compress(pack({"MPRPC": "0.1", "CODE": 200}))[:-4]
    a, b = both(after_call(raw(payload)), limit=6, compression="zlib")
    for out in (a, b):
        assert out != HANG and out[0] in PROTO, out
    assert a == b, (a, b)


@pytest.mark.timeout(40)
def test_uncompressed_reply_to_compressing_client() -> None:
    a, b = both(
        after_call(
            lambda p, c: p.send_raw(
                p.frame(
                    pack({"MPRPC": "0.1", "CODE": 200, "MESSAGE": {"ID": c["ID"], "RESULT": 1}})
                )
            )
        ),
        limit=6,
        compression="lzma",
    )
    for out in (a, b):
        assert out != HANG and out[0] in PROTO, out
    assert a == b, (a, b)


_ = msgpack
