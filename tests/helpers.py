"""Test helpers: a real server on 127.0.0.1 (ephemeral port) in a background thread, and a
raw socket speaking MPRPC 0.1 frames by hand."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import msgpack
import pytest

from pymprpc.protocol import SEPARATOR
from pymprpc.server import Server
from pymprpc.testing import RunningServer

T = TypeVar("T")


def tls_contexts(directory: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a fresh self-signed certificate for 127.0.0.1, and a client
    context trusting it (skips the test without the openssl command)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl command not available to make a test certificate")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    return server_ctx, ssl.create_default_context(cafile=str(cert))


def connections(server: Server) -> list[Any]:
    """The server's connection handlers (server internals, for tests; call in its loop)."""
    return list(server._core.connections)


@contextlib.contextmanager
def on_sys_path(directory: Path, *packages: str) -> Iterator[Path]:
    """`directory` importable for the block; after it, every module of `packages` (top-level
    names) is forgotten, so that a later test's package of the same name loads afresh."""
    sys.path.insert(0, str(directory))
    try:
        yield directory
    finally:
        sys.path.remove(str(directory))
        for key in [k for k in sys.modules if k.split(".")[0] in packages]:
            del sys.modules[key]


@contextlib.contextmanager
def generated_package(idl: Path, out: Path) -> Iterator[ModuleType]:
    """The package mprpcgen generates from `idl` into `out`, imported for the block."""
    from mprpcgen.cli import main  # only the generator's tests need it loaded

    assert main([str(idl), "-o", str(out)]) == 0
    with on_sys_path(out, idl.stem):
        yield importlib.import_module(idl.stem)


def arun(coro: Coroutine[Any, Any, T], timeout: float = 20) -> T:
    """Run a coroutine on a fresh event loop, bounded in time."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll `predicate` until it holds (for state in another thread or process)."""
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "condition not reached in time"
        time.sleep(0.01)


class ServerThread(RunningServer):
    """`pymprpc.testing.RunningServer` as a context manager (the suite's older spelling
    of `pymprpc.testing.serve_in_thread`)."""

    def __enter__(self) -> ServerThread:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self.server.port


def pack(msg: Any) -> bytes:
    return msgpack.packb(msg, use_bin_type=True)


def unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False)


class RawClient:
    """A socket that speaks MPRPC 0.1 by hand, like an old pymprpc 0.0.3 client."""

    def __init__(
        self,
        port: int,
        *,
        encode: Callable[[Any], bytes] = pack,
        decode: Callable[[bytes], Any] = unpack,
        timeout: float = 10.0,
    ) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.encode = encode
        self.decode = decode
        self.buffer = b""

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send(self, msg: Any) -> None:
        self.sock.sendall(self.encode(msg) + SEPARATOR)

    def recv_frame(self) -> bytes:
        while SEPARATOR not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(f"connection closed; buffered {self.buffer!r}")
            self.buffer += chunk
        frame, _, self.buffer = self.buffer.partition(SEPARATOR)
        return frame

    def recv(self) -> Any:
        return self.decode(self.recv_frame())

    def login(self, username: str | None = None, password: str | None = None) -> Any:
        self.send({"MPRPC": "0.1", "AUTH": {"USERNAME": username, "PASSWORD": password}})
        return self.recv()

    def at_eof(self) -> bool:
        """True if the server closed the connection (after any buffered frames)."""
        try:
            return self.sock.recv(65536) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def json_encode(msg: Any) -> bytes:
    return json.dumps(msg).encode()


def json_decode(data: bytes) -> Any:
    return json.loads(data)


# The welcome reply of a pymprpc 0.0.3 server: no FEATURES, so nothing is negotiated.
OLD_WELCOME: dict[str, Any] = {
    "MPRPC": "0.1",
    "CODE": 100,
    "VERSION": None,
    "DESC": None,
    "DEBUG": False,
    "COMPRESER": None,
    "TIMEOUT": 0,
}


def send(conn: socket.socket, msg: dict[str, Any]) -> None:
    """Send `msg` as one MPRPC 0.1 frame (MessagePack, `##PRO-END##`): from `OldServer`'s
    `on_call`."""
    conn.sendall(pack(msg) + SEPARATOR)


class OldServer:
    """A hand-written MPRPC 0.1 server on loopback for one client, like pymprpc 0.0.3:
    welcomes any login (with `welcome`, by default 0.0.3's), then hands every other
    message to `on_call` (and records it)."""

    def __init__(
        self,
        on_call: Callable[[socket.socket, dict[str, Any]], None],
        *,
        welcome: dict[str, Any] = OLD_WELCOME,
    ) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.on_call = on_call
        self.welcome = welcome
        self.seen: list[dict[str, Any]] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            buf = b""
            while chunk := conn.recv(65536):
                buf += chunk
                while SEPARATOR in buf:
                    frame, _, buf = buf.partition(SEPARATOR)
                    msg = unpack(frame)
                    self.seen.append(msg)
                    if "AUTH" in msg:
                        send(conn, self.welcome)
                    else:
                        self.on_call(conn, msg)

    @property
    def url(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.listener.close()
        self.thread.join(5)
