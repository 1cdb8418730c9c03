"""Frames between the server and its worker processes (sans-IO).

A frame is a 17-byte header (body length, call ID, kind) followed by a pickled body. The
call ID lives in the header so that a body which cannot be unpickled still fails exactly
its own call. Small frames are cut from one reusable receive area; a large frame is
received straight into a buffer of its final size, so a 50 MiB argument is copied from
the kernel once and never concatenated.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Final

HEADER: Final = struct.Struct("<QQB")  # body length, call ID, kind

# Kinds of frame.
CALL: Final = 0  # server -> worker: pickled (key, path, args, kwargs)
OK: Final = 1  # worker -> server: pickled result
ERROR: Final = 2  # worker -> server: pickled (type name, message, traceback text)

_AREA: Final = 256 * 1024  # receive area for small frames
_BIG: Final = 64 * 1024  # frames at least this large get a buffer of their own


def frame(call_id: int, kind: int, body: bytes) -> tuple[bytes, bytes]:
    """The buffers to write for one frame (header and body, not concatenated)."""
    return HEADER.pack(len(body), call_id, kind), body


class FrameReader:
    """Splits a byte stream into `(call_id, kind, body)` frames.

    Use: `n = sock.recv_into(reader.buffer())`, then `reader.received(n)`; an empty read
    means the peer closed. `buffer()` is valid until the next call to `received`.
    """

    def __init__(self) -> None:
        self._area = bytearray(_AREA)
        self._start = 0  # first unparsed byte in the area
        self._end = 0  # end of received bytes in the area
        self._big: bytearray | None = None  # body of a large frame being received
        self._big_pos = 0
        self._big_head: tuple[int, int] = (0, 0)  # its call ID and kind

    @property
    def receiving_large_frame(self) -> bool:
        """Whether a large frame is partly received (more reads are worthwhile)."""
        return self._big is not None

    def buffer(self) -> memoryview:
        """Where the next read should put its bytes."""
        if self._big is not None:
            return memoryview(self._big)[self._big_pos :]
        if self._end == len(self._area):
            # Only a partial small frame (or header) is left: move it to the front.
            left = self._end - self._start
            self._area[:left] = self._area[self._start : self._end]
            self._start, self._end = 0, left
        return memoryview(self._area)[self._end :]

    def received(self, n: int) -> list[tuple[int, int, bytes | bytearray]]:
        """Account for `n` bytes read into `buffer()`; the frames now complete."""
        frames: list[tuple[int, int, bytes | bytearray]] = []
        if self._big is not None:
            self._big_pos += n
            if self._big_pos < len(self._big):
                return frames
            call_id, kind = self._big_head
            frames.append((call_id, kind, self._big))
            self._big = None
            return frames
        self._end += n
        area, size = self._area, HEADER.size
        while self._end - self._start >= size:
            length, call_id, kind = HEADER.unpack_from(area, self._start)
            body_start = self._start + size
            available = self._end - body_start
            if length >= _BIG:
                # Its own buffer: copy what is here, the rest is read straight into it.
                big = bytearray(length)
                have = min(available, length)
                big[:have] = area[body_start : body_start + have]
                self._start = body_start + have
                if have == length:
                    frames.append((call_id, kind, big))
                    continue
                self._big, self._big_pos, self._big_head = big, have, (call_id, kind)
                break
            if available < length:
                break
            frames.append((call_id, kind, bytes(area[body_start : body_start + length])))
            self._start = body_start + length
        if self._start == self._end:
            self._start = self._end = 0
        return frames


def advance(buffers: list[bytes | memoryview], sent: int) -> None:
    """Drop `sent` bytes from the front of `buffers` (after a partial write), in place."""
    dropped = 0
    for buf in buffers:
        size = len(buf)
        if sent < size:
            break
        sent -= size
        dropped += 1
    del buffers[:dropped]
    if sent:
        buffers[0] = memoryview(buffers[0])[sent:]


def total(buffers: Sequence[bytes | memoryview]) -> int:
    """Bytes in `buffers`."""
    return sum(len(b) for b in buffers)
