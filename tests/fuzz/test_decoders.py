"""Property tests: the sans-IO decoders take any bytes, split anywhere, and only ever raise
the protocol's own exceptions (or none: the connections turn errors into replies)."""

from __future__ import annotations

import contextlib
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import OLD_WELCOME, pack
from pymprpc.errors import RemoteProtocolError
from pymprpc.protocol import (
    SEPARATOR,
    ClientConnection,
    Codec,
    Compression,
    Credentials,
    LengthFramer,
    SeparatorFramer,
    ServerConnection,
    ServerSettings,
)

FAST = settings(max_examples=300, deadline=2000, suppress_health_check=[HealthCheck.too_slow])

AUTH = pack({"MPRPC": "0.1", "AUTH": {"USERNAME": "u", "PASSWORD": "p"}}) + SEPARATOR
WELCOME = pack(OLD_WELCOME) + SEPARATOR

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)

# Plausible messages, so mutations land near valid structure rather than only on noise.
messages = st.fixed_dictionaries(
    {"MPRPC": st.sampled_from(["0.1", "0.2", 1])},
    optional={
        "ID": st.text(max_size=6) | st.integers(-1000, 1000),
        "METHOD": st.text(max_size=6) | st.none(),
        "ARGS": st.lists(json_values, max_size=3) | json_values,
        "KWARGS": st.dictionaries(st.text(max_size=4), json_values, max_size=3) | json_values,
        "RETURN": st.booleans() | json_values,
        "HEARTBEAT": st.sampled_from(["ping", "pong", 1]),
        "CODE": st.sampled_from([100, 101, 200, 201, 202, 206, 300, 301, 400, 404, 501, 503, 7]),
        "MESSAGE": st.dictionaries(
            st.sampled_from(["ID", "RESULT", "MESSAGE", "DATA"]), json_values, max_size=3
        )
        | json_values,
        "CANCEL": st.booleans(),
        "DEADLINE": json_values,
    },
)


def splits(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, start = [], 0
    for p in points:
        pieces.append(data[start:p])
        start = p
    pieces.append(data[start:])
    return pieces


def mutate(data: bytes, flips: list[tuple[int, int]]) -> bytes:
    if not data:
        return data
    buf = bytearray(data)
    for pos, value in flips:
        buf[pos % len(buf)] = value
    return bytes(buf)


stream_parts = st.lists(
    messages.map(lambda m: pack(m) + SEPARATOR) | st.binary(max_size=40), max_size=6
)


@FAST
@given(
    stream_parts,
    st.lists(st.integers(0, 10_000), max_size=8),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=4),
    st.booleans(),
)
def test_server_connection_never_raises(
    parts: list[bytes], cuts: list[int], flips: list[tuple[int, int]], authed: bool
) -> None:
    conn = ServerConnection(ServerSettings(max_message_size=4096), Credentials([("u", "p")]))
    data = (AUTH if authed else b"") + mutate(b"".join(parts), flips)
    for piece in splits(data, cuts):
        conn.receive_data(piece)
        conn.chunks_to_send()
        # Outcomes for whatever calls were accepted must always be sendable.
        for id in list(conn._inflight):
            conn.send_result(id, None)


@FAST
@given(
    stream_parts,
    st.lists(st.integers(0, 10_000), max_size=8),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=4),
)
def test_client_connection_never_raises(
    parts: list[bytes], cuts: list[int], flips: list[tuple[int, int]]
) -> None:
    conn = ClientConnection("u", "p", max_message_size=4096)
    conn.start()
    data = WELCOME + mutate(b"".join(parts), flips)
    for piece in splits(data, cuts):
        conn.receive_data(piece)


@FAST
@given(st.binary(max_size=300), st.lists(st.integers(0, 400), max_size=6))
def test_framers_raise_only_protocol_errors(data: bytes, cuts: list[int]) -> None:
    for framer in (SeparatorFramer(max_size=64), LengthFramer(max_size=64)):
        try:
            for piece in splits(data, cuts):
                for frame in framer.feed(piece):
                    assert len(frame) <= 64
        except RemoteProtocolError:
            pass


@FAST
@given(st.binary(max_size=300), st.booleans(), st.sampled_from([None, *Compression]))
def test_codec_raises_only_protocol_errors(data: bytes, json: bool, comp: Any) -> None:
    for attempt in (
        lambda: Codec(json=json, compression=comp, max_size=1024).decode(data),
        lambda: Codec.detect(data, 1024),
    ):
        with contextlib.suppress(RemoteProtocolError):
            attempt()


@FAST
@given(
    messages,
    st.booleans(),
    st.sampled_from([None, *Compression]),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=3),
)
def test_codec_on_mutated_valid_payloads(
    msg: dict[str, Any], json: bool, comp: Any, flips: list[tuple[int, int]]
) -> None:
    codec = Codec(json=json, compression=comp, max_size=4096)
    try:
        payload = codec.encode(msg)
    except ValueError:
        return  # e.g. an integer JSON or MessagePack cannot carry
    assert codec.decode(payload) == msg
    with contextlib.suppress(RemoteProtocolError):
        codec.decode(mutate(payload, flips))
