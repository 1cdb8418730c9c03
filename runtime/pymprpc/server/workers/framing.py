"""Messages between the server and its worker processes, and their frames (sans-IO).

A frame is a 17-byte header (body length, call ID, kind) followed by its body. The call ID
lives in the header so that a body which cannot be unpickled still fails exactly its own
call. A message is one pickled frame, preceded by one BUFFER frame per large binary
value (`bytes`, `bytearray`, contiguous `memoryview`) among the call's arguments or its
result: those travel out of band (pickle protocol 5), written from the caller's own
object instead of being copied into the pickle, and received straight into a buffer of
their size, which takes the next frame of that size once its value was copied out (a
`bytearray` or `memoryview` is the receive buffer itself). Small frames are cut from one
reusable receive area, so a 50 MiB argument is never concatenated or copied twice.
"""

from __future__ import annotations

import dataclasses
import pickle
import struct
import threading
from collections.abc import Sequence
from typing import Any, Final

import msgpack

from ...context import CallContext, Metadata
from ...protocol.codec import _pairs_to_dict, pack_checked

HEADER: Final = struct.Struct("<QQB")  # body length, call ID, kind
_HEADER_SIZE: Final = HEADER.size

# Kinds of frame.
CALL: Final = 0  # server -> worker: pickled (key, path, args, kwargs)
OK: Final = 1  # worker -> server: pickled result
ERROR: Final = 2  # worker -> server: pickled (type name, message, traceback text)
BUFFER: Final = 3  # either way: raw bytes of the next message's next out-of-band value
TARGETS: Final = 4  # server -> worker: pickled {key: target} published since it started
CONTEXT: Final = 5  # worker -> server: empty, "send call ID's context"; back: pickled context
FROM_WORKER: Final = frozenset((OK, ERROR, BUFFER, CONTEXT))  # what a worker may send

# A call's context field when the server sends it only if the function asks for it.
ASK: Final = True

_AREA: Final = 256 * 1024  # receive area for small frames
_BIG: Final = 64 * 1024  # frames at least this large get a buffer of their own
_KEEP: Final = 4 * 1024 * 1024  # a large frame's buffer up to this size is reused
PICKLE: Final = pickle.HIGHEST_PROTOCOL
_BINARY: Final = frozenset((bytes, bytearray, memoryview))


class _OutOfBand:
    """A large binary value (`bytes`, `bytearray`, contiguous `memoryview`) that pickles
    as a reference to an out-of-band buffer, written from the value itself; only exact
    types are wrapped (see `out_of_band`)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        self.data = data

    def __reduce__(self) -> tuple[Any, ...]:
        data = self.data
        if isinstance(data, bytes):
            return _load_bytes, (pickle.PickleBuffer(data),)
        if isinstance(data, bytearray):
            return _load_bytearray, (pickle.PickleBuffer(data),)
        if data.nbytes < _BIG:  # in band (a memoryview has no pickling of its own)
            return memoryview, (bytes(data) if data.readonly else bytearray(data),)
        return _load_view, (pickle.PickleBuffer(data),)


# The receive buffers a message's loaders copied out of (see `decode`), per thread.
_loading = threading.local()


def _copied(buffer: Any) -> None:
    """`buffer` (a frame body, or a read-only view of one) was copied out: its frame's
    buffer may take the next large frame."""
    copied: list[Any] | None = getattr(_loading, "copied", None)
    if type(buffer) is memoryview:
        body = buffer.obj
        buffer.release()  # a view made by the unpickler: nothing else holds it
        buffer = body
    if copied is not None:
        copied.append(buffer)


def _load_bytes(buffer: Any) -> bytes:
    """A `bytes` value sent out of band: one copy out of the receive buffer."""
    value = bytes(buffer)
    _copied(buffer)
    return value


def _load_bytearray(buffer: Any) -> bytearray:
    """A `bytearray` sent out of band: the receive buffer itself, when it is one (a
    bytearray sent out of band arrives as a writable buffer), else a copy."""
    if type(buffer) is bytearray:
        return buffer
    value = bytearray(buffer)
    _copied(buffer)
    return value


def _load_view(buffer: Any) -> memoryview:
    """A `memoryview` sent out of band: a view (unsigned bytes, one dimension) of the
    receive buffer itself, read-only if the original was (the unpickler hands over a
    read-only view then, the writable buffer otherwise)."""
    return buffer if type(buffer) is memoryview else memoryview(buffer)


def out_of_band(value: Any) -> Any:
    """`value`, marked to travel out of band if it is a large binary value (and a
    contiguous `memoryview` of any size, which pickle cannot take otherwise)."""
    kind = type(value)
    if kind is bytes or kind is bytearray:
        return _OutOfBand(value) if len(value) >= _BIG else value
    if kind is memoryview and value.c_contiguous:
        return _OutOfBand(value)
    return value


def args_out_of_band(args: list[Any], kwargs: dict[str, Any]) -> tuple[Any, Any]:
    """`args` and `kwargs` with their large binary values marked to travel out of band
    (the same objects when none is binary)."""
    if not _BINARY.isdisjoint(map(type, args)):
        args = [out_of_band(a) for a in args]
    if kwargs and not _BINARY.isdisjoint(map(type, kwargs.values())):
        kwargs = {k: out_of_band(v) for k, v in kwargs.items()}
    return args, kwargs


def encode(call_id: int, kind: int, message: Any) -> list[bytes | memoryview]:
    """The buffers to write for one message (a small one as one buffer). Raises what
    pickle raises for a value that cannot be pickled."""
    buffers: list[pickle.PickleBuffer] = []
    try:
        body = pickle.dumps(message, PICKLE, buffer_callback=buffers.append)
    except RecursionError:
        buffers.clear()
        body = _dumps_deep(message, buffers)
    if not buffers and len(body) < _BIG:
        return [HEADER.pack(len(body), call_id, kind) + body]
    out: list[bytes | memoryview] = []
    for buffer in buffers:
        raw = buffer.raw()
        out += HEADER.pack(len(raw), call_id, BUFFER), raw
    out += HEADER.pack(len(body), call_id, kind), body
    return out


def _dumps_deep(message: Any, buffers: list[pickle.PickleBuffer]) -> bytes:
    """`pickle.dumps` for a message whose lists or maps nest deeper than the C pickler
    goes; RecursionError if they cannot be carried another way.

    Before 3.13 the C pickler stops at about 500 levels on 3.11 (two units of the
    recursion limit per level) and 750 on 3.12 (a fixed C limit), while MessagePack
    carries 1,022 and every other executor delivers such a value. Each list or map of the
    message's top-level tuple (a call's arguments, a result) then travels as MessagePack
    inside the pickle (`_Packed`): msgpack packs and reads it in C without recursing in
    Python, about as fast as the pickler, so a huge argument with one deep branch costs
    what its decoding cost. Plain data only (what MessagePack carries: a call's arguments
    always are); anything else in it raises the RecursionError the pickler raised.
    """
    try:
        parts = tuple(_Packed(part) if _nests(part) else part for part in message)
        return pickle.dumps(parts, PICKLE, buffer_callback=buffers.append)
    except Exception:  # noqa: BLE001 - not plain data after all: the pickler's own error
        buffers.clear()
        raise RecursionError("maximum recursion depth exceeded while pickling an object") from None


def _nests(part: Any) -> bool:
    """Whether a part of a message is a list or map, or a tuple holding one (a call's
    target path, a tuple of names, is not: it stays a tuple)."""
    if isinstance(part, (list, dict)):
        return True  # a subclass too: sent as the exact value it holds (codec._exact)
    return type(part) is tuple and any(isinstance(item, (list, tuple, dict)) for item in part)


class _Packed:
    """A list or map that pickles as its MessagePack bytes (see `_dumps_deep`)."""

    __slots__ = ("data",)

    def __init__(self, value: Any) -> None:
        # Packed now, so that anything MessagePack cannot carry fails here, in C; and
        # only as msgpack's parser reads it back (its packer writes one level more).
        self.data = pack_checked(value)  # exact types, as every message (codec._exact)

    def __reduce__(self) -> tuple[Any, ...]:
        return _unpack_deep, (self.data,)


def _unpack_deep(data: bytes) -> Any:
    """A `_Packed` value, read back as the server reads a call (tuples for array keys)."""
    return msgpack.unpackb(data, raw=False, strict_map_key=False, object_pairs_hook=_pairs_to_dict)


# A call's context crosses as a tuple of its fields: pickling the dataclass itself cost
# 26 us per call and unpickling it 13 us, more than the rest of a small call.
_CONTEXT_FIELDS: Final = tuple(
    f.name
    for f in dataclasses.fields(CallContext)
    # (_ending: the server's done callbacks; a worker's context gets its own.)
    if f.init and f.name not in ("metadata", "response_metadata", "_ending")
)


def pack_context(ctx: CallContext | None) -> Any:
    """`ctx` in a form that pickles fast (None stays None)."""
    if ctx is None:
        return None
    metadata = ctx.metadata.to_dict() if ctx.metadata else None
    return tuple([getattr(ctx, name) for name in _CONTEXT_FIELDS]), metadata


def unpack_context(packed: Any) -> CallContext | None:
    """The context `pack_context` packed."""
    if packed is None:
        return None
    values, metadata = packed
    fields = dict(zip(_CONTEXT_FIELDS, values, strict=True))
    if metadata:
        fields["metadata"] = Metadata(metadata)
    return CallContext(**fields)


def raw_frame(call_id: int, kind: int, body: bytes) -> list[bytes | memoryview]:
    """The buffers to write for one frame whose body is ready."""
    return [HEADER.pack(len(body), call_id, kind), body]


def decode(
    body: bytes | bytearray,
    buffers: list[bytearray | bytes],
    reader: FrameReader | None = None,
) -> Any:
    """The message in a frame's `body`, with the out-of-band `buffers` received before it.
    With the `reader` they came from, the buffers copied out of (and a large `body`) are
    given back to it for the next large frame."""
    if reader is None:
        return pickle.loads(body, buffers=buffers)
    if not buffers and type(body) is bytes:
        # A small message, every value in it (no receive buffer to give back): the
        # usual call and result.
        return pickle.loads(body)
    copied: list[Any] = []
    _loading.copied = copied
    try:
        message = pickle.loads(body, buffers=buffers)
    finally:
        _loading.copied = None
    reader.recycle(body, copied)
    return message


class ChannelError(Exception):
    """What came in on a worker's channel is not a frame: the channel is unusable."""


class FrameReader:
    """Splits a byte stream into `(call_id, kind, body)` frames.

    Use: `n = sock.recv_into(reader.buffer())`, then `reader.received(n)`; an empty read
    means the peer closed. `buffer()` is valid until the next call to `received`.
    """

    def __init__(self, accept: frozenset[int] | None = None) -> None:
        """`accept`: the frame kinds the peer may send (None: any); another raises
        ChannelError before anything is allocated for it."""
        self._accept = accept
        self._area = bytearray(_AREA)
        self._start = 0  # first unparsed byte in the area
        self._end = 0  # end of received bytes in the area
        self._big: bytearray | None = None  # body of a large frame being received
        self._big_pos = 0
        self._big_head: tuple[int, int] = (0, 0)  # its call ID and kind
        # A large frame's buffer, given back once what it held was copied out: the next
        # frame of the same size is received into it. Fresh memory costs more than the
        # copy (page faults: 240 per MiB, ~3 µs each on a VM), and a freed large buffer
        # is often returned to the system by malloc, so a new one is fresh every time.
        self._spare: bytearray | None = None

    @property
    def receiving_large_frame(self) -> bool:
        """Whether a large frame is partly received (more reads are worthwhile)."""
        return self._big is not None

    def buffer(self) -> bytearray | memoryview:
        """Where the next read should put its bytes."""
        if not self._end and self._big is None:
            return self._area  # holding nothing: the whole area (the usual read)
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
        if not self._end and self._big is None and n > _HEADER_SIZE:
            # Read into an empty area: most often exactly one small frame (a call, a
            # result), taken whole without the general loop below.
            length, call_id, kind = HEADER.unpack_from(self._area)
            if n - _HEADER_SIZE == length < _BIG and (self._accept is None or kind in self._accept):
                return [(call_id, kind, bytes(memoryview(self._area)[_HEADER_SIZE:n]))]
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
            if self._accept is not None and kind not in self._accept:
                # Not a frame of ours: something else wrote on the channel (a function
                # writing on every fd it inherited). Its "length" means nothing.
                raise ChannelError(f"a frame of unknown kind {kind} (length {length})")
            body_start = self._start + size
            available = self._end - body_start
            if length >= _BIG:
                # Its own buffer: copy what is here, the rest is read straight into it.
                big = self._spare
                if big is not None and len(big) == length:
                    self._spare = None  # lent: given back by recycle
                else:
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

    def recycle(self, body: Any, copied: list[Any]) -> None:
        """`body` was decoded and the values in `copied` (bodies of earlier frames)
        copied out: keep one of those this reader made as the next large frame's buffer.
        Only buffers nothing refers to any more come here (see `decode`)."""
        for buffer in (body, *copied):
            if type(buffer) is bytearray and _BIG <= len(buffer) <= _KEEP:
                self._spare = buffer


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
    return sum(map(len, buffers))
