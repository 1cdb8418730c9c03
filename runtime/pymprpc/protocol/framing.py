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


class Framer(Protocol):
    """What a connection needs from a framing."""

    max_size: int

    def feed(self, data: bytes) -> list[bytes]:
        """Buffer `data`; return every payload now complete, in order."""
        ...

    def frame(self, payload: bytes) -> bytes:
        """Return the wire bytes for one payload (LocalProtocolError if impossible)."""
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

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        frames: list[bytes] = []
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

    def frame(self, payload: bytes) -> bytes:
        if SEPARATOR in payload:
            raise LocalProtocolError(
                "the encoded message contains the 11-byte frame separator and "
                "cannot be sent with separator framing; use length framing"
            )
        return payload + SEPARATOR

    def take_buffer(self) -> bytes:
        data = bytes(self._buffer)
        self._buffer.clear()
        self._scanned = 0
        return data


class LengthFramer:
    """Negotiated framing: 4-byte big-endian length, then the payload."""

    def __init__(self, max_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> None:
        self.max_size = max_size
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._buffer
        buf += data
        frames: list[bytes] = []
        pos = 0
        available = len(buf)
        while available - pos >= LENGTH_PREFIX_SIZE:
            (size,) = _LENGTH.unpack_from(buf, pos)
            if size > self.max_size:
                raise ProtocolException(
                    f"frame of {size} bytes exceeds the maximum message size "
                    f"of {self.max_size} bytes"
                )
            end = pos + LENGTH_PREFIX_SIZE + size
            if end > available:
                break
            frames.append(bytes(buf[pos + LENGTH_PREFIX_SIZE : end]))
            pos = end
        if pos:
            del buf[:pos]
        return frames

    def frame(self, payload: bytes) -> bytes:
        if len(payload) > 0xFFFFFFFF:
            raise LocalProtocolError("payload too large for a 4-byte length prefix")
        return _LENGTH.pack(len(payload)) + payload

    def take_buffer(self) -> bytes:
        data = bytes(self._buffer)
        self._buffer.clear()
        return data
