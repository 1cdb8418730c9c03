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

from ..protocol.framing import coalesce

_RECV_SIZE = 256 * 1024


class SocketIO:
    """A connected socket: `recv`/`readable` for the reader thread; `acquire`, `write`,
    `release` for senders; `send_soon` for whoever must not wait (cancel, ping)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._send_lock = threading.Lock()
        # Messages for the next thread to hold the send lock, by threads that could not wait.
        self._later: collections.deque[list[bytes]] = collections.deque()

    @classmethod
    def open(
        cls,
        host: str,
        port: int,
        timeout: float,
        tls: ssl_module.SSLContext | None = None,
    ) -> SocketIO:
        """Connect (and do the TLS handshake) within `timeout` seconds.

        Raises:
            OSError: connecting or the handshake failed (TimeoutError: not in time).
        """
        deadline = time.monotonic() + timeout
        sock = socket.create_connection((host, port), timeout=timeout)
        try:
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
        return self._send_lock.acquire(timeout=max(0.0, timeout))

    def release(self) -> None:
        """End the turn, sending what others left meanwhile."""
        self._send_lock.release()
        self._flush_later()

    def write(self, chunks: list[bytes]) -> None:
        """Send `chunks` (the caller holds the turn). OSError if the socket failed."""
        for chunk in coalesce(chunks):
            self.sock.sendall(chunk)

    def send_soon(self, chunks: list[bytes]) -> None:
        """Send `chunks` now if no one else is sending, else right after them; never
        waits for another sender. Errors are left for the reader to find."""
        self._later.append(chunks)
        self._flush_later()

    def _flush_later(self) -> None:
        # Re-checked after each release: a message added while we held the lock is sent
        # by us, one added after we let go is sent by its own thread.
        while self._later and self._send_lock.acquire(blocking=False):
            try:
                while self._later:
                    self.write(self._later.popleft())
            except OSError:
                self._later.clear()
            finally:
                self._send_lock.release()

    # -- the reader ------------------------------------------------------------------

    def recv(self) -> bytes:
        """The next bytes received (b"" once the peer closed). OSError on failure."""
        return self.sock.recv(_RECV_SIZE)

    def readable(self, timeout: float) -> bool:
        """Whether `recv` has something (data, end of file, error) within `timeout`."""
        if timeout <= 0:
            timeout = 0
        try:
            if hasattr(select, "poll"):
                poller = select.poll()
                poller.register(self.sock, select.POLLIN)
                return bool(poller.poll(math.ceil(timeout * 1000)))
            return bool(select.select([self.sock], [], [], timeout)[0])
        except (OSError, ValueError):
            return True  # closed meanwhile: recv reports it

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

    def write(self, chunks: list[bytes]) -> None:
        # Records must leave in the order they were encrypted: the caller holds the turn.
        with self._tls_lock:
            for chunk in chunks:
                self._tls.write(chunk)
            data = self._outgoing.read()
        self.sock.sendall(data)

    def recv(self) -> bytes:
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
        with self._tls_lock:
            buffered = self._tls.pending() > 0
        return buffered or super().readable(timeout)
