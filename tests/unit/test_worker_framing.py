"""Frames and messages between the server and its workers; the pool refusing values."""

from __future__ import annotations

import asyncio
import pickle
import threading

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
