"""Review 29's kit: a raw MPRPC peer (client side, `Raw`), a scripted fake server
(`Fake`) and a server with a few coroutine methods, served with `pymprpc.testing`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
import threading
from collections.abc import Callable
from typing import Any

import msgpack

from pymprpc import Server

SEP = b"##PRO-END##"
ALL_FEATURES = ["length-framing", "cancel", "deadline", "metadata", "oneway"]


def make_server(**options: Any) -> Server:
    """echo, slow(seconds, value), count(n) (a stream), boom (raises ValueError)."""
    options.setdefault("grace_period", 1)
    server = Server(("127.0.0.1", 0), **options)

    @server.register_function()
    async def echo(x: Any = None) -> Any:
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
    async def boom() -> None:
        raise ValueError("bad thing")

    return server


class Raw:
    """A hand-written client connection: msgpack (or JSON) payloads, separator framing,
    length framing once the welcome reply lists it."""

    def __init__(
        self,
        port: int,
        *,
        features: list[str] | None = None,
        user: str | None = None,
        password: str | None = None,
        login: bool = True,
    ) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.buf = b""
        self.length = False
        self.welcome: dict[str, Any] = {}
        if login:
            auth: dict[str, Any] = {
                "MPRPC": "0.1",
                "AUTH": {"USERNAME": user, "PASSWORD": password},
            }
            if features is not None:
                auth["FEATURES"] = features
            self.send(auth)
            self.welcome = self.recv()
            self.length = "length-framing" in (self.welcome.get("FEATURES") or [])

    def send(self, message: Any) -> None:
        self.send_payload(msgpack.packb(message))

    def send_payload(self, payload: bytes) -> None:
        if self.length:
            self.sock.sendall(struct.pack(">I", len(payload)) + payload)
        else:
            self.sock.sendall(payload + SEP)

    def call(self, **fields: Any) -> dict[str, Any]:
        self.send({"MPRPC": "0.1", **fields})
        return self.recv()

    def recv(self) -> Any:
        while True:
            if self.length:
                if len(self.buf) >= 4:
                    (n,) = struct.unpack(">I", self.buf[:4])
                    if len(self.buf) >= 4 + n:
                        payload, self.buf = self.buf[4 : 4 + n], self.buf[4 + n :]
                        return msgpack.unpackb(payload, strict_map_key=False)
            else:
                i = self.buf.find(SEP)
                if i >= 0:
                    payload, self.buf = self.buf[:i], self.buf[i + len(SEP) :]
                    if payload[:1] in (b"{", b" "):
                        return json.loads(payload)
                    return msgpack.unpackb(payload, strict_map_key=False)
            data = self.sock.recv(65536)
            if not data:
                raise EOFError(f"connection closed; unread: {self.buf[:100]!r}")
            self.buf += data

    def closed(self, timeout: float = 3) -> bool:
        """Whether the server closes the connection (EOF or reset) within `timeout`."""
        self.sock.settimeout(timeout)
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Raw:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


Handler = Callable[["Fake", socket.socket, dict[str, Any]], None]


class Fake:
    """A scripted MPRPC server: answers the login with a welcome reply (`welcome`
    updates it; `features`: what it accepts of what the client asks), then hands each
    message to `on_request(fake, conn, message)`."""

    def __init__(
        self,
        on_request: Handler | None = None,
        *,
        welcome: dict[str, Any] | None = None,
        features: list[str] | None = None,
        silent: bool = False,
    ) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.port = self.listener.getsockname()[1]
        self.on_request = on_request
        self.welcome = welcome or {}
        self.features = features
        self.silent = silent
        self.received: list[dict[str, Any]] = []
        self.conns: list[socket.socket] = []
        self.length: dict[socket.socket, bool] = {}
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def send(self, conn: socket.socket, message: dict[str, Any]) -> None:
        payload = msgpack.packb(message)
        try:
            if self.length.get(conn):
                conn.sendall(struct.pack(">I", len(payload)) + payload)
            else:
                conn.sendall(payload + SEP)
        except OSError:
            pass

    def reply(self, conn: socket.socket, request: dict[str, Any], result: Any) -> None:
        message = {"ID": request["ID"], "RESULT": result}
        self.send(conn, {"MPRPC": "0.1", "CODE": 200, "MESSAGE": message})

    def _serve(self, conn: socket.socket) -> None:
        buf = b""
        authenticated = False
        while True:
            try:
                data = conn.recv(65536)
            except OSError:
                return
            if not data:
                return
            buf += data
            while True:
                if self.length.get(conn):
                    if len(buf) < 4:
                        break
                    (n,) = struct.unpack(">I", buf[:4])
                    if len(buf) < 4 + n:
                        break
                    payload, buf = buf[4 : 4 + n], buf[4 + n :]
                else:
                    i = buf.find(SEP)
                    if i < 0:
                        break
                    payload, buf = buf[:i], buf[i + len(SEP) :]
                message = msgpack.unpackb(payload, strict_map_key=False)
                self.received.append(message)
                if not authenticated:
                    authenticated = True
                    if self.silent:
                        continue
                    welcome: dict[str, Any] = {
                        "MPRPC": "0.1",
                        "CODE": 100,
                        "VERSION": None,
                        "DESC": None,
                        "DEBUG": False,
                        "COMPRESER": None,
                        "TIMEOUT": 0,
                    }
                    if self.features is not None and "FEATURES" in message:
                        asked = message["FEATURES"]
                        welcome["FEATURES"] = [f for f in self.features if f in asked]
                    welcome.update(self.welcome)
                    self.send(conn, welcome)
                    self.length[conn] = "length-framing" in (welcome.get("FEATURES") or [])
                elif self.on_request is not None:
                    self.on_request(self, conn, message)

    def close(self) -> None:
        self.listener.close()
        for conn in self.conns:
            with contextlib.suppress(OSError):
                conn.close()

    def __enter__(self) -> Fake:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def nest(levels: int, leaf: Any = 0) -> Any:
    """`leaf` inside `levels` nested lists."""
    value = leaf
    for _ in range(levels):
        value = [value]
    return value
