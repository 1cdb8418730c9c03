from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pymprpc.errors import LocalProtocolError, RemoteProtocolError
from pymprpc.protocol import SEPARATOR, LengthFramer, SeparatorFramer
from pymprpc.protocol.framing import coalesce


def test_separator_frames_split_at_every_point() -> None:
    wire = b"abc" + SEPARATOR + b"" + SEPARATOR + b"defgh" + SEPARATOR
    for cut in range(len(wire) + 1):
        framer = SeparatorFramer()
        frames = framer.feed(wire[:cut]) + framer.feed(wire[cut:])
        assert frames == [b"abc", b"", b"defgh"], cut


def test_separator_fed_byte_by_byte() -> None:
    framer = SeparatorFramer()
    frames: list[bytes] = []
    for b in b"hello" + SEPARATOR + b"world" + SEPARATOR:
        frames += framer.feed(bytes([b]))
    assert frames == [b"hello", b"world"]


def test_separator_buffer_is_bounded() -> None:
    framer = SeparatorFramer(max_size=100)
    framer.feed(b"x" * 100)
    with pytest.raises(RemoteProtocolError, match="maximum message size"):
        framer.feed(b"x" * (len(SEPARATOR) + 1))


def test_separator_refuses_payload_containing_separator() -> None:
    with pytest.raises(LocalProtocolError, match="length framing"):
        SeparatorFramer().frame(b"a" + SEPARATOR + b"b")


@pytest.mark.parametrize(
    "payload", [b"##PRO-END", b"a##PRO-END#", b"x##PRO-END", b"\x92##PRO-END#"]
)
def test_separator_refuses_payload_ending_with_the_start_of_a_separator(payload: bytes) -> None:
    # payload + separator holds a separator that ends before the payload does: a reader
    # would cut the frame there (review 18).
    assert (payload + SEPARATOR).find(SEPARATOR) < len(payload)
    with pytest.raises(LocalProtocolError, match="length framing"):
        SeparatorFramer().frame(payload)


# Payloads made of pieces of the separator, where overlaps hide.
_pieces = st.sampled_from([b"#", b"##", b"##PRO", b"-END", b"-END#", b"END##", b"x", b"\x00"])


@given(st.lists(_pieces, max_size=8).map(b"".join))
def test_separator_frames_whatever_it_accepts_and_reads_it_back(payload: bytes) -> None:
    """`frame` accepts a payload exactly when the reader would end the frame at the
    separator it appends, and that frame is then read back whole."""
    framer = SeparatorFramer()
    readable = (payload + SEPARATOR).find(SEPARATOR) == len(payload)
    try:
        wire = b"".join(framer.frame(payload))
    except LocalProtocolError:
        assert not readable
        return
    assert readable
    assert SeparatorFramer().feed(wire + b"next" + SEPARATOR) == [payload, b"next"]


def test_length_frames_split_at_every_point() -> None:
    framer = LengthFramer()
    wire = b"".join([*framer.frame(b"abc"), *framer.frame(b""), *framer.frame(SEPARATOR * 3)])
    for cut in range(len(wire) + 1):
        f = LengthFramer()
        assert f.feed(wire[:cut]) + f.feed(wire[cut:]) == [b"abc", b"", SEPARATOR * 3], cut


def test_length_prefix_is_big_endian() -> None:
    assert LengthFramer().frame(b"\x01" * 258)[0][:4] == b"\x00\x00\x01\x02"


def test_length_frame_over_limit_is_refused_before_buffering() -> None:
    framer = LengthFramer(max_size=10)
    with pytest.raises(RemoteProtocolError, match="exceeds the maximum message size of 10"):
        framer.feed(b"\x00\x00\x00\x0b")


def test_take_buffer_returns_unframed_bytes() -> None:
    framer = SeparatorFramer()
    assert framer.feed(b"partial") == []
    assert framer.take_buffer() == b"partial"
    assert framer.feed(b"x" + SEPARATOR) == [b"x"]


def test_complete_separator_frame_over_limit_is_refused() -> None:
    framer = SeparatorFramer(max_size=10)
    with pytest.raises(RemoteProtocolError, match="frame of 11 bytes"):
        framer.feed(b"x" * 11 + SEPARATOR)


def test_length_frames_arrive_in_many_pieces_and_are_copied_once() -> None:
    framer = LengthFramer()
    payload = bytes(range(256)) * 4096
    wire = b"".join([*framer.frame(payload), *framer.frame(b"tail")])
    frames = []
    for i in range(0, len(wire), 65536):
        frames += framer.feed(wire[i : i + 65536])
    assert [bytes(f) for f in frames] == [payload, b"tail"]


def test_coalesce_joins_small_chunks_and_keeps_large_ones() -> None:
    big = b"x" * 70_000
    assert coalesce([b"a", b"b", big, b"c"]) == [b"ab", big, b"c"]
    assert coalesce([b"only"]) == [b"only"]
