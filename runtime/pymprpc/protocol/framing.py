"""Frame splitting and building: legacy separator framing and negotiated length framing.

A framer turns a byte stream into payloads (`feed`) and a payload into wire bytes
(`frame`). Both bound what they buffer by the maximum message size, so a peer that never
sends a separator or announces a huge length cannot make us grow without limit.
"""

from __future__ import annotations

import struct
from typing import Protocol

from ..errors import LocalProtocolError, RemoteProtocolError
from .constants import DEFAULT_MAX_MESSAGE_SIZE, LENGTH_PREFIX_SIZE, SEPARATOR

_LENGTH = struct.Struct(">I")
_SEPARATOR_SIZE = len(SEPARATOR)

# A received payload: bytes, or a view into the receive buffer (no copy).
Payload = bytes | memoryview


_COALESCE_LIMIT = 64 * 1024


def coalesce(chunks: list[bytes]) -> list[bytes]:
    """Join runs of small chunks (fewer writes); pass large ones through (no copies)."""
    if len(chunks) <= 1:
        return chunks
    out: list[bytes] = []
    run: list[bytes] = []
    for chunk in chunks:
        if len(chunk) >= _COALESCE_LIMIT:
            if run:
                out.append(b"".join(run))
                run = []
            out.append(chunk)
        else:
            run.append(chunk)
    if run:
        out.append(b"".join(run))
    return out


class Framer(Protocol):
    """What a connection needs from a framing."""

    max_size: int
    overhead: int  # bytes a frame adds to its payload (for message sizes)

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as a payload (a partial frame)."""
        ...

    def feed(self, data: bytes) -> list[Payload]:
        """Buffer `data`; return every payload now complete, in order.

        Raises:
            RemoteProtocolError: a frame exceeds `max_size` (checked before buffering it).
        """
        ...

    def frame(self, payload: bytes) -> list[bytes]:
        """Return the wire chunks for one payload.

        Raises:
            LocalProtocolError: this framing cannot carry the payload.
        """
        ...

    def whole(self, data: bytes) -> Payload | None:
        """The payload if `data` is exactly one complete frame within `max_size` and
        nothing is buffered, else None; buffers nothing either way (a None: `feed` it)."""
        ...

    def take_buffer(self) -> bytes:
        """Remove and return the bytes buffered but not yet framed."""
        ...

    def clear(self) -> None:
        """Drop the bytes buffered but not yet framed (the connection closed)."""
        ...


class SeparatorFramer:
    """MPRPC 0.1 framing: payload followed by `##PRO-END##`."""

    overhead = len(SEPARATOR)

    def __init__(self, max_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> None:
        self.max_size = max_size
        self._buffer = bytearray()
        # Where to resume searching, so a frame arriving in many pieces is scanned once.
        self._scanned = 0

    def feed(self, data: bytes) -> list[Payload]:
        """Buffer `data`; return every payload now followed by a separator, in order.

        Raises:
            RemoteProtocolError: a frame, or the bytes buffered without a separator, exceed
                the maximum message size.
        """
        self._buffer += data
        frames: list[Payload] = []
        buf = self._buffer
        start = 0
        while True:
            end = buf.find(SEPARATOR, max(start, self._scanned))
            if end < 0:
                break
            if end - start > self.max_size:
                raise RemoteProtocolError(
                    f"frame of {end - start} bytes exceeds the maximum message size "
                    f"of {self.max_size} bytes",
                    syntax=False,
                )
            frames.append(bytes(buf[start:end]))
            start = end + len(SEPARATOR)
        if start:
            del buf[:start]
        # Keep the last len(SEPARATOR)-1 bytes unscanned: a separator may straddle reads.
        self._scanned = max(0, len(buf) - len(SEPARATOR) + 1)
        if len(buf) > self.max_size + len(SEPARATOR):
            raise RemoteProtocolError(
                f"no frame separator within {self.max_size} bytes "
                "(message larger than the maximum message size)",
                syntax=False,
            )
        return frames

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as a payload (a partial frame)."""
        return len(self._buffer)

    def whole(self, data: bytes) -> Payload | None:
        """The payload if `data` is exactly one complete frame within `max_size` and
        nothing is buffered, else None; buffers nothing either way (a None: `feed` it)."""
        end = len(data) - _SEPARATOR_SIZE
        if end < 0 or self._buffer or end > self.max_size or data.find(SEPARATOR) != end:
            return None
        return data[:end]

    def frame(self, payload: bytes) -> list[bytes]:
        """The payload and the separator.

        Raises:
            LocalProtocolError: the payload contains the separator, or ends with a part of
                it that the separator after it completes (`...##PRO-END` then
                `##PRO-END##`: the reader would end the frame early), so it cannot be
                framed.
        """
        # The reader ends a frame at the separator's first occurrence: it must be the one
        # appended, so none may start inside the payload, nor in its last 10 bytes.
        if SEPARATOR in payload:
            raise LocalProtocolError(
                "the encoded message contains the 11-byte frame separator and "
                "cannot be sent with separator framing; use length framing"
            )
        tail = payload[1 - _SEPARATOR_SIZE :]
        early = (tail + SEPARATOR).find(SEPARATOR)
        if early != len(tail):
            raise LocalProtocolError(
                f"the encoded message ends with {tail[early:]!r}, which the "
                "11-byte frame separator after it would complete early, and cannot be sent "
                "with separator framing; use length framing"
            )
        return [payload, SEPARATOR]

    def take_buffer(self) -> bytes:
        """Remove and return the bytes received after the last complete frame."""
        data = bytes(self._buffer)
        self.clear()
        return data

    def clear(self) -> None:
        """Drop the bytes received but not yet framed (the connection closed)."""
        self._buffer = bytearray()
        self._scanned = 0


class LengthFramer:
    """Negotiated framing: 4-byte big-endian length, then the payload.

    Built for large messages too: a partial frame is kept in one bytearray (amortised
    growth, no per-read object overhead even when a peer sends one byte per segment),
    and complete frames are returned as views into the buffer that held them, so a
    megabyte payload is copied once on the way in rather than once per read.
    """

    overhead = LENGTH_PREFIX_SIZE

    def __init__(self, max_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> None:
        self.max_size = max_size
        self._buffer = bytearray()
        self._need = LENGTH_PREFIX_SIZE  # bytes _buffer must hold before parsing again

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as a payload (a partial frame)."""
        return len(self._buffer)

    def whole(self, data: bytes) -> Payload | None:
        """The payload if `data` is exactly one complete frame within `max_size` and
        nothing is buffered, else None; buffers nothing either way (a None: `feed` it)."""
        if self._buffer or len(data) < LENGTH_PREFIX_SIZE:
            return None
        size = len(data) - LENGTH_PREFIX_SIZE
        if size > self.max_size or _LENGTH.unpack_from(data)[0] != size:
            return None
        if size < _COALESCE_LIMIT:
            return data[LENGTH_PREFIX_SIZE:]  # copying a small payload costs less than a view
        return memoryview(data)[LENGTH_PREFIX_SIZE:]

    def feed(self, data: bytes) -> list[Payload]:
        """Buffer `data`; return every payload now complete (views, not copies), in order.

        Raises:
            RemoteProtocolError: a length prefix announces more than the maximum message
                size.
        """
        buffer, spans = self.feed_spans(data)
        if not spans:
            return []
        view = memoryview(buffer)
        return [view[spans[i] : spans[i + 1]] for i in range(0, len(spans), 2)]

    def feed_spans(self, data: bytes) -> tuple[bytes | bytearray, list[int]]:
        """Buffer `data`; return the bytes that hold every payload now complete, and
        where each starts and ends in them, flat: `[start, end, start, end, ...]`.

        `feed` without a view per payload, for a reader that compares and slices the
        bytes itself (many small frames per read: a view costs more than its payload).
        The bytes returned are the caller's: the framer keeps no reference to them.

        Raises:
            RemoteProtocolError: a length prefix announces more than the maximum message
                size.
        """
        buffer: bytes | bytearray = data
        if self._buffer:
            self._buffer += data
            if len(self._buffer) < self._need:
                return data[:0], []
            # Hand the whole buffer over: the caller may keep views into it, and a
            # bytearray with views exported cannot be resized, so we start a new one.
            buffer, self._buffer = self._buffer, bytearray()
        spans: list[int] = []
        pos, end = 0, len(buffer)
        need = LENGTH_PREFIX_SIZE
        while end - pos >= LENGTH_PREFIX_SIZE:
            (size,) = _LENGTH.unpack_from(buffer, pos)
            if size > self.max_size:
                raise RemoteProtocolError(
                    f"frame of {size} bytes exceeds the maximum message size "
                    f"of {self.max_size} bytes",
                    syntax=False,
                )
            stop = pos + LENGTH_PREFIX_SIZE + size
            if stop > end:
                need = LENGTH_PREFIX_SIZE + size
                break
            spans.append(pos + LENGTH_PREFIX_SIZE)
            spans.append(stop)
            pos = stop
        if pos < end:
            self._buffer = bytearray(memoryview(buffer)[pos:])
            self._need = need
        else:
            self._need = LENGTH_PREFIX_SIZE
        return buffer, spans

    def frame(self, payload: bytes) -> list[bytes]:
        """The 4-byte length prefix and the payload (one chunk if small, two if large).

        Raises:
            LocalProtocolError: the payload is longer than a 4-byte length can say.
        """
        size = len(payload)
        if size < _COALESCE_LIMIT:
            return [_LENGTH.pack(size) + payload]  # one chunk: one write, nothing to join
        if size > 0xFFFFFFFF:
            raise LocalProtocolError("payload too large for a 4-byte length prefix")
        # Two chunks: prefixing would copy the whole payload just to add four bytes.
        return [_LENGTH.pack(size), payload]

    def take_buffer(self) -> bytes:
        """Remove and return the bytes received after the last complete frame."""
        data = bytes(self._buffer)
        self.clear()
        return data

    def clear(self) -> None:
        """Drop the bytes received but not yet framed (the connection closed)."""
        self._buffer = bytearray()
        self._need = LENGTH_PREFIX_SIZE
