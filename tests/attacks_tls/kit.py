"""Review13 kit: TLS servers on 127.0.0.1 (ephemeral port) in a thread of the test process
or in a process of their own (tls_server.py, for its memory, descriptors and log), raw
peers (a silent TCP socket, a stalled ClientHello, a hand-made TLS login), and a TCP proxy
on an ephemeral port whose backend can be swapped or replaced by a silent one."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import msgpack

from pymprpc import Server, current_call
from pymprpc.testing import RunningServer

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
AUTH = (
    msgpack.packb({"MPRPC": "0.1", "AUTH": {"USERNAME": None, "PASSWORD": None}}) + b"##PRO-END##"
)


def call_frame(method: str, *args: Any, id: str = "1") -> bytes:
    """An MPRPC 0.1 call (no length framing: nothing negotiated)."""
    frame: bytes = msgpack.packb({"MPRPC": "0.1", "ID": id, "METHOD": method, "ARGS": list(args)})
    return frame + b"##PRO-END##"


def subject_cn(cert: dict[str, Any] | None) -> str | None:
    if not cert:
        return None
    return str(dict(pair[0] for pair in cert["subject"])["commonName"])


def make_server(ctx: ssl.SSLContext | None, **options: Any) -> Server:
    """echo, blob(n), size(v), count(n), slow(s), cert() (the caller's certificate CN)."""
    options.setdefault("grace_period", 1.0)
    server = Server(("127.0.0.1", 0), ssl=ctx, **options)

    @server.register_function()
    async def echo(value: Any) -> Any:
        return value

    @server.register_function()
    async def blob(n: int) -> bytes:
        return b"x" * n

    @server.register_function()
    async def size(value: Any) -> int:
        return len(value)

    @server.register_function()
    async def count(n: int) -> AsyncIterator[int]:
        for i in range(n):
            yield i

    @server.register_function()
    async def slow(seconds: float) -> float:
        await asyncio.sleep(seconds)
        return seconds

    @server.register_function()
    async def cert() -> str | None:
        return subject_cn(current_call().peer_certificate)

    return server


@contextlib.contextmanager
def serving(
    ctx: ssl.SSLContext | None, loop: str = "asyncio", **options: Any
) -> Iterator[RunningServer]:
    """A server in a thread of this process, on the given loop kind."""
    server = make_server(ctx, **options)
    running = RunningServer(server)
    if loop == "uvloop":
        import uvloop

        old = asyncio.get_event_loop_policy()
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        try:
            running.start()
        finally:
            asyncio.set_event_loop_policy(old)
        assert type(running.loop).__module__.startswith("uvloop"), running.loop
    else:
        running.start()
    try:
        yield running
    finally:
        running.stop()


def tls_url(running: RunningServer, host: str = "127.0.0.1") -> str:
    return f"tls://{host}:{running.server.address[1]}"


def port_of(running: RunningServer) -> int:
    return int(running.server.address[1])


def run_on(loop: str, coro: Any) -> Any:
    """Run `coro` to completion on a fresh asyncio or uvloop event loop."""
    if loop == "uvloop":
        import uvloop

        return uvloop.run(coro)
    return asyncio.run(coro)


# -- raw peers ---------------------------------------------------------------------------


def silent(port: int) -> socket.socket:
    """A TCP connection that never sends a byte."""
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def stalled_hello(port: int) -> socket.socket:
    """A TCP connection that sent a real ClientHello, then stops half way (it never reads
    the server's answer nor sends its Finished)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with contextlib.suppress(ssl.SSLWantReadError):
        obj.do_handshake()
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(outgoing.read())
    return sock


def tls_peer(
    port: int, ctx: ssl.SSLContext, login: bool = False
) -> tuple[ssl.SSLSocket, socket.socket]:
    """A hand-made TLS connection (handshake done; logged in when `login`), and a duplicate
    of its TCP socket to watch the raw bytes without answering the server's close_notify."""
    sock = ctx.wrap_socket(
        socket.create_connection(("127.0.0.1", port), timeout=10), server_hostname="127.0.0.1"
    )
    if login:
        sock.sendall(AUTH)
        assert sock.recv(4096)
    raw = socket.socket(fileno=os.dup(sock.fileno()))
    raw.settimeout(10)
    return sock, raw


def reset(sock: socket.socket) -> None:
    """Close with an RST instead of a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def closed_within(sock: socket.socket, seconds: float) -> float | None:
    """Read (and drop) what arrives until EOF or a reset: the seconds that took, or None if
    the connection was still open after `seconds`."""
    start = time.monotonic()
    sock.setblocking(False)
    while True:
        left = start + seconds - time.monotonic()
        if left <= 0:
            return None
        ready, _, _ = select.select([sock], [], [], left)
        if not ready:
            return None
        try:
            data = sock.recv(1 << 16)
        except BlockingIOError:
            continue
        except OSError:
            return time.monotonic() - start
        if not data:
            return time.monotonic() - start


# -- a TCP proxy ------------------------------------------------------------------------


class Proxy:
    """Forwards TCP connections on an ephemeral port to `backend` (a port); with
    `backend = None` new connections are accepted and held silent (a server that never
    answers the ClientHello). `drop()` closes the connections made so far."""

    def __init__(self, backend: int | None) -> None:
        self.backend = backend
        self.paused = False  # while True, nothing is forwarded either way (a frozen path)
        self.chunk = 1 << 16  # bytes forwarded at a time ...
        self.delay = 0.0  # ... and the pause after each (a slow path)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self._socks.append(client)
            if self.backend is None:
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.backend), timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._socks.append(upstream)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(self.chunk):
                while self.paused and not self._closed:
                    time.sleep(0.01)
                dst.sendall(data)
                if self.delay:
                    time.sleep(self.delay)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def drop(self) -> None:
        with self._lock:
            socks, self._socks = self._socks, []
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        self.drop()


# -- a server in a process of its own ----------------------------------------------------


class ServerProcess:
    """tls_server.py in a subprocess: `port`, `rss()`, `fds()`, `log()`; `stop()` closes its
    stdin (graceful shutdown) and waits."""

    def __init__(self, certs_dir: Path, cert: str | None, tmp: Path, **spec: Any) -> None:
        self.log_path = tmp / f"server-{os.getpid()}-{time.monotonic_ns()}.log"
        self._log_file = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "runtime"), str(HERE)])}
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(HERE / "tls_server.py"),
                json.dumps({"certs": str(certs_dir), "cert": cert, **spec}),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log_file,
            text=True,
            env=env,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("PORT "):
            self.stop()
            raise RuntimeError(f"server did not start: {line!r} {self.log()}")
        self.port = int(line.split()[1])

    def rss(self) -> int:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log_file.close()


def flood(port: int, n: int, *, burst: bool = False) -> list[socket.socket]:
    """`n` TCP connections that never send anything: all connecting at once (`burst`: they
    wait together in the listen backlog), or paced, ten at a time, 50 ms apart."""
    socks: list[socket.socket] = []
    for i in range(n):
        if burst:
            sock = socket.socket()
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", port))
        else:
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            if i % 10 == 9:
                time.sleep(0.05)
        socks.append(sock)
    return socks
