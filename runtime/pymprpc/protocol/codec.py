"""Payload codec: MessagePack or JSON (debug mode), optionally zlib/bz2/lzma compressed.

Decoding is bounded before anything is allocated: decompression stops one byte past the
codec's `max_size` (a small compressed frame cannot expand into gigabytes, a
"compression bomb"), and MessagePack arrays and maps longer than `max_items`, strings and
binaries longer than `max_size`, and nesting deeper than msgpack's fixed stack (1024
levels) are refused by the unpacker as it reads their headers.
"""

from __future__ import annotations

import bz2
import contextlib
import functools
import json
import lzma
import math
import reprlib
import sys
import threading
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final

import msgpack

from ..errors import LocalProtocolError, RemoteProtocolError, exception_text, type_name
from .constants import DEFAULT_MAX_COLLECTION_LEN, DEFAULT_MAX_MESSAGE_SIZE, Compression

_LZMA_MAGIC: Final = b"\xfd7zXZ\x00"
_BZ2_MAGIC: Final = b"BZh"
_ZLIB_FIRST: Final = 0x78
_MSGPACK_MAP_FIRST: Final = frozenset(range(0x80, 0x90)) | {0xDE, 0xDF}
_JSON_FIRST: Final = frozenset(b"{ \t\r\n")

# A packer per thread: building one per message costs an allocation of its initial
# buffer, and one shared packer is not safe once threads run without the GIL. A packer
# keeps a buffer as large as the largest message it packed, so after a large one the
# thread's packer is dropped and the memory returned.
_PACKER_KEEP_BYTES: Final = 1024 * 1024
_packers = threading.local()


def _exact(value: Any) -> Any:
    """What msgpack packs for `value`, a tuple or a subclass of a type it carries, as an
    exact built-in value (msgpack's `default` hook; TypeError for anything else).

    msgpack's packer, left to take subclasses itself, writes a list, tuple or dict
    subclass's length (its storage's, or `__len__`) and then what `__iter__` or `items()`
    gives: a subclass where the two disagree came out as a corrupt frame (a peer closes
    the connection, with every other call on it) or, two such lies balancing out, as a
    different value read without error. Packing exact types only (`strict_types`), each
    tuple or subclass converted here first, makes every length the count of what follows.
    Scalars keep what msgpack packed for them before (their stored value, whatever
    `__int__`, `__str__` or `__bytes__` say).
    """
    if type(value) is tuple:
        return list(value)  # no user code runs
    if isinstance(value, list | tuple | dict):
        # Its own __iter__ / items() run here, and may encode something themselves (make
        # an RPC call, say): that must not use this thread's packer, which holds the
        # message packed so far, so it is set aside meanwhile.
        outer = getattr(_packers, "packer", None)
        _packers.packer = None
        try:
            # Its iteration: the length is what it gives.
            return dict(value.items()) if isinstance(value, dict) else list(value)
        finally:
            _packers.packer = outer
    # Scalars: the stored value, through the base type's own slots (no user code).
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):  # (bool cannot be subclassed)
        return int.__index__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, bytes):
        return bytes.__getitem__(value, _WHOLE)
    if isinstance(value, bytearray):
        return bytearray.__getitem__(value, _WHOLE)
    raise TypeError(f"can not serialize {type_name(value)!r} object")


_WHOLE: Final = slice(None)


def _new_packer() -> msgpack.Packer:
    return msgpack.Packer(use_bin_type=True, strict_types=True, default=_exact)


def _pack(message: Any) -> bytes:
    packer = getattr(_packers, "packer", None)
    if packer is None:
        packer = _packers.packer = _new_packer()
    data: bytes = packer.pack(message)
    if len(data) > _PACKER_KEEP_BYTES:
        _packers.packer = None
    return data


# Packed data up to this size is checked with the thread's reusable unpacker (a copy of
# this much costs next to nothing); larger data gets an unpacker of its own, dropped after.
_CHECK_REUSE_BYTES: Final = 256 * 1024


def pack_checked(message: Any) -> bytes:
    """`message` packed (`_pack`), only ever as a message msgpack's parser reads whole;
    `_Unreadable` otherwise (see `unreadable`), or what msgpack raises for a value it
    cannot pack. Only a message of 1 KiB or more can nest that deep: only those are read
    back."""
    data = _pack(message)
    if len(data) >= MSGPACK_MAX_DEPTH:
        wrong = unreadable(data)
        if wrong is not None:
            raise _Unreadable(wrong)
    return data


def unreadable(data: bytes) -> str | None:
    """Why msgpack's parser would not read `data` (one message as `_pack` wrote it)
    whole; None if it would (the usual case).

    msgpack's packer writes an empty list or map one level deeper than its parser reads
    (1,025 levels counting the message's own): no peer could read such a message, which
    one without length framing cannot tell from a broken connection. Walking the packed
    bytes (msgpack's `skip`, in C: an eighth of packing) finds it before it is sent.
    """
    size = len(data)
    unpacker: msgpack.Unpacker | None = None
    if size <= _CHECK_REUSE_BYTES:
        unpacker = getattr(_packers, "checker", None)
    if unpacker is None:
        unpacker = msgpack.Unpacker(max_buffer_size=max(size, _CHECK_REUSE_BYTES))
        if size <= _CHECK_REUSE_BYTES:
            _packers.checker = unpacker
    start = unpacker.tell()
    try:
        unpacker.feed(data)
        unpacker.skip()
    except msgpack.StackError:
        _packers.checker = None  # (its buffer holds the rest: not reused)
        return _MSGPACK_TOO_DEEP
    except Exception as exc:  # noqa: BLE001 - never expected: whatever the reader says
        _packers.checker = None
        return f"the packed message cannot be read back ({exception_text(exc)})"
    if unpacker.tell() - start != size:
        _packers.checker = None
        return "the packed message is longer than the value it starts with"
    return None


_DECODE_ERRORS: Final = (
    ValueError,  # msgpack ExtraData/FormatError/StackError/limits, json, UnicodeDecodeError
    TypeError,  # msgpack: unhashable map key
    msgpack.UnpackException,
    RecursionError,
    zlib.error,
    lzma.LZMAError,
    OSError,  # bz2: invalid data stream
    EOFError,
)

_ENCODABLE_SCALARS: Final = (type(None), bool, int, float, str, bytes, bytearray, memoryview)


def _hashable(key: Any) -> Any:
    """A map key as a hashable value: arrays become tuples, maps tuples of pairs."""
    if isinstance(key, (list, dict)):
        return _hashable_nested(key)
    return key


def _hashable_nested(root: list[Any] | dict[Any, Any]) -> tuple[Any, ...]:
    """`_hashable` of an array or map key, without recursing: a key may nest as deep as
    MessagePack carries (1,022 levels), past Python's recursion limit, and a reader that
    could not take it lost the connection (review 20)."""
    todo: list[tuple[Any, bool]] = [(root, False)]
    done: list[Any] = []  # converted values, in order, until their container takes them
    while todo:
        node, expanded = todo.pop()
        if isinstance(node, list):
            if expanded:
                start = len(done) - len(node)
                done[start:] = [tuple(done[start:])]
            else:
                todo.append((node, True))
                todo.extend((item, False) for item in reversed(node))
        elif isinstance(node, dict):
            if expanded:
                start = len(done) - 2 * len(node)
                flat = done[start:]
                done[start:] = [tuple(zip(flat[0::2], flat[1::2], strict=True))]
            else:
                todo.append((node, True))
                for k, v in reversed(node.items()):
                    todo += ((v, False), (k, False))
        else:
            done.append(node)
    result: tuple[Any, ...] = done[0]
    return result


def _pairs_to_dict(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    return {_hashable(k): v for k, v in pairs}


# How deep a message may nest, counting its own levels (the envelope's map is level 1).
# MessagePack: msgpack's packer refuses deeper values itself, and its unpacker has the
# same fixed limit, so whatever is sent can be read. JSON: Python's json module allows
# fewer levels on 3.11 (its recursion limit) and thousands on 3.12+, so the codec
# enforces a bound every version can encode and decode.
MSGPACK_MAX_DEPTH: Final = 1024
JSON_MAX_DEPTH: Final = 500
# How deep the search for what cannot be encoded looks (it recurses: Python's own
# recursion limit, 1000 on 3.11, must stay well clear).
_MAX_SEARCH_DEPTH: Final = 500


def _an_int(value: int) -> str:
    """`the integer 18446744073709551616`, or for an int too long to be worth showing
    (or to convert at all: Python refuses str() past 4,300 digits), its size in bits."""
    bits = value.bit_length()
    return f"the integer {value}" if bits <= 256 else f"an integer of {bits} bits"


# How a map key is shown in a path: a few levels of it, whatever its depth, then cut to
# 40 characters as `{key!r:.40}` would (reprlib's own cuts keep a repr's end, where an
# object's address would make one message differ from the next).
_KEY_REPR = reprlib.Repr()
_KEY_REPR.maxlevel = 3
_KEY_REPR.maxstring = _KEY_REPR.maxother = _KEY_REPR.maxlong = 1 << 30


def _find_unencodable(
    value: Any, json_mode: bool, too_deep: str | None, path: str = "", depth: int = 0
) -> str | None:
    """Where in `value` the first thing that cannot be encoded is, and what it is.

    Past `_MAX_SEARCH_DEPTH` levels it reports `where` followed by `too_deep`, or with
    `too_deep` None (the encoder refused for another reason) looks no deeper there.
    """
    where = path or "the value"
    if len(where) > 80:
        where = f"...{where[-60:]}"
    if depth > _MAX_SEARCH_DEPTH:
        return f"{where} {too_deep}" if too_deep else None
    if json_mode and isinstance(value, float) and not math.isfinite(value):
        return f"{where} is {value!r}, which strict JSON cannot carry"
    if json_mode and isinstance(value, bytes | bytearray | memoryview):
        return f"{where} is bytes, which JSON (debug mode) cannot carry"
    if isinstance(value, str):
        if json_mode:
            return None  # sent with \u escapes
        try:
            value.encode()
        except UnicodeEncodeError:
            return f"{where} is a string with a lone surrogate (not valid UTF-8)"
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        if not json_mode and not -(2**63) <= value < 2**64:
            return f"{where} is {_an_int(value)}, outside MessagePack's 64-bit range"
        if json_mode and value.bit_length() > 256:
            try:
                str(value)  # what json.dumps does, within Python's digit limit
            except ValueError:
                limit = sys.get_int_max_str_digits()
                return f"{where} is {_an_int(value)}, more digits than Python writes ({limit})"
        return None
    if isinstance(value, _ENCODABLE_SCALARS):
        return None
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            found = _find_unencodable(item, json_mode, too_deep, f"{path}[{i}]", depth + 1)
            if found:
                return found
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if json_mode and not isinstance(key, str | int | float | bool | type(None)):
                return f"{where} has a key of type {type(key).__name__}, JSON needs strings"
            text = _KEY_REPR.repr(key)[:40]  # (a deep key: repr() would recurse past the limit)
            found = _find_unencodable(key, json_mode, too_deep, f"{path} key {text}", depth + 1)
            # Protocol keys of the envelope read as names: MESSAGE.RESULT[2]['when'].
            step = f".{key}" if depth < 2 and isinstance(key, str) and key.isupper() else None
            step = step or f"[{text}]"
            found = found or _find_unencodable(
                item, json_mode, too_deep, f"{path}{step}".lstrip("."), depth + 1
            )
            if found:
                return found
        return None
    kind = type(value)
    name = (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )
    return f"{where} is a {name}"


class _Unreadable(Exception):
    """A packed message msgpack's parser would not read whole (see `unreadable`)."""


def packing_failure(value: Any, exc: BaseException, json_mode: bool = False, path: str = "") -> str:
    """Why `value` could not be encoded, given `exc`, what encoding it raised: where in it
    the first thing that cannot be is, and what it is (`path` names `value` itself), in
    the words a 405 uses: "cannot encode as MessagePack: MESSAGE.RESULT['a'] is a set"."""
    kind = "JSON (debug mode)" if json_mode else "MessagePack"
    found: str | None = None
    if isinstance(exc, _Unreadable):
        if str(exc) == _MSGPACK_TOO_DEEP:
            with contextlib.suppress(Exception):  # the search runs user code (a key's repr)
                found = _find_unencodable(value, False, _MSGPACK_TOO_DEEP, path)
        return f"cannot encode as MessagePack: {found or f'the message {exc}'}"
    # BufferError: a memoryview msgpack cannot take as bytes (not contiguous).
    if isinstance(exc, TypeError | ValueError | OverflowError | RecursionError | BufferError):
        too_deep: str | None
        if json_mode:
            too_deep = _JSON_TOO_DEEP
        else:
            # Only msgpack's own refusal says the value is too deep; past the search
            # depth, any other refusal is reported as msgpack words it.
            too_deep = _MSGPACK_TOO_DEEP if "recursion limit" in exception_text(exc) else None
        with contextlib.suppress(Exception):  # the search runs user code too
            found = _find_unencodable(value, json_mode, too_deep, path)
        return f"cannot encode as {kind}: {found or exception_text(exc)}"
    # A value's own method raised (a list subclass's __iter__, a str subclass's __str__
    # in JSON mode): it cannot be sent, as for any value refused.
    return (
        f"cannot encode as {kind}: a value raised {type_name(exc)} while encoded "
        f"({exception_text(exc)})"
    )


_JSON_TOO_DEEP: Final = f"nests deeper than {JSON_MAX_DEPTH} levels (or contains itself)"
_MSGPACK_TOO_DEEP: Final = (
    f"nests deeper than MessagePack's {MSGPACK_MAX_DEPTH} levels, the message's own "
    "included (or contains itself)"
)


class TooDeep(RemoteProtocolError):
    """A MessagePack payload nested deeper than msgpack's parser reads (1,024 levels).

    msgpack's packer lets an empty array or map sit one level deeper than its parser
    reads, so a peer of ours can send one without meaning harm. With length framing the
    message's end is known without parsing it, so the connection fails only the call it
    belongs to, found by the ID its envelope gives before the deep value (`envelope_id`);
    otherwise, or without such an ID, it is the 506 it always was. `payload` is the
    payload as decoded (after decompression).
    """

    def __init__(self, payload: bytes | memoryview) -> None:
        super().__init__(
            f"payload is not valid MessagePack: it nests deeper than msgpack's parser "
            f"reads ({MSGPACK_MAX_DEPTH} levels, the message's own included)"
        )
        self.payload = payload


def envelope_id(payload: bytes | memoryview, inside: str | None = None) -> str | None:
    """The string `ID` of a MessagePack message map (with `inside`, of the map under
    that key: a reply's `MESSAGE`), read without decoding what follows it; None if the
    ID comes after a value that cannot be read (too deep), is not a string, or is
    missing. Our peers write the ID before `ARGS` and `RESULT`."""
    unpacker = msgpack.Unpacker(
        raw=False, strict_map_key=False, max_buffer_size=max(len(payload), 1)
    )
    unpacker.feed(payload)
    try:
        return _id_in_map(unpacker, inside)
    except Exception:  # noqa: BLE001 - anything unreadable: no ID to answer
        return None


def _id_in_map(unpacker: msgpack.Unpacker, inside: str | None) -> str | None:
    for _ in range(unpacker.read_map_header()):
        key = unpacker.unpack()
        if key == "ID":
            value = unpacker.unpack()
            return value if type(value) is str and value else None
        if inside is not None and key == inside:
            return _id_in_map(unpacker, None)
        unpacker.skip()
    return None


def find_unencodable(value: Any, path: str) -> str | None:
    """Where in `value` (which sits at `path`, e.g. `v`) the first thing MessagePack
    cannot carry is, and what it is (`v[1]['k'] is the integer ..., outside
    MessagePack's 64-bit range`); None if nothing in it is (or it is too deep to look).
    For errors only: it walks the whole value."""
    return _find_unencodable(value, False, None, path)


def find_too_deep(value: Any, path: str, levels: int) -> str | None:
    """Where `value` (which sits at `path`) nests more than `levels` maps and arrays deep
    (itself the first), or contains itself, and which of the two (`v[0][0] contains
    itself`); None if it does neither. For errors only, as `find_unencodable`; iterative,
    so that no depth of value meets Python's recursion limit."""
    if not isinstance(value, list | tuple | dict):
        return None
    steps = [path]  # the path to the container on top of the stack, a step per level
    stack = [(_children(value), id(value))]
    on_path = {id(value)}
    while stack:
        children, key = stack[-1]
        for step, child in children:
            if isinstance(child, list | tuple | dict):
                if id(child) in on_path:
                    return f"{_where(steps, step)} contains itself"
                if len(stack) >= levels:
                    where = _where(steps, step)
                    return f"{where} is nested deeper than MessagePack carries ({levels} levels)"
                stack.append((_children(child), id(child)))
                steps.append(step)
                on_path.add(id(child))
                break
        else:
            stack.pop()
            steps.pop()
            on_path.discard(key)
    return None


def _children(value: Any) -> Iterator[tuple[str, Any]]:
    """The steps into a list, tuple or dict and what each leads to (a map's keys too)."""
    if isinstance(value, dict):
        for key, item in value.items():
            # A key may itself nest past Python's recursion limit: repr() would too.
            text = _KEY_REPR.repr(key)[:40]
            yield f" key {text}", key
            yield f"[{text}]", item
    else:
        for i, item in enumerate(value):
            yield f"[{i}]", item


def _where(steps: list[str], last: str) -> str:
    """A path of `steps` and `last`, its middle cut out when long (a deep value's path
    would be as long as it is deep)."""
    if len(steps) <= 12:
        return "".join(steps) + last
    return "".join(steps[:4]) + f"...({len(steps) - 12} more)..." + "".join(steps[-8:]) + last


def _check_json_depth(message: Any) -> None:
    """Raise ValueError if `message` nests deeper than `JSON_MAX_DEPTH` levels.

    Iterative, so that it cannot itself hit Python's recursion limit.
    """
    stack: list[tuple[Any, int]] = [(message, 1)]  # (a map or array, its level)
    while stack:
        value, depth = stack.pop()
        if depth > JSON_MAX_DEPTH:
            raise ValueError(f"nests deeper than {JSON_MAX_DEPTH} levels")
        items = value.values() if isinstance(value, dict) else value
        stack.extend((v, depth + 1) for v in items if isinstance(v, dict | list | tuple))


def _json_dumps(message: Any) -> bytes:
    # Strict JSON (no NaN/Infinity), compact, non-ASCII kept as is; a string with a lone
    # surrogate cannot be UTF-8, so that message goes out with \u escapes (valid JSON).
    text = json.dumps(message, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
    try:
        return text.encode()
    except UnicodeEncodeError:
        return json.dumps(message, allow_nan=False, separators=(",", ":")).encode()


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
        raise RemoteProtocolError(
            f"decompressed message exceeds the maximum message size of {max_size} bytes",
            syntax=False,
        )
    if not finished:
        raise RemoteProtocolError(f"truncated {kind.value} data")
    return out


@dataclass(frozen=True, slots=True)
class Codec:
    """How one connection encodes its maps: `json` (debug) or msgpack, plus compression.

    `max_size` bounds a payload after decompression; `max_items` bounds every array and
    map of a MessagePack payload (checked from its header, before it is built).
    """

    json: bool = False
    compression: Compression | None = None
    max_size: int = DEFAULT_MAX_MESSAGE_SIZE
    max_items: int = DEFAULT_MAX_COLLECTION_LEN
    _unpack_options: dict[str, Any] = field(init=False, repr=False, compare=False)
    _plain_unpack: Callable[[bytes | memoryview], Any] | None = field(
        init=False, repr=False, compare=False
    )

    def encode(self, message: dict[str, Any]) -> bytes:
        """Encode (and compress) one message map.

        Returns:
            The payload, without framing.

        Raises:
            LocalProtocolError: a value cannot be encoded (a set, a datetime, NaN in JSON
                mode...); the message names where it is and what it is.
        """
        try:
            if self.json:
                data = _json_dumps(message)
                # Nesting needs a bracket per level: only a message with more than the
                # limit's worth of them (counted in C, fast) is walked.
                if data.count(b"[") + data.count(b"{") > JSON_MAX_DEPTH:
                    _check_json_depth(message)
            else:
                data = pack_checked(message)
        except Exception as exc:  # noqa: BLE001 - any refusal, user code's too (see packing_failure)
            raise LocalProtocolError(packing_failure(message, exc, self.json)) from None
        if self.compression is not None:
            data = _compress(self.compression, data)
        return data

    def decode(self, payload: bytes | memoryview) -> Any:
        """Decompress and decode one payload.

        Returns:
            The decoded value (any MessagePack/JSON value; the caller checks its shape).
            Map keys that are arrays or maps arrive as tuples (hashable).

        Raises:
            RemoteProtocolError: the payload is not valid (506), or exceeds a size or
                length limit (505).
        """
        try:
            if self.compression is not None:
                payload = _decompress(self.compression, payload, self.max_size)
            if self.json:
                return json.loads(bytes(payload).decode("utf-8"))
            return self._unpack(payload, None)
        except RemoteProtocolError:
            raise
        except msgpack.StackError:
            raise TooDeep(payload) from None
        except TypeError:
            if self.json:
                raise RemoteProtocolError("payload is not valid JSON") from None
            # An array or map used as a map key (unhashable): decode again, slowly, with
            # such keys turned into tuples rather than refusing the whole connection.
            try:
                return self._unpack(payload, _pairs_to_dict)
            except _DECODE_ERRORS as exc:
                raise RemoteProtocolError(
                    f"payload is not valid MessagePack: {_why(exc, str(exc))}"
                ) from None
        except _DECODE_ERRORS as exc:
            kind = "JSON" if self.json else "MessagePack"
            text = str(exc)
            if "exceeds max_" in text:
                raise RemoteProtocolError(
                    f"MessagePack payload over a length limit: {text} "
                    f"(max_collection_len={self.max_items}, max_message_size={self.max_size})",
                    syntax=False,
                ) from None
            if self.json and "integer string conversion" in text:
                # Python's own guard against slow conversions (sys.int_max_str_digits),
                # whose message tells the reader to change the server's settings.
                text = f"a number has more than {sys.get_int_max_str_digits()} digits"
            raise RemoteProtocolError(f"payload is not valid {kind}: {_why(exc, text)}") from None

    def __post_init__(self) -> None:
        # How every payload is unpacked (see _unpack and plain_unpacker), built once.
        options = {
            "raw": False,
            "strict_map_key": False,  # MessagePack allows any key; carry them
            "max_str_len": self.max_size,
            "max_bin_len": self.max_size,
            "max_ext_len": self.max_size,
            "max_array_len": self.max_items,
            "max_map_len": self.max_items,
        }
        object.__setattr__(self, "_unpack_options", options)
        unpack = None
        if not self.json and self.compression is None:
            unpack = functools.partial(msgpack.unpackb, **options)
        object.__setattr__(self, "_plain_unpack", unpack)

    def _unpack(self, payload: bytes | memoryview, pairs_hook: Any) -> Any:
        return msgpack.unpackb(payload, object_pairs_hook=pairs_hook, **self._unpack_options)

    def plain_unpacker(self) -> Callable[[bytes | memoryview], Any] | None:
        """For uncompressed MessagePack: a function decoding a payload as `decode` does
        when it succeeds (a C call, no Python frame), raising anything on any failure
        (then call `decode` for the error to report); None for JSON or compression."""
        return self._plain_unpack  # one per codec, and codecs are shared (shared_codec)

    def plain_packer(self) -> Callable[[Any], bytes] | None:
        """For uncompressed MessagePack: a function encoding a message as `encode` does
        when it succeeds, raising anything on any failure (then call `encode` for the
        error to report); None for JSON or compression."""
        if self.json or self.compression is not None:
            return None
        return pack_checked

    @classmethod
    def for_reply(cls, head: bytes, max_size: int, max_items: int) -> Codec | None:
        """A JSON codec if a connection's first bytes `head` start a plain JSON message
        that could not be decoded (too big, malformed), so its error reply is JSON too;
        None otherwise (the default MessagePack codec answers)."""
        if head[:1] and head[0] in _JSON_FIRST:
            return shared_codec(True, None, max_size, max_items)
        return None

    @classmethod
    def detect(
        cls,
        payload: bytes | memoryview,
        max_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        max_items: int = DEFAULT_MAX_COLLECTION_LEN,
    ) -> Codec:
        """Infer encoding and compression from a connection's first payload.

        Returns:
            A codec for this connection, bounded by `max_size` and `max_items`.

        Raises:
            RemoteProtocolError: the payload is neither a MessagePack nor a JSON map, or
                does not decompress within `max_size`.
        """
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
            except RemoteProtocolError:
                raise
            except _DECODE_ERRORS as exc:
                raise RemoteProtocolError(
                    f"payload is not valid {compression.value} data: {exc}"
                ) from None
        first = plain[:1]
        if first and first[0] in _JSON_FIRST:
            return shared_codec(True, compression, max_size, max_items)
        if first and first[0] in _MSGPACK_MAP_FIRST:
            return shared_codec(False, compression, max_size, max_items)
        raise RemoteProtocolError("first message is neither a MessagePack nor a JSON map")


@functools.lru_cache(maxsize=128)
def shared_codec(
    json: bool = False,
    compression: Compression | None = None,
    max_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    max_items: int = DEFAULT_MAX_COLLECTION_LEN,
) -> Codec:
    """`Codec(json, compression, max_size, max_items)`, made once: a codec is immutable,
    and the connections of a process use a few (a server holding 10,000 otherwise held
    10,000 equal ones, with their unpack options and unpackers)."""
    return Codec(json=json, compression=compression, max_size=max_size, max_items=max_items)


def _why(exc: BaseException, text: str) -> str:
    """What a decoder's error says, or, when it says nothing (msgpack's FormatError for a
    reserved byte such as 0xc1), what kind of error it is."""
    if text:
        return text
    if isinstance(exc, msgpack.FormatError):
        return "a byte that no MessagePack value starts with (such as 0xc1)"
    return type(exc).__name__
