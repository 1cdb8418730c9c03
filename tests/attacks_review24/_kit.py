"""Review 24's kit: a real server in a thread, and a raw scripted TCP server."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import msgpack
from review_fixtures import LoopServer

from pymprpc import Server

SEP = b"##PRO-END##"


@contextlib.contextmanager
def serving(server: Server, loop: str = "asyncio") -> Iterator[str]:
    """Serve `server` (port 0) in a thread; yield its URL; stop it after."""
    running = LoopServer(server, loop)
    running.thread.start()
    assert running.ready.wait(15), "server did not start"
    if running.error is not None:
        raise running.error
    try:
        yield running.url
    finally:
        server.stop()
        running.thread.join(20)


def welcome(**extra: Any) -> bytes:
    msg = {
        "MPRPC": "0.1",
        "CODE": 100,
        "VERSION": None,
        "DESC": None,
        "DEBUG": False,
        "COMPRESER": None,
        "TIMEOUT": 0,
    }
    msg.update(extra)
    return frame(msg)


def frame(msg: Any) -> bytes:
    return msgpack.packb(msg) + SEP


def result(id: str, value: Any, code: int = 200) -> bytes:
    return frame({"MPRPC": "0.1", "CODE": code, "MESSAGE": {"ID": id, "RESULT": value}})


class Peer:
    """One accepted connection of a RawServer (separator framing, MessagePack)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def next(self, timeout: float = 20) -> dict[str, Any] | None:
        self.sock.settimeout(timeout)
        while SEP not in self.buf:
            try:
                data = self.sock.recv(65536)
            except OSError:
                return None
            if not data:
                return None
            self.buf += data
        raw, _, self.buf = self.buf.partition(SEP)
        return msgpack.unpackb(raw)

    def login(self) -> dict[str, Any] | None:
        auth = self.next()
        if auth is not None:
            self.sock.sendall(welcome())
        return auth

    def send(self, data: bytes) -> None:
        with contextlib.suppress(OSError):
            self.sock.sendall(data)


class RawServer:
    """Accepts connections on 127.0.0.1 and runs `script(peer)` for each in a thread."""

    def __init__(self, script: Callable[[Peer], None]) -> None:
        self.script = script
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)  # accept() is not woken by close() from a thread
        self.port = self.listener.getsockname()[1]
        self.url = f"tcp://127.0.0.1:{self.port}"
        self.peers: list[Peer] = []
        self.accepted = 0
        self._closing = False
        self.thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> RawServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closing = True
        self.thread.join(5)
        with contextlib.suppress(OSError):
            self.listener.close()
        for peer in self.peers:
            with contextlib.suppress(OSError):
                peer.sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                peer.sock.close()

    def _accept(self) -> None:
        while not self._closing:
            try:
                sock, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            sock.settimeout(None)
            self.accepted += 1
            peer = Peer(sock)
            self.peers.append(peer)
            threading.Thread(target=self._run, args=(peer,), daemon=True).start()

    def _run(self, peer: Peer) -> None:
        with contextlib.suppress(OSError):
            self.script(peer)


def in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    """Run `fn` in a daemon thread; the dict gets 'value' or 'error' and 'elapsed'."""
    out: dict[str, Any] = {}

    def run() -> None:
        started = time.monotonic()
        try:
            out["value"] = fn()
        except BaseException as exc:  # noqa: BLE001
            out["error"] = exc
        out["elapsed"] = time.monotonic() - started

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def make_server(**options: Any) -> Server:
    """A server on 127.0.0.1:0 with coroutine methods: echo, slow, count, blob_stream."""
    import asyncio

    server = Server(("127.0.0.1", options.pop("port", 0)), **options)

    @server.register_function()
    async def echo(x: Any) -> Any:
        return x

    @server.register_function()
    async def slow(seconds: float, value: Any = None) -> Any:
        await asyncio.sleep(seconds)
        return value

    @server.register_function()
    async def count(n: int, pause: float = 0.0):  # type: ignore[no-untyped-def]
        for i in range(n):
            yield i
            if pause:
                await asyncio.sleep(pause)

    @server.register_function()
    async def blobs(n: int, size: int):  # type: ignore[no-untyped-def]
        for i in range(n):
            yield bytes([i % 256]) * size

    return server


def arun(coro: Any, timeout: float = 25) -> Any:
    """Run `coro` on a fresh asyncio loop, bounded."""
    import asyncio

    async def bounded() -> Any:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


_SERVE = """
import sys
sys.path[:0] = sys.argv[1:]
from tests.attacks_review24._kit import make_server
server = make_server()

async def main():
    await server.start()
    print(server.port, flush=True)
    await server.serve_forever()

import asyncio
asyncio.run(main())
"""


@contextlib.contextmanager
def server_process() -> Iterator[str]:
    """make_server() in a process of its own (for tests that fork this one)."""
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    paths = [os.path.join(root, "runtime"), root, os.path.join(root, "tests")]
    proc = subprocess.Popen(
        [sys.executable, "-c", _SERVE, *paths], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip().isdigit(), f"server did not start: {line!r}"
        yield f"tcp://127.0.0.1:{int(line)}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
