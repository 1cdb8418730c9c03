"""The blocking client's socket: one reader thread, any number of sender threads.

Senders take turns through a lock held only while bytes go out; the reader never waits
for it. TLS runs over memory buffers (`ssl.MemoryBIO`) on the plain socket, so reading
and writing can overlap: the SSL object itself is only touched briefly under its own lock,
never while a thread blocks on the network (an SSL socket may not be read and written
from two threads at once).
"""

from __future__ import annotations

import collections
import contextlib
import math
import select
import socket
import ssl as ssl_module
import threading
import time
from collections.abc import Callable

from ..protocol.framing import coalesce

_RECV_SIZE = 256 * 1024
# The longest single wait (seconds): a lock's or poll's own limit (poll takes an int of
# milliseconds) must not refuse a long deadline; longer ones are waited in steps.
_LONGEST_WAIT = 1_000_000.0


def wait_time(seconds: float) -> float:
    """`seconds` as one wait may take it: 0 at least, at most `_LONGEST_WAIT`."""
    return min(max(0.0, seconds), _LONGEST_WAIT)


class SocketIO:
    """A connected socket: `recv`/`readable` for the reader thread; `acquire`, `write`,
    `release` for senders; `send_soon` for whoever must not wait (cancel, ping)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._send_lock = threading.Lock()
        # Messages from threads that could not wait, for the next holder of the send lock.
        self._later: collections.deque[list[bytes]] = collections.deque()
        # Wire bytes that did not fit in the socket's buffer: they leave before any other.
        self._backlog = b""
        self._pushing = False  # a thread sends the backlog of a send that gave up

    @classmethod
    def open(
        cls,
        host: str,
        port: int,
        timeout: float,
        tls: ssl_module.SSLContext | None = None,
        connected: Callable[[socket.socket], None] | None = None,
    ) -> SocketIO:
        """Connect (and do the TLS handshake) within `timeout` seconds; `connected(sock)`
        is called once the socket is connected, before the handshake (shutting it down
        then ends the handshake: a client closed meanwhile).

        Raises:
            OSError: connecting or the handshake failed (TimeoutError: not in time).
        """
        deadline = time.monotonic() + timeout
        sock = socket.create_connection((host, port), timeout=timeout)
        try:
            if connected is not None:
                connected(sock)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            io = cls(sock) if tls is None else TLSSocketIO(sock, tls, host, deadline)
            sock.settimeout(None)  # deadlines are kept with poll, per thread
        except BaseException:
            sock.close()
            raise
        return io

    # -- senders ---------------------------------------------------------------------

    def acquire(self, timeout: float | None) -> bool:
        """Take the turn to send; False if another sender kept it past `timeout`."""
        if timeout is None:
            return self._send_lock.acquire()
        end = time.monotonic() + timeout
        while not self._send_lock.acquire(timeout=wait_time(end - time.monotonic())):
            if time.monotonic() >= end:
                return False
        return True

    def release(self) -> None:
        """End the turn, sending what others left meanwhile."""
        self._send_lock.release()
        self.flush()

    def write(self, chunks: list[bytes], deadline: float | None = None) -> bool:
        """Send `chunks` (the caller holds the turn); may wait for the peer to read, until
        `deadline` (`time.monotonic()`; None: for as long as it takes). False if the
        deadline came first: what is not sent yet then goes before any later message, so
        the peer still reads whole messages. OSError if the socket failed."""
        pieces = self._wire(chunks)
        if self._backlog:
            pieces.insert(0, self._backlog)
            self._backlog = b""
        if deadline is None:
            for piece in pieces:
                self.sock.sendall(piece)
            return True
        for i, piece in enumerate(pieces):
            view = memoryview(piece)
            while view:
                try:
                    view = view[self.sock.send(view, socket.MSG_DONTWAIT) :]
                    continue
                except (BlockingIOError, InterruptedError):
                    pass
                left = deadline - time.monotonic()
                if left <= 0:
                    self._backlog = b"".join([view, *pieces[i + 1 :]])
                    self._push_later()
                    return False
                self._writable(wait_time(left))  # then sends again, or finds it is late
        return True

    def _push_later(self) -> None:
        """(Holding the turn.) Have a thread of its own send the backlog a send left at its
        deadline, as soon as the peer reads: a ping or a cancel queued behind it must not
        wait for the next call, which may never come."""
        if not self._pushing:
            self._pushing = True
            threading.Thread(target=self._push, name="pymprpc-send-rest", daemon=True).start()

    def _push(self) -> None:
        with self._send_lock:  # (taken once the sender that gave up lets go)
            try:
                while self._later:
                    self._backlog += b"".join(self._wire(self._later.popleft()))
                backlog, self._backlog = self._backlog, b""
                if backlog:
                    self.sock.sendall(backlog)  # waits for the peer to read
            except OSError:  # the reader finds the failure, or close() ended it
                self._later.clear()
                self._backlog = b""
            finally:
                self._pushing = False  # (still holding the turn: no push is missed)
        self.flush()

    def _writable(self, timeout: float) -> bool:
        """Whether the socket takes more bytes within `timeout` seconds (True also when
        it failed: the next send reports it)."""
        try:
            if hasattr(select, "poll"):
                poller = select.poll()
                poller.register(self.sock, select.POLLOUT)
                return bool(poller.poll(math.ceil(timeout * 1000)))
            return bool(select.select([], [self.sock], [], timeout)[1])
        except (OSError, ValueError):
            return True

    def _wire(self, chunks: list[bytes]) -> list[bytes]:
        """What goes on the socket for `chunks` (the caller holds the turn)."""
        return coalesce(chunks)

    def send_soon(self, chunks: list[bytes]) -> None:
        """Send `chunks` as soon as possible without ever waiting: not for another sender
        (the next one to finish sends them), nor for the peer to read (what does not fit
        in the socket's buffer goes before the next message). Errors are left for the
        reader to find."""
        self._later.append(chunks)
        self.flush()

    def flush(self) -> None:
        """Send, without waiting, what `send_soon` left."""
        # Re-checked after each release: a message added while we held the lock is sent
        # by us, one added after we let go is sent by its own thread.
        while (self._later or self._backlog) and self._send_lock.acquire(blocking=False):
            try:
                while self._later:
                    self._backlog += b"".join(self._wire(self._later.popleft()))
                sent = self.sock.send(self._backlog, socket.MSG_DONTWAIT)
                self._backlog = self._backlog[sent:]
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                self._later.clear()
                self._backlog = b""
            finally:
                self._send_lock.release()
            if self._backlog:
                return  # the peer is not reading: the next writer or flush sends it

    # -- the reader ------------------------------------------------------------------

    def recv(self) -> bytes:
        """The next bytes received (b"" once the peer closed). OSError on failure."""
        return self.sock.recv(_RECV_SIZE)

    def readable(self, timeout: float) -> bool:
        """Whether `recv` has something (data, end of file, error) within `timeout`."""
        timeout = wait_time(timeout)
        try:
            if hasattr(select, "poll"):
                poller = select.poll()
                poller.register(self.sock, select.POLLIN)
                return bool(poller.poll(math.ceil(timeout * 1000)))
            return bool(select.select([self.sock], [], [], timeout)[0])
        except (OSError, ValueError):
            return True  # closed meanwhile: recv reports it

    def abandon(self) -> None:
        """Close this process's descriptor only, without a word to the peer: in a child
        process just forked, the connection is the parent's (a shutdown would end it for
        the parent too)."""
        self.sock.close()

    def close(self) -> None:
        """Close the socket; a thread blocked in `recv` wakes up (end of file or error)."""
        with contextlib.suppress(OSError):  # already disconnected
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


class TLSSocketIO(SocketIO):
    """`SocketIO` with TLS done in memory: the reader decrypts what it receives, a sender
    encrypts what it sends, each holding the SSL object only for that moment."""

    def __init__(
        self, sock: socket.socket, context: ssl_module.SSLContext, host: str, deadline: float
    ) -> None:
        super().__init__(sock)
        self._incoming = ssl_module.MemoryBIO()
        self._outgoing = ssl_module.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_hostname=host)
        self._tls_lock = threading.Lock()
        while True:
            try:
                self._tls.do_handshake()
                break
            except ssl_module.SSLWantReadError:
                self._send_outgoing()
                sock.settimeout(max(0.001, deadline - time.monotonic()))
                data = sock.recv(_RECV_SIZE)
                if not data:
                    raise ConnectionResetError(
                        "the server closed the connection during TLS"
                    ) from None
                self._incoming.write(data)
        self._send_outgoing()

    def _send_outgoing(self) -> None:
        data = self._outgoing.read()
        if data:
            self.sock.sendall(data)

    def _wire(self, chunks: list[bytes]) -> list[bytes]:
        # Records must leave in the order they were encrypted: the caller holds the turn.
        with self._tls_lock:
            for chunk in chunks:
                self._tls.write(chunk)
            return [self._outgoing.read()]

    def recv(self) -> bytes:
        """Plain bytes received (b"" once the peer closed), decrypting whole TLS records."""
        while True:
            parts: list[bytes] = []
            ended = False
            with self._tls_lock:
                # Every whole record received so far: what is left is a partial one, so
                # `readable` may wait on the socket.
                try:
                    while part := self._tls.read(_RECV_SIZE):
                        parts.append(part)
                    ended = True
                except ssl_module.SSLWantReadError:
                    pass
                except ssl_module.SSLZeroReturnError:
                    ended = True  # the server ended TLS
                reply = self._outgoing.pending > 0
            if reply:  # e.g. a key update answered: sent in turn with the senders
                self.send_soon([])
            data = b"".join(parts)
            if data or ended:
                return data
            raw = self.sock.recv(_RECV_SIZE)
            if not raw:
                return b""
            with self._tls_lock:
                self._incoming.write(raw)

    def readable(self, timeout: float) -> bool:
        """Whether `recv` has data within `timeout` seconds (decrypted bytes count)."""
        with self._tls_lock:
            buffered = self._tls.pending() > 0
        return buffered or super().readable(timeout)
