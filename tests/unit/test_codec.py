from __future__ import annotations

import zlib
from typing import Any

import pytest

from pymprpc.errors import LocalProtocolError, RemoteProtocolError
from pymprpc.protocol import Codec, Compression

MESSAGE = {"MPRPC": "0.1", "ID": "x", "METHOD": "m", "ARGS": [1, 2.5, "é", None, [True]]}


@pytest.mark.parametrize("json", [False, True])
@pytest.mark.parametrize("compression", [None, *Compression])
def test_roundtrip_and_detection(json: bool, compression: Compression | None) -> None:
    codec = Codec(json=json, compression=compression)
    payload = codec.encode(MESSAGE)
    assert codec.decode(payload) == MESSAGE
    detected = Codec.detect(payload)
    assert (detected.json, detected.compression) == (json, compression)


def test_msgpack_carries_bytes_and_nested_maps() -> None:
    codec = Codec()
    msg = {"MPRPC": "0.1", "X": {"a": {"b": b"\x00\xff"}}}
    assert codec.decode(codec.encode(msg)) == msg


def test_json_cannot_encode_bytes() -> None:
    with pytest.raises(LocalProtocolError, match="JSON"):
        Codec(json=True).encode({"X": b"\x00"})


def test_compression_bomb_is_refused() -> None:
    bomb = zlib.compress(b"\x80" + b"\x00" * 10_000_000)
    with pytest.raises(RemoteProtocolError, match="decompressed message exceeds") as info:
        Codec(compression=Compression.ZLIB, max_size=1_000_000).decode(bomb)
    assert info.value.reply_code == 505


@pytest.mark.parametrize("compression", list(Compression))
def test_truncated_compressed_data(compression: Compression) -> None:
    payload = Codec(compression=compression).encode(MESSAGE)
    with pytest.raises(RemoteProtocolError) as info:
        Codec(compression=compression).decode(payload[: len(payload) // 2])
    assert info.value.reply_code == 506


@pytest.mark.parametrize("payload", [b"", b"\x01\x02", b"hello", b"[1, 2]"])
def test_detect_rejects_non_maps(payload: bytes) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        Codec.detect(payload)
    assert info.value.reply_code == 506


def test_garbage_msgpack_is_a_syntax_error() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        Codec().decode(b"\x81\xc1")
    assert info.value.reply_code == 506
    # msgpack's own error for a reserved byte says nothing: the message does.
    assert str(info.value).endswith("a byte that no MessagePack value starts with (such as 0xc1)")


def _levels(n: int) -> Any:
    """`n` levels of maps and arrays: a map around n - 1 arrays around a scalar."""
    value: Any = 0
    for _ in range(n - 1):
        value = [value]
    return {"X": value}


@pytest.mark.parametrize(("json", "limit"), [(False, 1024), (True, 500)])
def test_nesting_bound_is_exact_and_the_same_on_every_python(json: bool, limit: int) -> None:
    codec = Codec(json=json)
    payload = codec.encode(_levels(limit))
    assert codec.encode(codec.decode(payload)) == payload  # read back whole (== recurses)
    with pytest.raises(LocalProtocolError, match=f"nests deeper than .*{limit} levels"):
        codec.encode(_levels(limit + 1))


def test_json_wide_values_with_many_brackets_are_sent() -> None:
    wide = {"rows": [{"a": [i]} for i in range(2000)], "deep": _levels(499)}
    assert Codec(json=True).decode(Codec(json=True).encode(wide)) == wide


def test_msgpack_refusal_past_the_search_depth_is_not_called_nesting() -> None:
    value: Any = {1, 2}
    for _ in range(700):
        value = [value]
    with pytest.raises(LocalProtocolError) as info:
        Codec().encode({"X": value})
    assert "nests deeper" not in str(info.value)
    assert "cannot encode as MessagePack" in str(info.value)
