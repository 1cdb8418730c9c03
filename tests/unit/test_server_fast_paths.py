"""The server core's fused fast paths agree with the general ones on any input: a flat
result's reply from pre-packed parts (`ServerConnection.send_result`) is the bytes, the
chunks and the errors that packing `messages.result` and framing it give."""

from __future__ import annotations

from typing import Any
from unittest import mock

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pymprpc.protocol import Credentials, ServerConnection, ServerSettings, connection

SURROGATE = "\ud800"  # packs in no msgpack string: the general path's 405


def ready(max_message_size: int, features: list[str] | None) -> ServerConnection:
    conn = ServerConnection(
        ServerSettings(max_message_size=max_message_size), Credentials([("u", "p")])
    )
    auth: dict[str, Any] = {"MPRPC": "0.1", "AUTH": {"USERNAME": "u", "PASSWORD": "p"}}
    if features is not None:
        auth["FEATURES"] = features
    conn.receive_data(msgpack.packb(auth) + b"##PRO-END##")
    conn.chunks_to_send()
    return conn


def in_flight(conn: ServerConnection, id: str) -> None:
    """Make `id` a call in flight, as receiving it would."""
    conn._inflight[id] = False


flat = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),  # beyond 64 bits too: 405
    st.floats(allow_nan=True),
    st.text(),
    st.text().map(lambda t: t + SURROGATE),
    # Around the one-chunk limit (64 KiB: 2 bytes a character) and the size limits.
    st.sampled_from([90, 32_700, 32_740, 32_760, 32_800, 36_000]).map(lambda n: "é" * n),
)
others = st.one_of(
    st.binary(max_size=4),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.one_of(st.text(min_size=1), st.integers(0, 300).map(lambda n: "i" * (n + 1))),
            st.one_of(flat, others),
            st.booleans(),
            st.one_of(st.none(), st.just({"k": "v"}), st.just({"k": 1})),
        ),
        min_size=1,
        max_size=4,
    ),
    st.sampled_from([200, 70_000, 1 << 20]),
    st.sampled_from([None, ["length-framing"], ["length-framing", "metadata"]]),
)
def test_a_flat_result_is_sent_as_the_general_path_sends_it(
    replies: list[tuple[str, Any, bool, dict[str, Any] | None]],
    max_message_size: int,
    features: list[str] | None,
) -> None:
    agree(replies, max_message_size, features)


def test_flat_results_around_the_chunk_and_size_limits_are_sent_as_the_general_path_does() -> None:
    """Strings whose reply is just under, at and over 64 KiB (one chunk, or a prefix and
    a payload) and over the message size limit (405)."""
    for limit in (65_000, 65_536, 1 << 20):
        for n in range(32_740, 32_800, 3):
            for id in ("a", "b" * 40):
                agree([(id, "é" * n, False, None)], limit, ["length-framing"])
                agree([(id, "é" * n + "x", False, None)], limit, ["length-framing"])


def agree(
    replies: list[tuple[str, Any, bool, dict[str, Any] | None]],
    max_message_size: int,
    features: list[str] | None,
) -> None:
    """Send `replies` on a connection with the fast path and on one without it (no type
    is flat there), and compare everything that comes out."""
    fast, general = ready(max_message_size, features), ready(max_message_size, features)
    for id, value, deprecated, metadata in replies:
        for conn in (fast, general):
            in_flight(conn, id)
        fast.send_result(id, value, deprecated=deprecated, metadata=metadata)
        with mock.patch.object(connection, "_FLAT_TYPES", frozenset()):
            general.send_result(id, value, deprecated=deprecated, metadata=metadata)
        assert fast.pending_bytes == general.pending_bytes
        assert fast.chunks_to_send() == general.chunks_to_send()
        assert fast._inflight == general._inflight
        assert fast.closed == general.closed


def test_a_flat_result_is_one_chunk_packed_once() -> None:
    """The reply of an `add` packs only its MESSAGE map (one Packer.pack, no
    messages.result map): counted by wrapping the thread's packer."""
    conn = ready(1 << 20, ["length-framing"])
    conn.send_result("warm", 0)  # not in flight: nothing sent, the packer made
    in_flight(conn, "a")
    packed: list[Any] = []
    real = msgpack.Packer(use_bin_type=True)

    class Counting:
        def pack(self, obj: Any) -> bytes:
            packed.append(obj)
            return real.pack(obj)

    with mock.patch.object(connection._packers, "packer", Counting()):
        conn.send_result("a", 3)
    assert packed == [{"ID": "a", "RESULT": 3}]
    [chunk] = conn.chunks_to_send()
    assert msgpack.unpackb(chunk[4:]) == {
        "MPRPC": "0.1",
        "CODE": 200,
        "MESSAGE": {"ID": "a", "RESULT": 3},
    }
