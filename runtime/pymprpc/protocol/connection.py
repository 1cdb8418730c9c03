"""Per-connection state machines, free of I/O.

Both roles work the same way (like h2): feed received bytes to `receive_data()` and act
on the events it returns; every `send_*` (and, on a server, the replies the protocol
itself dictates: welcome, pong, 400 for a malformed or duplicate call, 501 before auth,
505/506 for garbage) only *queues* bytes; the shell writes out what `chunks_to_send()`
returns, whenever it suits it. Nothing here raises for bytes the peer sent: a remote
violation closes the connection, and `error` says why.
"""

from __future__ import annotations

import enum
import hmac
import struct
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, cast

import msgpack

from ..errors import (
    LocalProtocolError,
    LoginError,
    MPRPCError,
    RemoteProtocolError,
    RequestError,
    ResultLimitError,
)
from . import messages
from .codec import (
    _PACKER_KEEP_BYTES,
    MSGPACK_MAX_DEPTH,
    Codec,
    TooDeep,
    _pack,
    _packers,
    envelope_id,
    pack_checked,
    shared_codec,
)
from .constants import (
    DEFAULT_MAX_AUTH_MESSAGE_SIZE,
    DEFAULT_MAX_COLLECTION_LEN,
    DEFAULT_MAX_MESSAGE_SIZE,
    LENGTH_PREFIX_SIZE,
    PING,
    VERSION,
    Code,
    Compression,
    Feature,
    Key,
    shared_features,
)
from .events import (
    Authenticated,
    CallFailed,
    CallRequest,
    CancelRequest,
    ClientEvent,
    ConnectionFailed,
    Result,
    ServerEvent,
    StreamEnd,
    StreamItem,
    StreamStart,
    Welcome,
)
from .framing import (
    _COALESCE_LIMIT,
    _LENGTH,
    Framer,
    LengthFramer,
    Payload,
    SeparatorFramer,
    coalesce,
)
from .messages import PlainCall

ALL_FEATURES = frozenset(Feature)

# Results at least this large, of these types, are framed without packing the value
# (`_Connection._bulk_result`); msgpack writes a bin this large with a 4-byte length.
_BULK_MIN: Final = _COALESCE_LIMIT
# Characters of an error's message kept when the whole message cannot be sent (at most
# an eighth of max_message_size: four UTF-8 bytes a character, and room for the rest).
_ERROR_TEXT_KEPT: Final = 65536
_BULK_TYPES: Final = frozenset((bytes, bytearray, memoryview))
_BIN32: Final = struct.Struct(">BI")
_BIN32_MAX: Final = 0xFFFFFFFF

# Map keys and codes read on the client's fast paths, as plain module constants.
_K_MPRPC: Final = Key.MPRPC
_K_ID: Final = Key.ID
_K_METHOD: Final = Key.METHOD
_K_ARGS: Final = Key.ARGS
_K_DEADLINE: Final = Key.DEADLINE
_K_CODE: Final = Key.CODE
_K_MESSAGE: Final = Key.MESSAGE
_K_RESULT: Final = Key.RESULT
_K_METADATA: Final = Key.METADATA
_CODE_RESULT: Final = int(Code.RESULT)
_ID_MASK: Final = 0xFFFFFFFFFFFF
# An ID ends in its counter's last two hex digits: IDs of one block of 256 share the rest
# (`ClientConnection._new_id_block`), so an ID costs a concatenation, not a formatting.
_HEX2: Final = tuple(f"{i:02x}" for i in range(256))
_HEX2_BYTES: Final = tuple(h.encode() for h in _HEX2)
# The bytes of a call map with ARGS and nothing after them (`messages.call`, no RETURN,
# KWARGS, DEADLINE or METADATA), before its ID's: a fixmap of 4, MPRPC, "ID".
_CALL_HEAD: Final = b"\x84" + _pack(Key.MPRPC) + _pack(VERSION) + _pack(Key.ID)
# Per connection, the packed METHOD and ARGS keys around the names of this many methods
# at most are kept (any string may be called: the cache is not a way to grow memory).
_METHOD_PARTS_KEPT: Final = 256


def _result_head(make: Callable[[str, Any], dict[str, Any]] = messages.result) -> bytes:
    """The bytes of a 200 reply (`messages.result`, nothing deprecated, no metadata;
    `make`: a 202 with `messages.stream_item`) before its MESSAGE map: the same for every
    call (`ServerConnection.send_result`, `send_stream_item`)."""
    whole = _pack(make("", None))
    message = _pack({Key.ID: "", Key.RESULT: None})
    assert whole.endswith(message)
    return whole[: -len(message)]


_RESULT_HEAD: Final = _result_head()
_STREAM_ITEM_HEAD: Final = _result_head(messages.stream_item)
_RESULT_HEAD_SIZE: Final = len(_RESULT_HEAD)
# Results of these types are packed alone on the server's plain reply: nothing in them
# nests, so msgpack's nesting limit (which counts the levels above a value too) cannot
# refuse one alone that it would pack in the whole map, or the other way round.
_FLAT_TYPES: Final = frozenset((int, float, bool, str, type(None)))


# A call laid out as pymprpc's client writes it (`send_call_data`: an ID of 36
# characters, a method name of 1 to 31 bytes, arguments), read by the server without
# decoding the envelope (`ServerConnection.receive_call`). Offsets in a frame.
# A read's bytes are compared with these by slicing (`data[a:b] == prefix`): on 3.11
# `startswith(prefix, offset)` parses its arguments the slow way, twice the cost.
_CALL_ID36: Final = _CALL_HEAD + _pack("\x00" * 36)[:-36]
_CALL_ID_START: Final = LENGTH_PREFIX_SIZE + len(_CALL_ID36)
_CALL_ID_END: Final = _CALL_ID_START + 36
_METHOD_KEY: Final = _pack(Key.METHOD)
_CALL_NAME_AT: Final = _CALL_ID_END + len(_METHOD_KEY)  # the name's fixstr header
_ARGS_KEY: Final = _pack(Key.ARGS)
_ARGS_KEY_SIZE: Final = len(_ARGS_KEY)
# The bytes from METHOD's key to ARGS' key of such calls (the name in between), and the
# name they hold: one slice and one lookup read and check all three. Shared by every
# connection, and bounded (any name may be called: not a way to grow memory; past the
# bound a name is read as the first time, which costs a few calls more).
_CALL_NAMES: dict[bytes, str] = {}
_CALL_NAMES_KEPT: Final = 1024
_unpackb: Final = msgpack.unpackb


def _call_name(part: bytes) -> str | None:
    """The method name in `part` (METHOD's key, a name of 1 to 31 bytes, ARGS' key), or
    None if `part` is not that; remembered while there is room."""
    if (
        len(part) > len(_METHOD_KEY) + _ARGS_KEY_SIZE + 1
        and part.startswith(_METHOD_KEY)
        and part.endswith(_ARGS_KEY)
        and 0xA0 < part[len(_METHOD_KEY)] <= 0xBF  # a fixstr (a str8's 0xd9 is not)
        and part[len(_METHOD_KEY)] - 0xA0 == len(part) - len(_METHOD_KEY) - 1 - _ARGS_KEY_SIZE
    ):
        try:
            name = part[len(_METHOD_KEY) + 1 : -_ARGS_KEY_SIZE].decode()
        except UnicodeDecodeError:
            return None
        if len(_CALL_NAMES) < _CALL_NAMES_KEPT:
            _CALL_NAMES[part] = name
        return name
    return None


def _reply_layout(make: Callable[[str, Any], Any] = messages.result) -> tuple[bytes, bytes]:
    """The bytes before and after the ID of a 200 reply (`make`: a 202 stream item with
    `messages.stream_item`) to a call with one of our IDs, as a pymprpc server lays it
    out: the ID is 36 characters."""
    sample = _pack(make("\x00" * 36, None))
    head, _, tail = sample.partition(b"\x00" * 36)
    return head, tail[: -len(_pack(None))]


# A plain result in that layout is read without decoding the envelope: the bytes of
# the envelope are compared, and only the ID and the value are decoded.
_REPLY_HEAD, _REPLY_RESULT = _reply_layout()
# A stream item (202) differs only in its code: the same offsets, the same tail.
# (Were it laid out otherwise, its lane would simply never match.)
_ITEM_HEAD: Final = _reply_layout(messages.stream_item)[0]
# Offsets in a payload (in a frame: LENGTH_PREFIX_SIZE more).
_P_ID_START: Final = len(_REPLY_HEAD)
_P_ID_END: Final = _P_ID_START + 36
_P_VALUE_START: Final = _P_ID_END + len(_REPLY_RESULT)
_REPLY_ID_START: Final = LENGTH_PREFIX_SIZE + _P_ID_START
_REPLY_ID_END: Final = LENGTH_PREFIX_SIZE + _P_ID_END
_REPLY_VALUE_START: Final = LENGTH_PREFIX_SIZE + _P_VALUE_START
# A frozen dataclass's __init__ sets each field through object.__setattr__: for a
# stream's item, as much as decoding it. Its slots' descriptors set them directly.
_new_object: Final = object.__new__
_set_item_id: Final[Callable[[StreamItem, str], None]] = vars(StreamItem)["id"].__set__
_set_item_value: Final[Callable[[StreamItem, Any], None]] = vars(StreamItem)["value"].__set__
# A value at least this long is decoded from a view of the received bytes, not a copy.
_VIEW_FROM: Final = 4096


def _detached(error: MPRPCError) -> MPRPCError:
    """`error` without its traceback and chained exceptions, to be stored.

    A stored exception's traceback holds the frames that raised it, and they hold the
    decoded message and the connection itself: a reference cycle that keeps a failed
    (possibly huge) message alive until a full garbage collection.
    """
    error.__traceback__ = None
    error.__cause__ = None
    error.__context__ = None
    return error


def _naming(method: str) -> str:
    """The start of a call's error message naming its method, if known: `give(): `."""
    return f"{method}(): " if method else ""


class State(enum.Enum):
    """Life of a connection: authentication, then calls, then closed."""

    AUTHENTICATING = "authenticating"
    READY = "ready"
    CLOSED = "closed"


# Read for every message: module constants cost less than enum member lookups.
_AUTHENTICATING: Final = State.AUTHENTICATING
_READY: Final = State.READY
_CLOSED: Final = State.CLOSED


class Credentials:
    """Accepted (user, password) pairs, compared in constant time."""

    def __init__(self, pairs: Iterable[tuple[str, str]] | None = None) -> None:
        """Raises:
        TypeError: `pairs` is not a list of `(user, password)` pairs of `str`.
        ValueError: a user name is empty.
        """
        # A tuple: a server makes one of these per connection (ThrottledCredentials), and
        # an empty tuple is shared, where an empty list is one more object per connection.
        self._pairs = tuple((_utf8(u), _utf8(p)) for u, p in _checked_pairs(pairs))

    def check(self, username: str | None, password: str | None) -> bool:
        """Whether the pair is accepted (with none configured: only an anonymous login)."""
        if not self._pairs:
            # No credentials configured: only an anonymous login is accepted.
            return not username and not password
        user = _utf8(username or "")
        pw = _utf8(password or "")
        ok = False
        # Compare against every pair without short-circuiting, so timing does not reveal
        # which user names exist or how much of a password matched.
        for u, p in self._pairs:
            ok |= hmac.compare_digest(u, user) & hmac.compare_digest(p, pw)
        return ok

    def knows(self, username: str | None) -> bool:
        """Whether `username` is one of the configured accounts (compared in constant
        time, so the answer's timing does not reveal which names exist)."""
        user = _utf8(username or "")
        known = False
        for u, _ in self._pairs:
            known |= hmac.compare_digest(u, user)
        return known


def _checked_pairs(pairs: Any) -> list[tuple[str, str]]:
    """`auth=`'s pairs, or a TypeError saying what is wrong with them (never showing a
    password)."""
    example = "auth=[('alice', 'a-pw'), ('bob', 'b-pw')]"
    if pairs is None:
        return []
    if type(pairs) is tuple and len(pairs) == 2 and all(type(x) is str for x in pairs):
        raise TypeError(
            f"auth must be a list of (user, password) pairs, e.g. {example}; got one pair "
            f"({pairs[0]!r}, ...): put it in a list"
        )
    if isinstance(pairs, str | bytes):
        raise TypeError(f"auth must be a list of (user, password) pairs, e.g. {example}")
    if isinstance(pairs, Mapping):
        raise TypeError(
            f"auth must be a list of (user, password) pairs, e.g. {example}, not a "
            "mapping: pass auth=list(accounts.items())"
        )
    checked = []
    for pair in pairs:
        if not (
            isinstance(pair, tuple | list)
            and len(pair) == 2
            and isinstance(pair[0], str)
            and isinstance(pair[1], str)
        ):
            shown = (pair[0], "...") if isinstance(pair, tuple | list) and pair else pair
            raise TypeError(
                f"auth must be a list of (user, password) pairs of str, e.g. {example}; "
                f"got {shown!r}"
            )
        if not pair[0]:
            # An anonymous client logs in with no user name: such an account's
            # connections could not be told from anonymous ones (`current_call().user`,
            # AccessControl, RateLimit per user).
            raise ValueError(
                f"auth: a user name must not be empty (no name is how an anonymous client "
                f"logs in), e.g. {example}"
            )
        checked.append((pair[0], pair[1]))
    return checked


def _utf8(text: str) -> bytes:
    # A JSON peer can send a lone surrogate ("\\ud800"): it must fail the login, not the
    # connection handler.
    return text.encode("utf-8", "surrogatepass")


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """What a server connection announces and enforces."""

    version: str | None = None
    description: str | None = None
    idle_timeout: float | None = 180.0
    debug: bool = False
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    max_auth_message_size: int = DEFAULT_MAX_AUTH_MESSAGE_SIZE
    max_collection_len: int = DEFAULT_MAX_COLLECTION_LEN
    features: frozenset[Feature] = ALL_FEATURES


def _reframe(old: Framer, rest: Sequence[Payload], new: Framer) -> list[Payload]:
    """Move bytes received past a framing switch into the new framer."""
    pending = b"".join(b"".join(old.frame(bytes(p))) for p in rest) + old.take_buffer()
    return new.feed(pending) if pending else []


class _Connection:
    def __init__(self, max_message_size: int, max_items: int) -> None:
        self.state = _AUTHENTICATING
        self.max_message_size = max_message_size
        self.max_items = max_items
        self.features: frozenset[Feature] = frozenset()
        self._framer: Framer = SeparatorFramer(max_message_size)
        self._codec: Codec | None = None
        self._out: list[bytes] = []
        # How many bytes `chunks_to_send()` would return (an attribute, not a property:
        # the shells read it on every read; only this class changes it).
        self.pending_bytes = 0
        self.error: MPRPCError | None = None
        # The 405 the last send_result / send_stream_start / send_stream_item answered
        # instead of what it was given (not encodable, too large, bad metadata): for the
        # shell to report (a handler's bug the client alone would otherwise see). The
        # shell clears it.
        self.refused: MPRPCError | None = None
        # The codec's plain MessagePack packer once it is known to have one (see _encode).
        self._plain_pack: Callable[[Any], bytes] | None = None
        # Message sizes, for metrics: None (the default) measures nothing. See
        # `ServerConnection.measure_sizes` and `ClientConnection.measure_sizes`.
        self._sizes: list[int] | None = None

    @property
    def closed(self) -> bool:
        return self.state is _CLOSED

    @property
    def codec(self) -> Codec:
        return self._codec or shared_codec(False, None, self.max_message_size, self.max_items)

    @property
    def buffered_bytes(self) -> int:
        """Bytes received but not yet parsed (a partial frame)."""
        return self._framer.buffered

    def chunks_to_send(self) -> list[bytes]:
        """Take the bytes queued for the peer since the last call (empty if none).

        Returns:
            Wire chunks in order: small ones joined, large payloads left uncopied. Write
            them all, in order, before the next call.
        """
        if not self._out:
            return []
        out, self._out, self.pending_bytes = self._out, [], 0
        return out if len(out) == 1 else coalesce(out)

    def _push(self, chunks: list[bytes]) -> None:
        self._out += chunks
        for chunk in chunks:
            self.pending_bytes += len(chunk)

    def _encode(self, message: dict[str, Any]) -> list[bytes]:
        """Frame one message; LocalProtocolError if it cannot be sent on this connection."""
        pack = self._plain_pack
        try:
            payload = pack(message) if pack is not None else None
        except Exception:  # noqa: BLE001 - encode() below says what cannot be encoded
            payload = None
        if payload is None:
            payload = (self._codec or self.codec).encode(message)
        if len(payload) > self.max_message_size:
            raise LocalProtocolError(
                f"message of {len(payload)} bytes exceeds the maximum message size of "
                f"{self.max_message_size} bytes (raise max_message_size on both sides)"
            )
        return self._framer.frame(payload)

    def _bulk_result(self, id: str, value: Any, deprecated: bool) -> list[bytes] | None:
        """The wire chunks of a 200 (300) whose value is a large binary, with the value as
        a chunk of its own: packing it would copy it twice (into the packer's buffer, then
        into the `bytes` it returns), and the fresh memory of each copy costs more than the
        copy itself (page faults). Byte for byte what `_encode` makes of the same message.
        None when this does not apply (small, JSON, compressed, separator framing)."""
        size = value.nbytes if type(value) is memoryview else len(value)
        if (
            size < _BULK_MIN
            or size > _BIN32_MAX
            or self._plain_pack is None
            or type(self._framer) is not LengthFramer
        ):
            return None
        if type(value) is not bytes:
            if type(value) is memoryview and not value.c_contiguous:
                return None  # msgpack refuses it: _encode says so
            # A snapshot, as packing takes: the caller may change its buffer afterwards.
            value = bytes(value)
        head = self._plain_pack(messages.result(id, None, deprecated=deprecated))
        # The value is the last one packed (RESULT ends the MESSAGE map, MESSAGE ends the
        # envelope), so its placeholder (nil) is the last byte: the bin header replaces it.
        head = head[:-1] + _BIN32.pack(0xC6, size)
        total = len(head) + size
        if total > self.max_message_size:
            raise LocalProtocolError(
                f"message of {total} bytes exceeds the maximum message size of "
                f"{self.max_message_size} bytes (raise max_message_size on both sides)"
            )
        return [_LENGTH.pack(total) + head, value]

    def _use_length_framing(self, rest: Sequence[Payload]) -> list[Payload]:
        new = LengthFramer(self.max_message_size)
        pending = _reframe(self._framer, rest, new)
        self._framer = new
        return pending


class ServerConnection(_Connection):
    """The server's side of one connection.

    Until the client has authenticated, messages are limited to
    `settings.max_auth_message_size` (on the wire and after decompression); afterwards to
    `settings.max_message_size`.
    """

    def __init__(self, settings: ServerSettings, credentials: Credentials) -> None:
        super().__init__(settings.max_message_size, settings.max_collection_len)
        self.settings = settings
        self.credentials = credentials
        self._auth_limit = min(settings.max_auth_message_size, settings.max_message_size)
        self._framer.max_size = self._auth_limit
        self._inflight: dict[str, bool] = {}  # ID -> its stream has started
        self._deadlines = False  # DEADLINE negotiated
        self._head = b""  # the first byte received, until the codec is known
        self._metadata = False  # METADATA negotiated
        self._oneway = False  # ONEWAY negotiated
        self._held: MPRPCError | None = None  # a violation that waits for settle()
        # Decodes a payload in one C call once the connection is ready and its codec is
        # plain MessagePack (None before, with JSON or compression, and once closed).
        self._plain_unpack: Callable[[Payload], Any] | None = None
        # Length framing on a ready MessagePack connection that does not measure sizes
        # (and whose collections may hold a call's four keys): receive_call reads a call
        # laid out as our client writes it. Set once length framing starts; never again.
        self._laid_out = False
        # Length framing with plain MessagePack: send_result packs a flat result alone.
        self._flat_results = False

    def receive_call(self, data: bytes) -> PlainCall | Sequence[ServerEvent | PlainCall]:
        """Parse received bytes, with a fast lane for the most common case.

        If `data` is exactly one complete message and that message is a plain call
        (`messages.plain_call`: no deadline, metadata, RETURN or ONEWAY) with an ID not
        in flight, on a ready MessagePack connection, the call is registered in flight as
        `receive_data` would, and returned as `(id, method, args, kwargs)`: the
        `CallRequest(id, method, args, kwargs)` that `receive_data` would have returned,
        without building it. If `data` is several whole frames, each such a call laid out
        as our client writes it, they are registered and returned likewise, as a list of
        those tuples (`_laid_out_calls`). Anything else is handled exactly as
        `receive_data` handles it, and its events returned. Never raises, whatever the
        bytes.
        """
        unpack = self._plain_unpack
        if unpack is not None:
            framer = self._framer
            if (
                self._laid_out
                and data[LENGTH_PREFIX_SIZE:_CALL_ID_START] == _CALL_ID36  # (see _CALL_ID36)
                and not framer._buffer  # type: ignore[attr-defined]  # (_laid_out: a LengthFramer)
                and _LENGTH.unpack_from(data)[0]
                == len(data) - LENGTH_PREFIX_SIZE
                <= framer.max_size
            ):
                # {MPRPC: "0.1", ID: <36 chars>, METHOD: <name>, ARGS: [...]} laid out as
                # our client writes it: its envelope's bytes are compared, and only the
                # ID, the name and the arguments decoded. The arguments are decoded as
                # the one item of an array, as deep as in the map (msgpack's nesting
                # limit counts levels), with the codec's limits. Any doubt, and a
                # duplicate ID: the lane below, which gives what receive_data gives
                # (test_a_call_laid_out_as_our_client_writes_it_agrees_with_receive_data).
                try:
                    # The name's fixstr header says where ARGS' key ends (if it is one).
                    args_at = _CALL_NAME_AT + _ARGS_KEY_SIZE - 0x9F + data[_CALL_NAME_AT]
                    part = data[_CALL_ID_END:args_at]
                    name = _CALL_NAMES.get(part) or _call_name(part)
                    if name is not None:
                        id = data[_CALL_ID_START:_CALL_ID_END].decode()
                        packed = b"\x91" + data[args_at:]
                        if len(data) <= self.max_items:
                            # No limit to pass: msgpack's own (the input's length, for
                            # strings and collections alike) are no larger than the
                            # codec's here, and no input within them can break either.
                            # The codec's seven keywords cost more than the unpacking.
                            args = _unpackb(packed, strict_map_key=False)[0]
                        else:
                            args = unpack(packed)[0]
                        if type(args) is list and id not in self._inflight:
                            self._inflight[id] = False
                            return id, name, args, {}
                except Exception:  # noqa: BLE001 - the lane below says what is wrong
                    pass
            elif self._laid_out and data[LENGTH_PREFIX_SIZE:_CALL_ID_START] == _CALL_ID36:
                calls = self._laid_out_calls(data)
                if calls is not None:
                    return calls
            payload = framer.whole(data)
            if payload is not None:
                try:
                    msg = unpack(payload)
                except Exception:  # noqa: BLE001 - receive_data says what is wrong
                    return self.receive_data(data)
                call = messages.plain_call(msg)
                if call is not None and call[0] not in self._inflight:
                    self._inflight[call[0]] = False
                    return call
                # Decoded already: handled as receive_data handles a decoded message.
                try:
                    event = self._handle(msg)
                except RemoteProtocolError as exc:
                    self.fail(exc)
                    return []
                return [] if event is None else [event]
        return self.receive_data(data)

    def _laid_out_calls(self, data: bytes) -> list[ServerEvent | PlainCall] | None:
        """Every frame of `data` read as receive_call's single-frame lane reads one (a
        plain call laid out as our client writes it), registered in flight and returned
        as `(id, method, args, kwargs)` tuples, in order; or None, with nothing changed,
        if any frame is not such a call, `data` does not end on a frame's end, something
        is buffered, or an ID is in flight already or repeated (receive_data then reads
        it all and says what is wrong). A read of pipelined calls, W2's shape."""
        framer = self._framer
        if framer._buffer:  # type: ignore[attr-defined]  # (_laid_out: a LengthFramer)
            return None
        max_size = framer.max_size
        small = self.max_items
        inflight = self._inflight
        calls: list[ServerEvent | PlainCall] = []
        ids: set[str] = set()
        pos, end = 0, len(data)
        try:
            while pos < end:
                (size,) = _LENGTH.unpack_from(data, pos)
                stop = pos + LENGTH_PREFIX_SIZE + size
                if size > max_size or stop > end:
                    return None
                if data[pos + 4 : pos + _CALL_ID_START] != _CALL_ID36:
                    return None
                # As in receive_call, with every offset from this frame's start and the
                # name's part bounded by the frame's end.
                args_at = pos + _CALL_NAME_AT + _ARGS_KEY_SIZE - 0x9F + data[pos + _CALL_NAME_AT]
                if args_at >= stop:
                    return None
                part = data[pos + _CALL_ID_END : args_at]
                name = _CALL_NAMES.get(part) or _call_name(part)
                if name is None:
                    return None
                id = data[pos + _CALL_ID_START : pos + _CALL_ID_END].decode()
                packed = b"\x91" + data[args_at:stop]
                if size <= small:  # see receive_call: no limit of the codec's to pass
                    args = _unpackb(packed, strict_map_key=False)[0]
                else:
                    args = self._plain_unpack(packed)[0]  # type: ignore[misc]  # (_laid_out)
                if type(args) is not list or id in inflight or id in ids:
                    return None
                ids.add(id)
                calls.append((id, name, args, {}))
                pos = stop
        except Exception:  # noqa: BLE001 - receive_data says what is wrong
            return None
        for call in calls:  # in order, as receive_data registers them
            inflight[call[0]] = False  # type: ignore[index]
        return calls

    def receive_data(self, data: bytes) -> list[ServerEvent]:
        """Parse received bytes.

        Returns:
            The events of every message now complete, in order. Replies the protocol
            dictates are queued for `chunks_to_send()`. After a protocol violation the
            connection is closed (`closed`, `error`) and its 505/506/501 reply queued;
            if messages before it produced events, those are returned and the closing
            waits for `settle()`, which the shell calls once it has handled them. Never
            raises, whatever the bytes.
        """
        if self.state is _CLOSED:
            return []
        if self._held is not None:
            self.settle()  # the shell did not: parse nothing past the violation
            return []
        events: list[ServerEvent] = []
        if self._codec is None and not self._head:
            self._head = data[:1]
        measure = self._sizes is not None  # a flag on the server: see measure_sizes
        try:
            payloads = self._framer.feed(data)
            i = 0
            while i < len(payloads) and not self.closed:  # a message may close it
                payload = payloads[i]
                i += 1
                codec = self._codec
                if codec is None:
                    codec = self._codec = Codec.detect(payload, self._auth_limit, self.max_items)
                try:
                    msg = codec.decode(payload)
                except TooDeep as exc:
                    self._refuse_too_deep(exc)
                    continue
                event = self._handle(msg)
                if event is None:
                    continue
                events.append(event)
                if measure and type(event) is CallRequest:
                    object.__setattr__(event, "size", len(payload) + self._framer.overhead)
                if type(event) is Authenticated and Feature.LENGTH_FRAMING in self.features:
                    payloads = self._use_length_framing(payloads[i:])
                    i = 0
                    # What the fast paths need of the connection, known from now on.
                    self._laid_out = self._plain_unpack is not None and self.max_items >= 4
                    self._flat_results = self._plain_pack is not None
        except RemoteProtocolError as exc:
            if self._codec is None:
                # The first message was refused before its codec was known (too big,
                # say): a JSON client still gets its error in JSON.
                self._codec = Codec.for_reply(self._head, self._auth_limit, self.max_items)
            if events:
                # Messages before the bad one are handled first, as if they had come in
                # an earlier read: what a client gets must not depend on TCP segmentation.
                self._held = _detached(exc)
                self._framer.clear()
            else:
                self.fail(exc)
        return events

    def _refuse_too_deep(self, exc: TooDeep) -> None:
        """Answer the call a too-deep message carried (its ID read before the deep
        value) with 400, keeping the connection: with length framing the next message
        starts where this one's length said. Raises `exc` when that cannot be done."""
        id = envelope_id(exc.payload) if self.state is _READY else None
        if id is None or type(self._framer) is not LengthFramer:
            raise RemoteProtocolError(exc.message) from None  # the 506 it always was
        message = (
            "the call could not be read: it nests deeper than msgpack's parser reads "
            f"({MSGPACK_MAX_DEPTH} levels, the message's own included); nothing was run"
        )
        self._queue_error(id, RequestError(message, id=id))

    def settle(self) -> None:
        """Close for a protocol violation held back by the last `receive_data()`.

        A read whose bad message follows valid ones returns their events with the
        connection still open, so that the shell can start those calls first (their
        replies are queued before the 505/506, exactly as if the bad message had come in a
        later read); call this once the events are handled. Nothing happens otherwise.
        """
        held = self._held
        if held is not None:
            self._held = None
            self.fail(held)

    def measure_sizes(self) -> None:
        """From now on, set each `CallRequest`'s `size`: its frame's bytes (for
        metrics; a connection that does not measure leaves it unset and pays nothing)."""
        self._sizes = []
        self._plain_unpack = None  # receive_call's fast lane builds no CallRequest
        self._laid_out = False

    def _handle(self, msg: Any) -> ServerEvent | None:
        if type(msg) is not dict or msg.get(Key.MPRPC) != VERSION:
            msg = messages.check_envelope(msg)  # raises, saying what is wrong
        if self.state is _AUTHENTICATING:
            if Key.AUTH not in msg:
                self.fail(LoginError("the first message must be the auth request"))
                return None
            return self._authenticate(msg)
        if Key.ID in msg:
            if msg.get(Key.CANCEL) is not None:
                return self._cancel(msg[Key.ID])
            return self._call(msg)
        if msg.get(Key.HEARTBEAT) == PING:
            self._queue(messages.pong())
            return None
        if Key.AUTH in msg:
            raise RemoteProtocolError("the connection is already authenticated", syntax=False)
        raise RemoteProtocolError("message is neither a heartbeat nor a call")

    def _authenticate(self, msg: dict[str, Any]) -> Authenticated | None:
        username, password, wanted = messages.parse_auth(msg)
        if not self.credentials.check(username, password):
            self.fail(LoginError("unknown user name or wrong password"))
            return None
        announced = Key.FEATURES in msg
        self.features = shared_features(wanted & self.settings.features)
        self._deadlines = Feature.DEADLINE in self.features
        self._metadata = Feature.METADATA in self.features
        self._oneway = Feature.ONEWAY in self.features
        # Authenticated: from now on the full message size applies.
        base = self.codec
        codec = self._codec = shared_codec(
            base.json, base.compression, self.max_message_size, base.max_items
        )
        self._framer.max_size = self.max_message_size
        self._plain_unpack = codec.plain_unpacker() if self._sizes is None else None
        self._plain_pack = codec.plain_packer()
        self._queue(
            messages.welcome(
                version=self.settings.version,
                description=self.settings.description,
                debug=codec.json,
                compression=codec.compression,
                idle_timeout=self.settings.idle_timeout or 0,
                features=self.features if announced else None,
            )
        )
        self.state = _READY
        return Authenticated(username, self.features)

    def _call(self, msg: dict[str, Any]) -> CallRequest | None:
        try:
            request = messages.parse_call(msg, self._deadlines, self._metadata, self._oneway)
        except RequestError as exc:
            self._queue_error(_reply_id(msg.get(Key.ID)), exc)
            return None
        if request.id in self._inflight:
            # The original call keeps its ID; only the duplicate is refused.
            self._queue_error(
                request.id,
                RequestError(f"duplicate in-flight ID {request.id!r}", id=request.id),
            )
            return None
        self._inflight[request.id] = False
        return request

    def _cancel(self, id: Any) -> CancelRequest | None:
        # Answered like a call with the same ID would be: 400 echoing an integer or empty
        # ID, 506 only when there is no ID to answer.
        if not isinstance(id, str) or not id:
            self._queue_error(
                _reply_id(id),
                RequestError(f"CANCEL needs the string ID of a call, got {messages.describe(id)}"),
            )
            return None
        if Feature.CANCEL not in self.features:
            self._queue_error(id, RequestError("CANCEL was not negotiated on this connection"))
            return None
        if self._inflight.pop(id, None) is None:
            return None  # already finished: nothing left to cancel
        return CancelRequest(id)

    def _queue(self, message: dict[str, Any]) -> None:
        self._push(self._encode(message))

    def _queue_flat(self, head: bytes, id: str, value: Any) -> bool:
        """Queue a reply whose envelope's bytes before its MESSAGE map are `head` (a
        flat result's or stream item's, on a length-framed plain MessagePack
        connection), packing only the map {ID, RESULT}, with the thread's packer inline
        (`_pack`). The same bytes and chunks as packing the whole message and framing
        it (tests/unit/test_server_fast_paths.py); False, with nothing queued, for a
        value that cannot be packed or is too large: the general path says why."""
        try:
            packer = getattr(_packers, "packer", None)
            if packer is None:
                packed = _pack({_K_ID: id, _K_RESULT: value})
            else:
                packed = packer.pack({_K_ID: id, _K_RESULT: value})
                if len(packed) > _PACKER_KEEP_BYTES:
                    _packers.packer = None
        except Exception:  # noqa: BLE001 - the general path says what cannot be sent
            return False
        size = len(head) + len(packed)
        if size > self.max_message_size:
            return False  # the general path answers 405
        if size < _COALESCE_LIMIT:  # framed as LengthFramer.frame does
            self._out.append(_LENGTH.pack(size) + head + packed)
        else:
            self._out += (_LENGTH.pack(size), head + packed)
        self.pending_bytes += LENGTH_PREFIX_SIZE + size
        return True

    def _queue_error(
        self, id: str | int | None, error: MPRPCError, frame: str | None = None
    ) -> None:
        if id is None:
            self.fail(RemoteProtocolError(error.message))
            return
        try:
            self._queue(messages.call_error(id, error, frame))
            return
        except LocalProtocolError:
            pass
        # DATA (echoed arguments, traceback) may have made it undeliverable: the bare error.
        bare = type(error)(error.message, exception=error.exception, id=error.id)
        try:
            self._queue(messages.call_error(id, bare, None))
            return
        except LocalProtocolError as exc:
            problem = exc
        # A message too long to send (a handler's exception built from a huge value): the
        # same error, its message cut, keeps its code and exception name for the caller.
        keep = min(_ERROR_TEXT_KEPT, self.max_message_size // 8)
        message = error.message
        if type(message) is str and len(message) > keep:  # (a handler may give any object)
            cut = (
                f"{message[:keep]}... (cut from {len(message)} characters to fit max_message_size)"
            )
            try:
                self._queue(
                    messages.call_error(
                        id, type(error)(cut, exception=error.exception, id=error.id), None
                    )
                )
                return
            except Exception:  # noqa: BLE001 - this step must not leave the call unanswered
                pass
        # Its text cannot be sent either (a handler's message, or a method name a JSON peer
        # spelt with escapes, holding the separator; or too long): answered like a result
        # that cannot be sent, so the caller is never left waiting.
        refusal = ResultLimitError(f"error {error.code} not delivered: {problem}", id=error.id)
        try:
            self._queue(messages.call_error(id, refusal, None))
        except LocalProtocolError:
            # Not even the ID can be echoed (a JSON peer can spell the separator with
            # escapes): nothing can answer this call, and the client would wait for ever.
            self.fail(problem)

    # -- outcomes reported by the shell ---------------------------------------------

    def send_result(
        self,
        id: str,
        value: Any,
        *,
        deprecated: bool = False,
        metadata: dict[str, str] | None = None,
        method: str = "",
    ) -> None:
        """Queue the result of call `id` (200, or 300 if `deprecated`) and retire the ID.

        `metadata` (response metadata) goes with it when the connection negotiated
        `metadata`. A value that cannot be sent (not encodable, over the size limit,
        containing the separator in legacy framing, or malformed metadata) is answered
        with 405 naming the problem instead. Nothing is queued for an ID not in flight
        (cancelled, already answered) or once the connection is closed. Never raises.
        """
        if self._inflight.pop(id, None) is None or self.state is _CLOSED:
            return
        if (
            type(value) in _FLAT_TYPES
            and self._flat_results
            and not deprecated
            and not (metadata and self._metadata)
        ):
            # The usual reply: `_queue_flat(_RESULT_HEAD, id, value)`, inline (the call
            # costs 600 instructions, 1% of a call's on the server: bench.instructions).
            try:
                packer = getattr(_packers, "packer", None)
                if packer is None:
                    packed = _pack({_K_ID: id, _K_RESULT: value})
                else:
                    packed = packer.pack({_K_ID: id, _K_RESULT: value})
                    if len(packed) > _PACKER_KEEP_BYTES:
                        _packers.packer = None
            except Exception:  # noqa: BLE001 - the general path says what cannot be sent
                pass
            else:
                size = _RESULT_HEAD_SIZE + len(packed)
                if size <= self.max_message_size:  # else the general path answers 405
                    if size < _COALESCE_LIMIT:  # framed as LengthFramer.frame does
                        self._out.append(_LENGTH.pack(size) + _RESULT_HEAD + packed)
                    else:
                        self._out += (_LENGTH.pack(size), _RESULT_HEAD + packed)
                    self.pending_bytes += LENGTH_PREFIX_SIZE + size
                    return
        try:
            if metadata and self._metadata:
                metadata = self._check_response_metadata(metadata)
            else:
                metadata = None
            chunks = None
            if type(value) in _BULK_TYPES and not metadata:
                chunks = self._bulk_result(id, value, deprecated)
            if chunks is None:
                message = messages.result(id, value, deprecated=deprecated, metadata=metadata)
                chunks = self._encode(message)
        except LocalProtocolError as exc:
            error = ResultLimitError(f"{_naming(method)}result not delivered: {exc}", id=id)
            self.refused = error
            self._queue_error(id, error)
            return
        # _push, inline: this runs for every call.
        self._out += chunks
        for chunk in chunks:
            self.pending_bytes += len(chunk)

    def send_stream_start(
        self, id: str, *, deprecated: bool = False, metadata: dict[str, str] | None = None
    ) -> bool:
        """Queue 201 (301 if `deprecated`) for call `id`, with `metadata` (response
        metadata) when the connection negotiated `metadata` (malformed: 405 instead).

        Returns:
            False if the call is no longer wanted (cancelled, connection closed): do not
            produce its items.
        """
        if id not in self._inflight or self.closed:
            return False
        self._inflight[id] = True
        code = Code.EXPIRE_STREAM_START if deprecated else Code.STREAM_START
        try:
            if metadata and self._metadata:
                fields = {Key.METADATA: self._check_response_metadata(metadata)}
                self._queue(messages.response(code, id, **fields))
            else:
                # (Separator framing refuses a start whose ID ends like the separator.)
                self._queue(messages.response(code, id))
        except LocalProtocolError as exc:
            error = ResultLimitError(f"stream not started: {exc}", id=id)
            self.refused = error
            self.send_error(id, error)
            return False
        return True

    @staticmethod
    def _check_response_metadata(metadata: dict[str, str]) -> dict[str, str]:
        try:
            return messages.check_metadata(metadata)
        except ValueError as exc:
            raise LocalProtocolError(f"response metadata not sent: {exc}") from None

    def send_stream_item(self, id: str, value: Any, method: str = "") -> bool:
        """Queue one item (202) of stream `id` (a call of `method`, named in an error).

        Returns:
            False if the stream must stop: cancelled, connection closed, or the item could
            not be sent (then a 405 naming the problem is queued and the ID retired).
        """
        if not self._inflight.get(id) or self.state is _CLOSED:
            return False
        if (
            type(value) in _FLAT_TYPES
            and self._flat_results
            and self._queue_flat(_STREAM_ITEM_HEAD, id, value)
        ):
            return True  # as send_result's flat results
        try:
            self._queue(messages.stream_item(id, value))
        except LocalProtocolError as exc:
            message = f"{_naming(method)}stream item not delivered: {exc}"
            error = ResultLimitError(message, id=id)
            self.refused = error
            self.send_error(id, error)
            return False
        return True

    def send_stream_end(self, id: str) -> None:
        """Queue 206 for stream `id` and retire the ID (nothing if no longer in flight)."""
        if self._inflight.pop(id, None) is None or self.closed:
            return
        self._queue(messages.response(Code.STREAM_END, id))

    def send_error(self, id: str, error: MPRPCError, *, frame: str | None = None) -> None:
        """Queue a call error for `id` and retire the ID.

        `frame` (a traceback) is sent only in debug mode; if the error's DATA cannot be
        encoded, the bare error is sent. Nothing is queued for an ID not in flight.
        """
        if self._inflight.pop(id, None) is None or self.closed:
            return
        self._queue_error(id, error, frame if self.settings.debug else None)

    def awaits_reply(self, id: str) -> bool:
        """Whether call `id` is still owed its reply (in flight on an open connection:
        not answered, not cancelled by the client)."""
        return id in self._inflight and not self.closed

    def release(self, id: str) -> None:
        """Retire an ID whose outcome is kept rather than sent (RETURN false)."""
        self._inflight.pop(id, None)

    def fail(self, error: MPRPCError) -> None:
        """Queue the connection-level error for `error` and close.

        The code sent is `error.reply_code` for a `RemoteProtocolError` (505/506), the
        error's own code for a 5xx error, else 500. `error` is kept, without its
        traceback, in `self.error`.
        """
        if self.closed:
            return
        self.error = _detached(error)
        self._plain_unpack = None  # a closed connection parses nothing more
        self._laid_out = False
        if isinstance(error, RemoteProtocolError):
            code = error.reply_code
        elif error.code is not None and error.code >= 500:
            code = error.code
        else:
            code = Code.SERVER_ERROR
        # A bare code always encodes: no separator, far below any size limit.
        self._push(self._encode(messages.connection_error(code)))
        self.state = _CLOSED
        self._inflight.clear()
        self._framer.clear()  # a closed connection parses nothing more


def _reply_id(raw: Any) -> str | int | None:
    """The ID to echo in a 400 for a bad call or cancel, None if there is none."""
    if isinstance(raw, str) or (isinstance(raw, int) and not isinstance(raw, bool)):
        return raw
    return None


class ClientConnection(_Connection):
    """The client's side of one connection.

    `max_collection_len` bounds the arrays and maps of replies (default: only the message
    size does, as each element takes at least one byte).
    """

    def __init__(
        self,
        username: str | None = None,
        password: str | None = None,
        *,
        json: bool = False,
        compression: Compression | None = None,
        features: frozenset[Feature] = ALL_FEATURES,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        max_collection_len: int | None = None,
    ) -> None:
        # A client trusts its server more than a server its clients: by default only the
        # message size bounds a reply's collections (each element takes at least a byte).
        max_items = max_message_size if max_collection_len is None else max_collection_len
        super().__init__(max_message_size, max_items)
        self._codec = shared_codec(json, compression, max_message_size, max_items)
        self._username = username
        self._password = password
        self._wanted = features
        self.welcome: Welcome | None = None
        self._pending: dict[str, bool] = {}  # ID -> its stream has started
        # UUID-shaped IDs: a random prefix per connection and a counter in the last 12 hex
        # digits, unique like uuid4 for our purposes at a fraction of its cost.
        # The block of 256 IDs the last one was in, its IDs' shared head (all but the
        # last two hex digits), and a call's bytes up to its ID's last two digits.
        self._id_block = -1
        self._id_head = ""
        self._call_head = b""
        self._id_prefix = str(uuid.uuid4())[:24]
        self._id_counter = 0
        # Method name -> packed METHOD key, name and ARGS key (`send_call_data`).
        self._method_parts: dict[str, bytes] = {}
        self._deadlines = False  # DEADLINE negotiated
        self._metadata = False  # METADATA negotiated
        # MessagePack without compression, with no collection limit below the message
        # size: a message is then decoded by msgpack alone on the fast paths
        # (`receive_result`, `send_call_data`), as the codec would.
        self._plain_codec = not json and compression is None and max_items >= max_message_size
        # Whether packing refuses an int outside INT_MIN..INT_MAX (MessagePack, compressed
        # or not) rather than carrying it (JSON): a typed call may leave that check to it.
        self.refuses_wide_ints = not json

    def start(self) -> None:
        """Queue the auth request: the first bytes a client sends.

        Raises:
            LocalProtocolError: the credentials cannot be encoded.
        """
        self._push(
            self._encode(messages.auth_request(self._username, self._password, self._wanted))
        )

    def receive_data(self, data: bytes) -> list[ClientEvent]:
        """Parse bytes received from the server.

        Returns:
            The events of every message now complete, in order; events of calls no
            longer pending are dropped. Bytes that violate the protocol close the
            connection and end the list with `ConnectionFailed(RemoteProtocolError)`;
            a 5xx reported by the server ends it with `ConnectionFailed` of that error.
            Never raises, whatever the bytes.
        """
        if self.state is _CLOSED:
            return []
        events: list[ClientEvent] = []
        codec = self._codec or self.codec
        sizes = self._sizes
        try:
            payloads = self._framer.feed(data)
            i = 0
            while i < len(payloads) and not self.closed:  # a message may close it
                payload = payloads[i]
                i += 1
                event = self._reply_event(codec, payload)
                if event is None:
                    continue
                events.append(event)
                if sizes is not None:
                    sizes.append(len(payload) + self._framer.overhead)
                if type(event) is Welcome and Feature.LENGTH_FRAMING in self.features:
                    payloads = self._use_length_framing(payloads[i:])
                    i = 0
        except RemoteProtocolError as exc:
            events.append(self.close(exc))
        return events

    def receive_replies(self, data: bytes) -> list[tuple[str, Any] | ClientEvent]:
        """`receive_data`, except that a plain result (200, no metadata) of a pending
        call laid out as our server writes it comes as an `(id, value)` pair instead of a
        `Result`: its envelope's bytes are compared, only its ID and value decoded. A
        stream item (202) laid out likewise is read the same way (its `StreamItem` is
        the one `receive_data` gives). Never raises, whatever the bytes."""
        if (
            not self._plain_codec
            or self.state is not _READY
            or type(self._framer) is not LengthFramer
            or self._sizes is not None  # measured: receive_data notes every size
        ):
            return cast("list[tuple[str, Any] | ClientEvent]", self.receive_data(data))
        out: list[tuple[str, Any] | ClientEvent] = []
        codec = self._codec or self.codec
        pending = self._pending
        try:
            # Positions in the received bytes rather than a view per payload: comparing
            # and slicing views costs more than a stream item's whole payload (W3).
            buffer, spans = self._framer.feed_spans(data)
            # The last stream item's ID, and its envelope's bytes up to its value: the
            # next items of that stream are told by one comparison. (Slices compared,
            # as in receive_call: see _CALL_ID36.)
            item_id: str | None = None
            item_prefix = b""
            for i in range(0, len(spans), 2):
                if self.state is not _READY:
                    break  # a message closed the connection
                start, stop = spans[i], spans[i + 1]
                value_at = start + _P_VALUE_START
                laid_out = False
                if value_at < stop:
                    if item_id is not None and buffer[start:value_at] == item_prefix:
                        result, laid_out, id = False, True, item_id
                    else:
                        at = start + _P_ID_START
                        head = buffer[start:at]
                        result = head == _REPLY_HEAD
                        laid_out = (result or head == _ITEM_HEAD) and buffer[
                            at + 36 : value_at
                        ] == _REPLY_RESULT
                        id = None
                if laid_out:
                    # A plain result (200), or a stream's item (202), laid out as our
                    # server writes it: only its ID and value are decoded. Any doubt, and
                    # any state _handle would refuse, the general path says what is wrong.
                    try:
                        if id is None:
                            id = str(buffer[at : at + 36], "utf-8")
                        value = msgpack.unpackb(
                            buffer[value_at:stop]
                            if stop - value_at < _VIEW_FROM
                            else memoryview(buffer)[value_at:stop],
                            raw=False,
                            strict_map_key=False,
                        )
                    except Exception:  # noqa: BLE001 - the general path says what is wrong
                        pass
                    else:
                        if result:
                            started = pending.pop(id, None)
                            if started is False:
                                out.append((id, value))
                                continue
                            if started is not None:
                                pending[id] = True  # inside a stream: _handle says so
                        else:
                            started = pending.get(id)
                            if started:  # the StreamItem _handle gives a started stream
                                if id is not item_id:
                                    item_id, item_prefix = id, bytes(buffer[start:value_at])
                                # StreamItem(id, value), its fields set by their slots
                                item = _new_object(StreamItem)
                                _set_item_id(item, id)
                                _set_item_value(item, value)
                                out.append(item)
                                continue
                        if started is None:
                            continue  # a call no longer pending: dropped
                event = self._reply_event(codec, memoryview(buffer)[start:stop])
                if event is not None:
                    out.append(event)
        except RemoteProtocolError as exc:
            out.append(self.close(exc))
        return out

    def receive_result(self, data: bytes) -> tuple[str, Any] | list[tuple[str, Any] | ClientEvent]:
        """`receive_replies`, with a shortcut for the most frequent read of a busy
        client: exactly one length-framed message holding a plain result (200, no
        metadata) of a pending call.

        Returns:
            `(id, value)` for such a read (the call is no longer pending), else what
            `receive_replies(data)` returns. Never raises, whatever the bytes.
        """
        framer = self._framer
        if (
            self._plain_codec
            and self._sizes is None  # measured: receive_data notes every size
            and self.state is _READY
            and type(framer) is LengthFramer
            and not framer._buffer  # nothing left over from an earlier read
            and len(data) > 4
            and _LENGTH.unpack_from(data)[0] == len(data) - 4 <= self.max_message_size
        ):
            if (  # slices compared, not startswith at an offset: see _CALL_ID36
                data[LENGTH_PREFIX_SIZE:_REPLY_ID_START] == _REPLY_HEAD
                and data[_REPLY_ID_END:_REPLY_VALUE_START] == _REPLY_RESULT
            ):
                # {MPRPC: "0.1", CODE: 200, MESSAGE: {ID: <36 chars>, RESULT: value}}, laid
                # out as our server writes it: only the ID and the value are decoded.
                try:
                    id = data[_REPLY_ID_START:_REPLY_ID_END].decode()
                    value = msgpack.unpackb(
                        data[_REPLY_VALUE_START:], raw=False, strict_map_key=False
                    )
                except Exception:  # noqa: BLE001 - the general path says what is wrong
                    return self.receive_replies(data)
                started = self._pending.pop(id, None)
                if started is False:
                    return id, value
                if started is None:
                    return []  # a call no longer pending: dropped
                self._pending[id] = True  # inside a stream: the general path says so
                return self.receive_replies(data)
            try:
                # The codec's limits are the frame's length here (see _plain_codec),
                # which is msgpack's own bound for every string and collection.
                msg = msgpack.unpackb(data[4:], raw=False, strict_map_key=False)
            except Exception:  # noqa: BLE001 - the general path says what is wrong
                return self.receive_replies(data)
            if type(msg) is dict and msg.get(_K_MPRPC) == VERSION:
                code = msg.get(_K_CODE)
                message = msg.get(_K_MESSAGE)
                if (
                    code == _CODE_RESULT
                    and type(code) is int
                    and type(message) is dict
                    and _K_METADATA not in message
                ):
                    raw_id = message.get(_K_ID)
                    if type(raw_id) is str:
                        started = self._pending.pop(raw_id, None)
                        if started is False:
                            return raw_id, message.get(_K_RESULT)
                        if started is None:
                            return []  # a call no longer pending: dropped
                        self._pending[raw_id] = True  # inside a stream: _handle says so
            # Anything else: the general path, without decoding the message again.
            try:
                event = self._handle(messages.parse_response(msg))
            except RemoteProtocolError as exc:
                return [self.close(exc)]
            return [] if event is None else [event]
        return self.receive_replies(data)

    def measure_sizes(self) -> None:
        """From now on, note the frame size of each message that `receive_data` returns
        an event for; `take_sizes()` gives them (for metrics: a connection that does
        not measure pays nothing)."""
        if self._sizes is None:
            self._sizes = []

    def take_sizes(self) -> list[int]:
        """The frame sizes, in bytes, of the events `receive_data` returned since the
        last call, in the same order (empty unless `measure_sizes()` was called; a
        `ConnectionFailed` for bytes that could not be read has none)."""
        sizes = self._sizes
        if not sizes:
            return []
        self._sizes = []
        return sizes

    def _handle(self, event: ClientEvent) -> ClientEvent | None:
        if self.state is _READY:
            # Most frequent first; events of calls no longer pending are dropped. A reply
            # out of order (202/206 before 201, a second 201, 200 after 201) fails its call
            # with RemoteProtocolError: waiting for a 201 that never comes would hang it.
            if type(event) is StreamItem:
                started = self._pending.get(event.id)
                if started is False:
                    return self._out_of_order(event.id, "stream item (202) before its start (201)")
                return event if started else None
            if type(event) is Result or type(event) is CallFailed:
                started = self._pending.pop(event.id, None)
                if started and type(event) is Result:
                    return self._out_of_order(event.id, "result (200/300) inside a stream")
                return event if started is not None else None
            if type(event) is StreamEnd:
                started = self._pending.pop(event.id, None)
                if started is False:
                    return self._out_of_order(event.id, "stream end (206) without a stream")
                return event if started else None
            if type(event) is StreamStart:
                started = self._pending.get(event.id)
                if started is None:
                    return None
                if started:
                    return self._out_of_order(event.id, "second stream start (201)")
                self._pending[event.id] = True
                return event
            if type(event) is ConnectionFailed:
                return self.close(event.error)
            if type(event) is Welcome:
                return self.close(RemoteProtocolError("unexpected second welcome reply"))
            return event  # Pong
        if isinstance(event, ConnectionFailed):
            return self.close(event.error)
        if not isinstance(event, Welcome):
            return self.close(RemoteProtocolError(f"expected the welcome reply, got {event}"))
        unasked = event.features - self._wanted
        if unasked:
            # The server would switch framing (or expect cancels) this client did not
            # ask for: nothing after this welcome could be read.
            names = ", ".join(sorted(f.value for f in unasked))
            return self.close(
                RemoteProtocolError(
                    f"malformed welcome reply from the server: FEATURES lists {names}, "
                    "which this client did not ask for"
                )
            )
        self.welcome = event
        self.features = event.features
        self._deadlines = Feature.DEADLINE in self.features
        self._metadata = Feature.METADATA in self.features
        self.state = _READY
        return event

    def _reply_event(self, codec: Codec, payload: bytes | memoryview) -> ClientEvent | None:
        """The event of one reply payload (None: dropped); raises RemoteProtocolError for
        bytes that break the connection."""
        try:
            msg = codec.decode(payload)
        except TooDeep as exc:
            return self._unreadable_reply(exc)
        return self._handle(messages.parse_response(msg))

    def _unreadable_reply(self, exc: TooDeep) -> CallFailed | None:
        """Fail the call whose reply nests too deep to read (its ID read before the deep
        value), keeping the connection: with length framing the next message starts
        where this one's length said; later replies to that call are dropped. Raises
        `exc` when that cannot be done."""
        id = envelope_id(exc.payload, Key.MESSAGE) if self.state is _READY else None
        if id is None or type(self._framer) is not LengthFramer:
            raise RemoteProtocolError(exc.message) from None  # the 506 it always was
        if self._pending.pop(id, None) is None:
            return None  # a call no longer pending: dropped, as its reply would be
        error = RemoteProtocolError(
            f"the server's reply to call {id} cannot be read: it nests deeper than "
            f"msgpack's parser reads ({MSGPACK_MAX_DEPTH} levels, the message's own "
            "included)",
            syntax=False,
        )
        error.id = id
        return CallFailed(id, error)

    def _out_of_order(self, id: str, what: str) -> CallFailed:
        """Fail call `id` for a reply the protocol does not allow at this point; later
        replies to it are dropped (it is no longer pending)."""
        self._pending.pop(id, None)
        error = RemoteProtocolError(f"the server sent a {what} for call {id}", syntax=False)
        error.id = id
        return CallFailed(id, error)

    def close(self, error: MPRPCError) -> ConnectionFailed:
        """Mark the connection closed (e.g. the socket dropped); pending calls are dropped.

        Returns:
            The `ConnectionFailed` event for `error` (kept, without traceback, in `error`).
        """
        self.state = _CLOSED
        self.error = _detached(error)
        self._pending.clear()
        self._framer.clear()
        return ConnectionFailed(error)

    def send_call(
        self,
        method: str,
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        returns: bool = True,
        deadline: float | None = None,
        id: str | None = None,
        metadata: dict[str, str] | None = None,
        oneway: bool = False,
    ) -> str:
        """Queue a call (a `deadline` in seconds and `metadata` are sent only if
        negotiated; a negative deadline is sent as 0, already expired).

        `oneway`: nothing comes back. With feature `oneway` negotiated the call carries
        `ONEWAY` (the server keeps nothing for it); otherwise it falls back to
        `RETURN: false`.

        Returns:
            The call's ID; its outcome arrives as events with that ID (none if `returns`
            is False or `oneway`: fetch a kept outcome with `system.getresult`).

        Raises:
            LocalProtocolError: the connection is not ready, the call cannot be encoded
                or exceeds the maximum message size, or `metadata` is malformed (nothing
                is queued).
        """
        if oneway:
            returns = False
            oneway = Feature.ONEWAY in self.features
        if self.state is not _READY:
            raise LocalProtocolError(f"cannot call {method!r}: connection is {self.state.value}")
        if id is None:
            id = self._next_id()
        if not self._deadlines:
            deadline = None
        elif deadline is not None and deadline < 0:
            # Already expired: the protocol refuses a negative DEADLINE (400), while 0
            # asks for the same thing, an expired call (408 unless already answered).
            deadline = 0.0
        if metadata and self._metadata:
            try:
                messages.check_metadata(metadata)
            except ValueError as exc:
                raise LocalProtocolError(f"cannot call {method!r}: {exc}") from None
        else:
            metadata = None
        self._push(
            self._encode(
                messages.call(
                    id,
                    method,
                    list(args),
                    kwargs or {},
                    returns,
                    deadline,
                    metadata,
                    oneway=oneway,
                    explicit_return=not self.features,
                )
            )
        )
        if returns:
            self._pending[id] = False
        return id

    def send_call_data(
        self,
        method: str,
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        deadline: float | None = None,
        metadata: dict[str, str] | None = None,
    ) -> tuple[str, list[bytes]]:
        """`send_call` (a call whose outcome comes back) followed by `chunks_to_send()`,
        in one step: what a client does for every call.

        Returns:
            The call's ID and the chunks to write, in order (this call's, after any
            queued before it).

        Raises:
            LocalProtocolError: as `send_call` (nothing is queued).
        """
        if (
            self._plain_codec
            and self.state is _READY
            and not self._out
            and not kwargs
            and not metadata
            and type(self._framer) is LengthFramer
        ):
            n = self._id_counter = self._id_counter + 1
            if n >> 8 != self._id_block:
                self._new_id_block(n)
            low = n & 0xFF
            id = self._id_head + _HEX2[low]  # what _next_id() returns
            if args and (deadline is None or not self._deadlines):
                # The usual call: the map's bytes from parts known in advance (the
                # envelope, the ID's head, the method's keys and name) and the packed
                # arguments; the same bytes as packing the map (messages.call).
                try:
                    part = self._method_parts.get(method)
                    if part is None:
                        part = self._method_part(method)
                    # _pack(args), inline: the thread's packer, dropped after a large one.
                    # A list: the packer takes exact types only, and would convert a
                    # tuple through a Python hook (codec._exact).
                    if type(args) is not list:
                        args = list(args)
                    packer = getattr(_packers, "packer", None)
                    if packer is None:
                        packed_args = _pack(args)
                    else:
                        packed_args = packer.pack(args)
                        if len(packed_args) > _PACKER_KEEP_BYTES:
                            _packers.packer = None
                except Exception:  # noqa: BLE001 - the general path says what cannot be encoded
                    pass
                else:
                    head = self._call_head  # the envelope up to the ID's last two digits
                    size = len(head) + 2 + len(part) + len(packed_args)
                    # (Arguments of 1 KiB or more could nest past msgpack's parser: the
                    # lane below checks the whole message for that.)
                    if (
                        size < _COALESCE_LIMIT
                        and size <= self.max_message_size
                        and len(packed_args) < MSGPACK_MAX_DEPTH
                    ):
                        self._pending[id] = False
                        pieces = (_LENGTH.pack(size), head, _HEX2_BYTES[low], part, packed_args)
                        return id, [b"".join(pieces)]
            msg: dict[str, Any] = {_K_MPRPC: VERSION, _K_ID: id, _K_METHOD: method}
            if args:
                msg[_K_ARGS] = list(args)
            if deadline is not None and self._deadlines:
                msg[_K_DEADLINE] = 0.0 if deadline < 0 else deadline  # as send_call
            try:
                payload = pack_checked(msg)
            except Exception:  # noqa: BLE001 - the general path says what cannot be encoded
                payload = b""
            size = len(payload)
            if 0 < size <= self.max_message_size:
                self._pending[id] = False
                if size < _COALESCE_LIMIT:
                    return id, [_LENGTH.pack(size) + payload]
                return id, self._framer.frame(payload)  # large: the payload is not copied
            # Not encodable or too large: the general path raises the error, for this ID.
            id = self.send_call(method, args, kwargs, deadline=deadline, metadata=metadata, id=id)
            return id, self.chunks_to_send()
        id = self.send_call(method, args, kwargs, deadline=deadline, metadata=metadata)
        return id, self.chunks_to_send()

    @property
    def _id_prefix(self) -> str:
        """The first 24 characters of this connection's call IDs (random)."""
        return self._prefix

    @_id_prefix.setter
    def _id_prefix(self, prefix: str) -> None:
        self._prefix = prefix
        self._id_block = -1  # the next ID starts a block with this prefix

    def _next_id(self) -> str:
        """A new call ID: the connection's random prefix and a 12-hex-digit counter."""
        n = self._id_counter = self._id_counter + 1
        if n >> 8 != self._id_block:
            self._new_id_block(n)
        return self._id_head + _HEX2[n & 0xFF]

    def _new_id_block(self, n: int) -> None:
        """Start the block of IDs that `n` is in: `f"{prefix}{n & _ID_MASK:012x}"` is its
        head plus `_HEX2[n & 0xFF]`."""
        block = n >> 8
        self._id_block = block
        self._id_head = head = f"{self._id_prefix}{block & (_ID_MASK >> 8):010x}"
        # The ID's last two characters are ASCII: packing the head with two of them and
        # leaving those out gives the str header (for the whole ID) and the head's bytes.
        self._call_head = _CALL_HEAD + _pack(head + "00")[:-2]

    def _method_part(self, method: str) -> bytes:
        """The packed METHOD key, `method` and ARGS key, as they follow a call's ID."""
        part = _pack(Key.METHOD) + _pack(method) + _pack(Key.ARGS)
        if len(self._method_parts) < _METHOD_PARTS_KEPT:
            self._method_parts[method] = part
        return part

    def send_ping(self) -> None:
        """Queue a heartbeat; the server answers with a `Pong` event."""
        self._push(self._encode(messages.ping()))

    def send_cancel(self, id: str, *, send: bool = True) -> bool:
        """Stop tracking call `id`; queue a CANCEL for it if that feature was negotiated
        (and `send`: False only stops tracking it).

        Returns:
            Whether a CANCEL was queued.
        """
        if self._pending.pop(id, None) is None or not send:
            return False
        if Feature.CANCEL not in self.features:
            return False
        if self.closed:
            return False
        self._push(self._encode(messages.cancel(id)))
        return True
