"""Messages between the server and its worker processes, and their frames (sans-IO).

A frame is a 17-byte header (body length, call ID, kind) followed by its body. The call ID
lives in the header so that a body which cannot be unpickled still fails exactly its own
call. A message is one pickled frame, preceded by one BUFFER frame per large `bytes`
value among the call's arguments or its result: those travel out of band (pickle
protocol 5), written from the caller's own object instead of being copied into the
pickle, and received straight into a buffer of their size. Small frames are cut from one
reusable receive area, so a 50 MiB argument is never concatenated or copied twice.
"""

from __future__ import annotations

import dataclasses
import pickle
import struct
from collections.abc import Sequence
from typing import Any, Final

from ...context import CallContext, Metadata

HEADER: Final = struct.Struct("<QQB")  # body length, call ID, kind

# Kinds of frame.
CALL: Final = 0  # server -> worker: pickled (key, path, args, kwargs)
OK: Final = 1  # worker -> server: pickled result
ERROR: Final = 2  # worker -> server: pickled (type name, message, traceback text)
BUFFER: Final = 3  # either way: raw bytes of the next message's next out-of-band value
TARGETS: Final = 4  # server -> worker: pickled {key: target} published since it started
CONTEXT: Final = 5  # worker -> server: empty, "send call ID's context"; back: pickled context

# A call's context field when the server sends it only if the function asks for it.
ASK: Final = True

_AREA: Final = 256 * 1024  # receive area for small frames
_BIG: Final = 64 * 1024  # frames at least this large get a buffer of their own
PICKLE: Final = pickle.HIGHEST_PROTOCOL


class _OutOfBand:
    """A large `bytes` value that pickles as a reference to an out-of-band buffer and
    loads back as `bytes` (one copy, out of the receive buffer)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __reduce__(self) -> tuple[Any, ...]:
        return bytes, (pickle.PickleBuffer(self.data),)


def out_of_band(value: Any) -> Any:
    """`value`, marked to travel out of band if it is a large `bytes`."""
    if type(value) is bytes and len(value) >= _BIG:
        return _OutOfBand(value)
    return value


def args_out_of_band(args: list[Any], kwargs: dict[str, Any]) -> tuple[Any, Any]:
    """`args` and `kwargs` with their large `bytes` values marked to travel out of band
    (the same objects when none is `bytes`)."""
    if bytes in map(type, args):
        args = [out_of_band(a) for a in args]
    if kwargs and bytes in map(type, kwargs.values()):
        kwargs = {k: out_of_band(v) for k, v in kwargs.items()}
    return args, kwargs


def encode(call_id: int, kind: int, message: Any) -> list[bytes | memoryview]:
    """The buffers to write for one message (a small one as one buffer). Raises what
    pickle raises for a value that cannot be pickled."""
    buffers: list[pickle.PickleBuffer] = []
    body = pickle.dumps(message, PICKLE, buffer_callback=buffers.append)
    if not buffers and len(body) < _BIG:
        return [HEADER.pack(len(body), call_id, kind) + body]
    out: list[bytes | memoryview] = []
    for buffer in buffers:
        raw = buffer.raw()
        out += HEADER.pack(len(raw), call_id, BUFFER), raw
    out += HEADER.pack(len(body), call_id, kind), body
    return out


# A call's context crosses as a tuple of its fields: pickling the dataclass itself cost
# 26 us per call and unpickling it 13 us, more than the rest of a small call.
_CONTEXT_FIELDS: Final = tuple(
    f.name
    for f in dataclasses.fields(CallContext)
    if f.init and f.name not in ("metadata", "response_metadata")
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


def decode(body: bytes | bytearray, buffers: list[bytearray | bytes]) -> Any:
    """The message in a frame's `body`, with the out-of-band `buffers` received before it."""
    return pickle.loads(body, buffers=buffers)


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
    return sum(map(len, buffers))
