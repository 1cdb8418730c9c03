"""Property tests of the decoder limits: collection lengths, nesting, decompressed size and
the pre-auth message size hold for any input, and values within them round-trip."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import pack
from pymprpc.errors import RemoteProtocolError
from pymprpc.protocol import (
    SEPARATOR,
    Codec,
    Compression,
    Credentials,
    ServerConnection,
    ServerSettings,
)

FAST = settings(max_examples=200, deadline=2000, suppress_health_check=[HealthCheck.too_slow])

keys = st.none() | st.booleans() | st.integers(-1000, 1000) | st.text(max_size=6)
values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=10)
    | st.binary(max_size=10),
    lambda children: st.lists(children, max_size=8) | st.dictionaries(keys, children, max_size=8),
    max_leaves=40,
)


def longest(value: Any) -> int:
    """The longest array or map anywhere in `value`."""
    if isinstance(value, list):
        return max([len(value), *(longest(v) for v in value)])
    if isinstance(value, dict):
        return max([len(value), *(longest(v) for v in value.values())])
    return 0


@FAST
@given(values, st.integers(0, 10))
def test_collections_within_the_limit_round_trip_and_longer_ones_are_505(
    value: Any, max_items: int
) -> None:
    codec = Codec(max_items=max_items)
    payload = codec.encode({"V": value})
    if max(1, longest(value)) <= max_items:
        assert codec.decode(payload) == {"V": value}
    else:
        with pytest.raises(RemoteProtocolError) as info:
            codec.decode(payload)
        assert info.value.reply_code == 505


@FAST
@given(st.integers(0, 3000), st.sampled_from([b"\x91", b"\x81\x01"]))
def test_any_nesting_depth_decodes_or_is_refused(depth: int, level: bytes) -> None:
    payload = level * depth + b"\xc0"
    try:
        Codec().decode(payload)
    except RemoteProtocolError as exc:
        assert exc.reply_code == 506
        assert depth > 500  # msgpack's own stack limit, not a false refusal


@FAST
@given(st.integers(0, 5000), st.integers(1, 4000), st.sampled_from(list(Compression)))
def test_decompressed_size_never_exceeds_the_budget(size: int, budget: int, kind: Any) -> None:
    plain = pack({"X": b"\x00" * size})
    payload = Codec(compression=kind).encode({"X": b"\x00" * size})
    codec = Codec(compression=kind, max_size=budget)
    if len(plain) <= budget:
        assert codec.decode(payload) == {"X": b"\x00" * size}
    else:
        with pytest.raises(RemoteProtocolError, match="exceeds the maximum message size") as info:
            codec.decode(payload)
        assert info.value.reply_code == 505


@FAST
@given(
    st.lists(
        st.binary(min_size=1, max_size=300)
        | st.builds(lambda n, b: bytes([b]) * n, st.integers(1, 3000), st.integers(0, 255))
        | st.just(SEPARATOR),
        max_size=12,
    ),
    st.integers(16, 2000),
)
def test_before_auth_a_connection_buffers_at_most_the_pre_auth_limit(
    pieces: list[bytes], limit: int
) -> None:
    conn = ServerConnection(ServerSettings(max_auth_message_size=limit), Credentials([("u", "p")]))
    for piece in pieces:
        conn.receive_data(piece)
        assert conn.buffered_bytes <= limit + len(SEPARATOR)
