"""Frames and messages between the server and its workers; the pool refusing values."""

from __future__ import annotations

import asyncio
import pickle
import threading
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pymprpc.context import CallContext, Metadata
from pymprpc.errors import RPCRuntimeError
from pymprpc.server.workers import ProcessPool, TargetTable, framing

frames_strategy = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=2**64 - 1),
        st.integers(min_value=0, max_value=255),
        st.one_of(
            st.binary(max_size=300),
            # Around and above the size that gets a buffer of its own.
            st.integers(min_value=60_000, max_value=300_000).map(lambda n: bytes([n % 251]) * n),
        ),
    ),
    max_size=12,
)


def feed(reader: framing.FrameReader, data: bytes, cuts: list[int]) -> list[tuple[int, int, bytes]]:
    """Deliver `data` in pieces cut at `cuts`, as recv_into would, limited by the buffer."""
    out: list[tuple[int, int, bytes]] = []
    points = sorted({c % (len(data) + 1) for c in cuts} | {len(data)})
    pos = 0
    for point in points:
        while pos < point:
            buf = reader.buffer()
            n = min(len(buf), point - pos)
            buf[:n] = data[pos : pos + n]
            del buf
            pos += n
            out += [(i, k, bytes(b)) for i, k, b in reader.received(n)]
    return out


@settings(max_examples=60, deadline=None)
@given(frames_strategy, st.lists(st.integers(min_value=0, max_value=10**7), max_size=20))
def test_frames_survive_any_split(frames: list[tuple[int, int, bytes]], cuts: list[int]) -> None:
    data = b"".join(bytes(part) for i, k, body in frames for part in framing.raw_frame(i, k, body))
    assert feed(framing.FrameReader(), data, cuts) == frames


@settings(max_examples=60, deadline=None)
@given(frames_strategy)
def test_frames_read_one_whole_frame_at_a_time(frames: list[tuple[int, int, bytes]]) -> None:
    """Each read exactly one frame (a worker's usual read: taken whole, without the
    general loop) gives the same frames as any other split."""
    reader = framing.FrameReader()
    out: list[tuple[int, int, bytes]] = []
    for i, k, body in frames:
        data = b"".join(bytes(part) for part in framing.raw_frame(i, k, body))
        out += feed(reader, data, [])
    assert out == frames


@pytest.mark.parametrize("extra", [b"", b"\x00" * 5])
def test_a_kind_the_peer_may_not_send_is_refused_read_whole_or_not(extra: bytes) -> None:
    reader = framing.FrameReader(framing.FROM_WORKER)
    data = b"".join(bytes(part) for part in framing.raw_frame(1, framing.CALL, b"body")) + extra
    with pytest.raises(framing.ChannelError, match="unknown kind 0"):
        feed(reader, data, [])


def test_large_bytes_travel_out_of_band_and_come_back_as_bytes() -> None:
    big = bytes(range(256)) * 1024  # 256 KiB
    small = b"tiny"
    buffers = framing.encode(7, framing.CALL, ["k", (), [framing.out_of_band(big), small], {}])
    data = b"".join(bytes(b) for b in buffers)
    frames = feed(framing.FrameReader(), data, [100, 70_000])
    assert [(i, k) for i, k, _ in frames] == [(7, framing.BUFFER), (7, framing.CALL)]
    # The big value is not copied into the pickle: the message itself stays small.
    assert len(frames[1][2]) < 200
    message = framing.decode(frames[1][2], [bytearray(frames[0][2])])
    assert message == ["k", (), [big, small], {}]
    assert type(message[2][0]) is bytes


def test_an_unpicklable_argument_is_refused_before_any_worker_sees_it() -> None:
    async def main() -> None:
        pool = ProcessPool(TargetTable(), 1)
        try:
            with pytest.raises(RPCRuntimeError, match="arguments of 'f' cannot be sent"):
                await pool.run("f", "key", (), [threading.Lock()], {})
        finally:
            pool.shutdown()

    asyncio.run(asyncio.wait_for(main(), 20))


def test_a_call_context_crosses_whole() -> None:
    ctx = CallContext(
        id="c1",
        method="m",
        peer=("127.0.0.1", 4000),
        user="bob",
        peer_certificate={"subject": ((("commonName", "bob"),),)},
        deadline=12.5,
        metadata=Metadata({"k": "v"}),
        returns=False,
        streaming=True,
    )
    data = pickle.dumps(framing.pack_context(ctx), framing.PICKLE)
    back = framing.unpack_context(pickle.loads(data))
    assert back == ctx and back is not None and back.metadata == {"k": "v"}
    assert framing.unpack_context(framing.pack_context(None)) is None
    plain = CallContext(id="c2", method="m")
    assert framing.unpack_context(framing.pack_context(plain)) == plain


def feed_raw(reader: framing.FrameReader, data: bytes) -> list[tuple[int, int, Any]]:
    """As `feed`, but the bodies as the reader gives them (no copies)."""
    out: list[tuple[int, int, Any]] = []
    pos = 0
    while pos < len(data):
        buf = reader.buffer()
        n = min(len(buf), len(data) - pos)
        buf[:n] = data[pos : pos + n]
        del buf
        pos += n
        out += reader.received(n)
    return out


def _receive(reader: framing.FrameReader, call_id: int, value: Any) -> Any:
    out = framing.encode(call_id, framing.OK, framing.out_of_band(value))
    frames = feed_raw(reader, b"".join(bytes(b) for b in out))
    buffers = [body for _, kind, body in frames if kind == framing.BUFFER]
    return framing.decode(frames[-1][2], buffers, reader)


@pytest.mark.parametrize("size", [framing._BIG - 1, framing._BIG, 300_000])
@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_binary_values_keep_their_type_and_bytes_around_the_threshold(
    size: int, kind: type
) -> None:
    reader = framing.FrameReader()
    values = []
    for i in range(3):  # the same size again: the second and third reuse buffers
        raw = bytes([(i * 7 + j) % 256 for j in range(256)]) * (size // 256) + b"x" * (size % 256)
        value = kind(raw) if kind is not memoryview else memoryview(bytearray(raw))
        back = _receive(reader, i, value)
        assert type(back) is kind
        assert bytes(back) == raw
        values.append((back, raw))
    for back, raw in values:  # nothing received later overwrote an earlier value
        assert bytes(back) == raw


def test_a_buffer_is_reused_only_once_its_value_was_copied_out() -> None:
    reader = framing.FrameReader()
    size = 100_000
    first = _receive(reader, 1, b"a" * size)  # copied out: its buffer is kept
    spare = reader._spare
    assert spare is not None and len(spare) == size
    second = _receive(reader, 2, bytearray(b"b" * size))  # is the spare itself
    assert second is spare and reader._spare is None
    third = _receive(reader, 3, memoryview(b"c" * size))  # read-only view of a new buffer
    assert third.readonly and reader._spare is None
    _receive(reader, 4, b"d" * size)
    assert (first, second, bytes(third)) == (b"a" * size, b"b" * size, b"c" * size)
    assert reader._spare is not None  # the fourth's buffer, copied out


def test_a_buffer_lent_and_not_given_back_is_not_reused() -> None:
    """Frames read ahead (a worker reads up to PIPELINE calls) each get a buffer."""
    reader = framing.FrameReader()
    size = 70_000
    _receive(reader, 1, b"a" * size)
    data = b"".join(
        bytes(b)
        for i in (2, 3)
        for b in framing.encode(i, framing.OK, framing.out_of_band(bytes([i]) * size))
    )
    frames = feed_raw(reader, data)
    bodies = [body for _, kind, body in frames if kind == framing.BUFFER]
    assert len(bodies) == 2 and bodies[0] is not bodies[1]
    assert bytes(bodies[0]) == b"\2" * size and bytes(bodies[1]) == b"\3" * size


def identity(value: Any) -> Any:
    return value


def type_name(value: Any) -> str:
    return type(value).__name__


def test_binary_values_cross_real_workers_both_ways_byte_exact() -> None:
    """bytes, bytearray and memoryview arguments and results, just below and above the
    out-of-band threshold and at 1 MiB, each size three times with new contents (the
    later ones reuse receive buffers): types kept, nothing overwritten afterwards."""

    async def main() -> None:
        targets = TargetTable()
        targets.publish("identity", identity)
        targets.publish("type_name", type_name)
        pool = ProcessPool(targets, 1)
        kept: list[tuple[Any, bytes]] = []
        try:
            for size in (framing._BIG - 1, framing._BIG, 1 << 20):
                for kind in (bytes, bytearray, memoryview):
                    for i in range(3):
                        raw = bytes([i + 1]) * size
                        value = memoryview(bytearray(raw)) if kind is memoryview else kind(raw)
                        name = await pool.run("type_name", "type_name", (), [value], {})
                        assert name == kind.__name__
                        back = await pool.run("identity", "identity", (), [value], {})
                        assert type(back) is kind and bytes(back) == raw
                        kept.append((back, raw))
            for back, raw in kept:
                assert bytes(back) == raw
        finally:
            pool.shutdown()

    asyncio.run(asyncio.wait_for(main(), 60))
