"""Receiving into one reused buffer per thread instead of a new one per read.

A plain `asyncio.Protocol` gets each read as a new `bytes` object that asyncio allocates
at its maximum read size (256 KiB) and then shrinks to what arrived. An allocation that
large is served by `mmap`, so every read of a small message pays mmap, mremap and munmap
system calls and a page fault (measured: 40 µs per read, more than the rest of a small
call). With many connections each carrying one small call per read, that was the largest
per-call cost of the server and of `AsyncRPC`. A `BufferedProtocol` is read into a buffer
it supplies: `ReusedBufferProtocol` hands every connection of a thread the same one (the
transport fills it and calls `buffer_updated` at once, with no other read in between),
and passes `data_received` a `bytes` copy of just the bytes read.

uvloop needs none of this: it reads a plain protocol into one static buffer of its own
and hands `data_received` a `bytes` of what arrived, in C. A protocol that is also an
`asyncio.Protocol` is read that way by uvloop (it takes the buffered path only for
protocols that are not), while asyncio's transports go by `BufferedProtocol`: so
`ReusedBufferProtocol` is both, and on uvloop a read costs no `get_buffer` and
`buffer_updated` calls in Python (about 1 µs per read, what a fan-in server pays on every
call).
"""

from __future__ import annotations

import asyncio
import threading

# asyncio's own read size for plain protocols: large reads stay as large.
READ_SIZE = 256 * 1024

_local = threading.local()


def thread_buffer() -> memoryview:
    """This thread's receive buffer (threads run their own event loops)."""
    try:
        view: memoryview = _local.view
    except AttributeError:
        view = _local.view = memoryview(bytearray(READ_SIZE))
    return view


class ReusedBufferProtocol(asyncio.Protocol, asyncio.BufferedProtocol):
    """A protocol whose reads land in the thread's shared buffer (asyncio), or that gets
    them from the loop as `bytes` (uvloop: see the module's docstring); subclasses
    implement `data_received(data)` as for `asyncio.Protocol`."""

    # A slot, so that a subclass with __slots__ holds no dict (a server keeps one
    # protocol per connection); unset until the first read.
    __slots__ = ("_view",)
    _view: memoryview | None

    def get_buffer(self, sizehint: int) -> memoryview:
        """Where the transport reads to: this thread's shared buffer."""
        try:
            view = self._view
        except AttributeError:
            view = None
        if view is None:  # a transport reads on its loop's thread, always the same one
            view = self._view = thread_buffer()
        return view

    def buffer_updated(self, nbytes: int) -> None:
        """`nbytes` were read into the buffer: hand a copy of them to `data_received`."""
        view = self._view
        assert view is not None
        self.data_received(bytes(view[:nbytes]))

    def data_received(self, data: bytes) -> None:
        """Bytes received (what `asyncio.Protocol.data_received` gets)."""
        raise NotImplementedError
