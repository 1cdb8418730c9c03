"""Payload codec: MessagePack or JSON (debug mode), optionally zlib/bz2/lzma compressed.

Decompression is bounded by the maximum message size, so a small compressed frame cannot
expand into gigabytes (a "compression bomb").
"""

from __future__ import annotations

import bz2
import json
import lzma
import zlib
from dataclasses import dataclass
from typing import Any, Final

import msgpack

from ..errors import LocalProtocolError, ProtocolException, ProtocolSyntaxException
from .constants import DEFAULT_MAX_MESSAGE_SIZE, Compression

_LZMA_MAGIC: Final = b"\xfd7zXZ\x00"
_BZ2_MAGIC: Final = b"BZh"
_ZLIB_FIRST: Final = 0x78
_MSGPACK_MAP_FIRST: Final = frozenset(range(0x80, 0x90)) | {0xDE, 0xDF}
_JSON_FIRST: Final = frozenset(b"{ \t\r\n")
# One packer for all: building one per message costs more than packing a small map, and
# the C packer packs a whole message while holding the GIL, so threads cannot interleave.
_PACKER: Final = msgpack.Packer(use_bin_type=True)

_DECODE_ERRORS: Final = (
    ValueError,  # msgpack ExtraData/FormatError, json, UnicodeDecodeError
    TypeError,  # msgpack: unhashable map key
    msgpack.UnpackException,
    RecursionError,
    zlib.error,
    lzma.LZMAError,
    OSError,  # bz2: invalid data stream
    EOFError,
)


def _compress(kind: Compression, data: bytes) -> bytes:
    if kind is Compression.ZLIB:
        return zlib.compress(data)
    if kind is Compression.BZ2:
        return bz2.compress(data)
    return lzma.compress(data)


def _decompress(kind: Compression, data: bytes | memoryview, max_size: int) -> bytes:
    # Ask for one byte more than allowed: getting it proves the message is too large
    # without ever inflating the rest.
    if kind is Compression.ZLIB:
        zd = zlib.decompressobj()
        out = zd.decompress(data, max_size + 1)
        finished = zd.eof
    else:
        d = bz2.BZ2Decompressor() if kind is Compression.BZ2 else lzma.LZMADecompressor()
        out = d.decompress(data, max_size + 1)
        finished = d.eof
    if len(out) > max_size:
        raise ProtocolException(
            f"decompressed message exceeds the maximum message size of {max_size} bytes"
        )
    if not finished:
        raise ProtocolSyntaxException(f"truncated {kind.value} data")
    return out


@dataclass(frozen=True, slots=True)
class Codec:
    """How one connection encodes its maps: `json` (debug) or msgpack, plus compression."""

    json: bool = False
    compression: Compression | None = None
    max_size: int = DEFAULT_MAX_MESSAGE_SIZE

    def encode(self, message: dict[str, Any]) -> bytes:
        """Encode one message map; LocalProtocolError if a value cannot be encoded."""
        try:
            if self.json:
                data = json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode()
            else:
                data = _PACKER.pack(message)
        except (TypeError, ValueError, OverflowError) as exc:
            kind = "JSON (debug mode)" if self.json else "MessagePack"
            raise LocalProtocolError(f"value cannot be encoded as {kind}: {exc}") from exc
        if self.compression is not None:
            data = _compress(self.compression, data)
        return data

    def decode(self, payload: bytes | memoryview) -> Any:
        """Decode one payload; raise ProtocolException/ProtocolSyntaxException if bad."""
        try:
            if self.compression is not None:
                payload = _decompress(self.compression, payload, self.max_size)
            if self.json:
                return json.loads(bytes(payload).decode("utf-8"))
            return msgpack.unpackb(payload, raw=False)
        except ProtocolException:
            raise
        except _DECODE_ERRORS as exc:
            kind = "JSON" if self.json else "MessagePack"
            raise ProtocolSyntaxException(f"payload is not valid {kind}: {exc}") from exc

    @classmethod
    def detect(cls, payload: bytes | memoryview, max_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> Codec:
        """Infer encoding and compression from a connection's first payload."""
        payload = bytes(payload)
        compression: Compression | None = None
        if payload.startswith(_LZMA_MAGIC):
            compression = Compression.LZMA
        elif payload.startswith(_BZ2_MAGIC):
            compression = Compression.BZ2
        elif payload[:1] == bytes([_ZLIB_FIRST]):
            compression = Compression.ZLIB
        plain = payload
        if compression is not None:
            try:
                plain = _decompress(compression, payload, max_size)
            except ProtocolException:
                raise
            except _DECODE_ERRORS as exc:
                raise ProtocolSyntaxException(
                    f"payload is not valid {compression.value} data: {exc}"
                ) from exc
        first = plain[:1]
        if first and first[0] in _JSON_FIRST:
            return cls(json=True, compression=compression, max_size=max_size)
        if first and first[0] in _MSGPACK_MAP_FIRST:
            return cls(json=False, compression=compression, max_size=max_size)
        raise ProtocolSyntaxException("first message is neither a MessagePack nor a JSON map")
