"""Accepting connections: asyncio's accept loop, with a real backlog and a calm EMFILE.

`loop.create_server(sock=...)` listens again with its own backlog (100, not the socket's),
and when `accept()` fails for lack of file descriptors it logs a traceback for every
remaining slot of its backlog and schedules as many retries, which then multiply: tens of
thousands of log lines in seconds. This accept loop keeps the socket's backlog, pauses
accepting for `retry_delay` when descriptors run out, and logs that once per
`log_interval`. Accepted sockets become connections through the public
`loop.connect_accepted_socket` (TLS included).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import ssl as ssl_module
from collections.abc import Callable

log = logging.getLogger(__name__)

_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
# Seconds a TLS connection being closed waits for its peer's close_notify (asyncio's
# default is 30, for which a closed connection would keep its descriptor and its place
# under max_connections): a peer that answers at all answers in one round trip.
TLS_SHUTDOWN_TIMEOUT = 2.0


class Listener:
    """Accepts on a bound, listening, non-blocking socket until closed."""

    def __init__(
        self,
        sock: socket.socket,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        *,
        ssl: ssl_module.SSLContext | None = None,
        batch: int = 1024,
        retry_delay: float = 1.0,
        log_interval: float = 60.0,
        handshake_timeout: float | None = None,
        room: Callable[[int], bool] | None = None,
        refusal: bytes = b"",
    ) -> None:
        """`handshake_timeout`: seconds a TLS handshake may take (None: asyncio's 60).
        `room(n)`: whether a connection may be accepted while `n` accepted ones are not
        yet connections (their TLS handshakes); when not, it is refused at once: sent
        `refusal` (plain TCP), or closed (TLS: nothing can be said before a handshake)."""
        self._sock = sock
        self._factory = protocol_factory
        self._ssl = ssl
        self._tls_options: dict[str, float] = (
            {"ssl_shutdown_timeout": TLS_SHUTDOWN_TIMEOUT} if ssl is not None else {}
        )
        if ssl is not None and handshake_timeout:
            self._tls_options["ssl_handshake_timeout"] = handshake_timeout
        self._room = room
        self._refusal = refusal
        self._batch = batch
        self._retry_delay = retry_delay
        self._log_interval = log_interval
        self._loop: asyncio.AbstractEventLoop | None = None
        self._retry: asyncio.TimerHandle | None = None
        self._handshakes: set[asyncio.Task[None]] = set()
        # Accepted sockets whose connection is not made yet (its protocol not created:
        # for TLS, until the handshake is over), which `room` counts.
        self._opening = 0
        self._last_logged: float | None = None
        self._failures = 0  # accept() failures since the last log line
        self.closed = False

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        loop.add_reader(self._sock.fileno(), self._accept)

    def close(self) -> None:
        """Stop accepting and close the socket; connections already made stay open."""
        if self.closed:
            return
        self.closed = True
        if self._retry is not None:
            self._retry.cancel()
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self._sock.fileno())
        for task in list(self._handshakes):
            task.cancel()
        self._sock.close()

    def _accept(self) -> None:
        for _ in range(self._batch):
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue  # the peer gave up before we accepted: next one
            except OSError as exc:
                if exc.errno in _OUT_OF_RESOURCES:
                    self._pause(exc)
                    return
                raise
            conn.setblocking(False)
            if self._room is not None and not self._room(self._opening):
                self._refuse(conn)
                continue
            self._connect(conn)

    def _refuse(self, conn: socket.socket) -> None:
        """Over max_connections: refused now, before a connection (or a TLS handshake)
        holds anything more than the socket, which is closed at once."""
        peer = _peer(conn)
        if self._ssl is None and self._refusal:
            with contextlib.suppress(OSError):
                conn.send(self._refusal)  # a few bytes into an empty socket buffer
                # Closing a socket with unread input resets the connection, which may
                # discard the 503 at the client: what it sent already is read first.
                conn.recv(65536)
        how = " before its TLS handshake" if self._ssl is not None else ""
        log.warning("refusing %s%s: max_connections reached", peer, how)
        conn.close()

    def _connect(self, conn: socket.socket) -> None:
        assert self._loop is not None
        self._opening += 1  # now: the rest of this accept batch must see it
        task = self._loop.create_task(self._connection(conn))
        self._handshakes.add(task)
        task.add_done_callback(self._handshakes.discard)

    async def _connection(self, conn: socket.socket) -> None:
        assert self._loop is not None
        peer = _peer(conn)  # (once the handshake failed, asyncio has closed the socket)
        opening = True  # counted in `_opening` by _connect

        def made() -> asyncio.BaseProtocol:
            # A plain connection is made with its protocol (its connection_made, which
            # counts it under max_connections, comes next): no longer opening.
            nonlocal opening
            if opening and self._ssl is None:
                self._opening -= 1
                opening = False
            return self._factory()

        try:
            await self._loop.connect_accepted_socket(made, conn, ssl=self._ssl, **self._tls_options)
        except (OSError, ssl_module.SSLError, TimeoutError, ConnectionError) as exc:
            # A peer's failure (a port scanner, plain TCP on a TLS port, a timeout), as
            # any protocol error that closes a connection: INFO, one line.
            log.info(
                "connection from %s failed before it started: %s",
                peer,
                str(exc) or type(exc).__name__,
            )
            conn.close()
        except asyncio.CancelledError:
            conn.close()
            raise
        finally:
            if opening:  # (TLS: the handshake is over, connection_made has run)
                self._opening -= 1

    def _pause(self, exc: OSError) -> None:
        """Out of descriptors (or memory): stop accepting for a while; log once per
        interval, not per attempt."""
        assert self._loop is not None
        self._failures += 1
        now = self._loop.time()
        if self._last_logged is None or now - self._last_logged >= self._log_interval:
            log.error(
                "cannot accept connections: %s (%d time(s) since last reported); pausing "
                "accept for %.1fs. Raise the file-descriptor limit (ulimit -n) or lower "
                "max_connections",
                exc.strerror or exc,
                self._failures,
                self._retry_delay,
            )
            self._last_logged, self._failures = now, 0
        self._loop.remove_reader(self._sock.fileno())
        self._retry = self._loop.call_later(self._retry_delay, self._resume)

    def _resume(self) -> None:
        self._retry = None
        if not self.closed and self._loop is not None:
            self._loop.add_reader(self._sock.fileno(), self._accept)


def _peer(conn: socket.socket) -> str:
    """`host:port` of the peer, as the connections' log lines write it."""
    try:
        peer = conn.getpeername()
    except OSError:
        return "?"
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)
