"""Wire constants of MPRPC 0.1: version, separator, map keys, status codes, features."""

from __future__ import annotations

import enum
from typing import Final

from ..codes import Code

__all__ = ["Code", "Compression", "Feature", "Key"]

VERSION: Final = "0.1"
SEPARATOR: Final = b"##PRO-END##"

# Largest payload either side accepts or sends, before and after decompression.
# 16 MiB is generous for RPC (gRPC's default receive limit is 4 MiB) while keeping a
# hostile peer from making us buffer without bound.
DEFAULT_MAX_MESSAGE_SIZE: Final = 16 * 1024 * 1024

# Largest message a server accepts before the client has authenticated, on the wire and
# after decompression: an auth request is a few hundred bytes, and an unauthenticated
# peer must not make the server buffer or inflate megabytes.
DEFAULT_MAX_AUTH_MESSAGE_SIZE: Final = 64 * 1024

# Longest MessagePack array or map (elements, or key/value pairs) either side decodes,
# checked from its header before anything is built.
DEFAULT_MAX_COLLECTION_LEN: Final = 1024 * 1024

# Length framing prefix: 4-byte big-endian unsigned length (docs/protocol.md, "Frames").
LENGTH_PREFIX_SIZE: Final = 4

# Call metadata (feature `metadata`): at most this many pairs, and this many UTF-8 bytes
# of keys and values together, per message. Metadata is for small things (trace context,
# request IDs, auth tokens), not payloads.
MAX_METADATA_PAIRS: Final = 64
MAX_METADATA_BYTES: Final = 8 * 1024


class Key:
    """Map keys defined by the protocol (upper-case English words)."""

    MPRPC: Final = "MPRPC"
    AUTH: Final = "AUTH"
    USERNAME: Final = "USERNAME"
    PASSWORD: Final = "PASSWORD"
    FEATURES: Final = "FEATURES"
    CODE: Final = "CODE"
    VERSION: Final = "VERSION"
    DESC: Final = "DESC"
    DEBUG: Final = "DEBUG"
    COMPRESER: Final = "COMPRESER"
    TIMEOUT: Final = "TIMEOUT"
    HEARTBEAT: Final = "HEARTBEAT"
    ID: Final = "ID"
    METHOD: Final = "METHOD"
    RETURN: Final = "RETURN"
    ARGS: Final = "ARGS"
    KWARGS: Final = "KWARGS"
    MESSAGE: Final = "MESSAGE"
    RESULT: Final = "RESULT"
    EXCEPTION: Final = "EXCEPTION"
    DATA: Final = "DATA"
    FRAME: Final = "FRAME"
    CANCEL: Final = "CANCEL"
    DEADLINE: Final = "DEADLINE"
    METADATA: Final = "METADATA"
    ONEWAY: Final = "ONEWAY"


PING: Final = "ping"
PONG: Final = "pong"


class Feature(enum.StrEnum):
    """The negotiated extensions (docs/protocol.md, "Negotiated extensions")."""

    LENGTH_FRAMING = "length-framing"
    CANCEL = "cancel"
    DEADLINE = "deadline"
    METADATA = "metadata"
    ONEWAY = "oneway"


_FEATURE_SETS: dict[frozenset[Feature], frozenset[Feature]] = {}


def shared_features(features: frozenset[Feature]) -> frozenset[Feature]:
    """`features`, or an equal set returned before: connections negotiate one of a few
    sets (at most one per subset of `Feature`), each kept once instead of per connection."""
    return _FEATURE_SETS.setdefault(features, features)


class Compression(enum.StrEnum):
    """Payload compressions named by the protocol (`COMPRESER`)."""

    ZLIB = "zlib"
    BZ2 = "bz2"
    LZMA = "lzma"
