"""Shared pieces: generate an IDL into a directory and import it, serve a server in a
thread on 127.0.0.1 (ephemeral port), and a minimal raw MPRPC 0.1 socket client."""

from __future__ import annotations

import contextlib
import importlib
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import msgpack

from helpers import on_sys_path
from mprpcgen.cli import main
from pymprpc.server import Server
from pymprpc.testing import RunningServer, serve_in_thread

SEP = b"##PRO-END##"


def generate(idl_text: str, directory: Path, name: str) -> Path:
    """Write `name.idl` into `directory` and run mprpcgen on it (into the same place)."""
    idl = directory / f"{name}.idl"
    idl.write_text(idl_text)
    assert main([str(idl), "-o", str(directory)]) == 0, idl_text
    return directory


@contextlib.contextmanager
def package(idl_text: str, name: str, directory: Path | None = None) -> Iterator[ModuleType]:
    """The package generated from `idl_text`, imported (client and server side) for the
    block; forgotten after it, so the next example's package of that name loads afresh."""
    with contextlib.ExitStack() as stack:
        if directory is None:
            directory = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        generate(idl_text, directory, name)
        stack.enter_context(on_sys_path(directory, name))
        mod = importlib.import_module(name)
        importlib.import_module(f"{name}.server")
        yield mod


@contextlib.contextmanager
def served(server: Server) -> Iterator[RunningServer]:
    """`server` serving in a background thread for the block."""
    with serve_in_thread(server) as running:
        yield running


def new_server(**options: Any) -> Server:
    options.setdefault("grace_period", 1)
    server = Server(("127.0.0.1", 0), **options)
    server.register_introspection_functions()
    return server


class Raw:
    """A hand-written MPRPC 0.1 client with separator framing (reads only when asked)."""

    def __init__(self, port: int, rcvbuf: int | None = None, timeout: float = 10) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:  # before connect, so the window is small from the start
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        self.buf = b""

    def send(self, message: dict[str, Any]) -> None:
        self.sock.sendall(msgpack.packb(message, use_bin_type=True) + SEP)

    def recv_frame(self) -> bytes:
        while SEP not in self.buf:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise EOFError("server closed the connection")
            self.buf += chunk
        frame, _, self.buf = self.buf.partition(SEP)
        return frame

    def recv(self) -> Any:
        return msgpack.unpackb(self.recv_frame(), raw=False)

    def login(self) -> Any:
        self.send({"MPRPC": "0.1", "AUTH": {"USERNAME": None, "PASSWORD": None}})
        return self.recv()

    def close(self) -> None:
        self.sock.close()
