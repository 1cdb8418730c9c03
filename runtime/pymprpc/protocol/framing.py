"""Frame splitting and building: legacy separator framing and negotiated length framing.

A framer turns a byte stream into payloads (`feed`) and a payload into wire bytes
(`frame`). Both bound what they buffer by the maximum message size, so a peer that never
sends a separator or announces a huge length cannot make us grow without limit.
"""

from __future__ import annotations

import struct
from typing import Protocol

from ..errors import LocalProtocolError, ProtocolException
from .constants import DEFAULT_MAX_MESSAGE_SIZE, LENGTH_PREFIX_SIZE, SEPARATOR

_LENGTH = struct.Struct(">I")

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

    def feed(self, data: bytes) -> list[Payload]:
        """Buffer `data`; return every payload now complete, in order."""
        ...

    def frame(self, payload: bytes) -> list[bytes]:
        """Return the wire chunks for one payload (LocalProtocolError if impossible)."""
        ...

    def take_buffer(self) -> bytes:
        """Remove and return the bytes buffered but not yet framed."""
        ...


class SeparatorFramer:
    """MPRPC 0.1 framing: payload followed by `##PRO-END##`."""

    def __init__(self, max_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> None:
        self.max_size = max_size
        self._buffer = bytearray()
        # Where to resume searching, so a frame arriving in many pieces is scanned once.
        self._scanned = 0

    def feed(self, data: bytes) -> list[Payload]:
        """Buffer `data`; return every payload now followed by a separator, in order.

        Raises:
            ProtocolException: a frame, or the bytes buffered without a separator, exceed
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
                raise ProtocolException(
                    f"frame of {end - start} bytes exceeds the maximum message size "
                    f"of {self.max_size} bytes"
                )
            frames.append(bytes(buf[start:end]))
            start = end + len(SEPARATOR)
        if start:
            del buf[:start]
        # Keep the last len(SEPARATOR)-1 bytes unscanned: a separator may straddle reads.
        self._scanned = max(0, len(buf) - len(SEPARATOR) + 1)
        if len(buf) > self.max_size + len(SEPARATOR):
            raise ProtocolException(
                f"no frame separator within {self.max_size} bytes "
                "(message larger than the maximum message size)"
            )
        return frames

    def frame(self, payload: bytes) -> list[bytes]:
        """The payload and the separator.

        Raises:
            LocalProtocolError: the payload contains the separator, so it cannot be framed.
        """
        if SEPARATOR in payload:
            raise LocalProtocolError(
                "the encoded message contains the 11-byte frame separator and "
                "cannot be sent with separator framing; use length framing"
            )
        return [payload, SEPARATOR]

    def take_buffer(self) -> bytes:
        """Remove and return the bytes received after the last complete frame."""
        data = bytes(self._buffer)
        self._buffer.clear()
        self._scanned = 0
        return data


class LengthFramer:
    """Negotiated framing: 4-byte big-endian length, then the payload.

    Built for large messages too: chunks are kept as received and joined once a frame is
    complete, and frames are returned as views into that buffer, so a megabyte payload is
    copied once on the way in rather than once per read.
    """

    def __init__(self, max_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> None:
        self.max_size = max_size
        self._chunks: list[bytes] = []
        self._size = 0  # bytes held in _chunks
        self._need = LENGTH_PREFIX_SIZE  # bytes _chunks must hold before parsing again

    def feed(self, data: bytes) -> list[Payload]:
        """Buffer `data`; return every payload now complete (views, not copies), in order.

        Raises:
            ProtocolException: a length prefix announces more than the maximum message size.
        """
        if self._chunks:
            self._chunks.append(data)
            self._size += len(data)
            if self._size < self._need:
                return []
            data = b"".join(self._chunks)
            self._chunks, self._size = [], 0
        frames: list[Payload] = []
        view = memoryview(data)
        pos, end = 0, len(data)
        need = LENGTH_PREFIX_SIZE
        while end - pos >= LENGTH_PREFIX_SIZE:
            (size,) = _LENGTH.unpack_from(data, pos)
            if size > self.max_size:
                raise ProtocolException(
                    f"frame of {size} bytes exceeds the maximum message size "
                    f"of {self.max_size} bytes"
                )
            stop = pos + LENGTH_PREFIX_SIZE + size
            if stop > end:
                need = LENGTH_PREFIX_SIZE + size
                break
            frames.append(view[pos + LENGTH_PREFIX_SIZE : stop])
            pos = stop
        if pos < end:
            rest = bytes(view[pos:])
            self._chunks, self._size, self._need = [rest], len(rest), need
        else:
            self._need = LENGTH_PREFIX_SIZE
        return frames

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
        data = b"".join(self._chunks)
        self._chunks, self._size, self._need = [], 0, LENGTH_PREFIX_SIZE
        return data
