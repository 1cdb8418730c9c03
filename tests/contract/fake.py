"""A hand-written MPRPC 0.1 server on 127.0.0.1 (ephemeral port): it records what a client
sends and answers each request with the replies a script returns, so client tests can
check the requests' fields and the client's handling of any reply, well-formed or not."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Callable
from typing import Any

import msgpack

from .wire import SEPARATOR

Script = Callable[[dict[str, Any]], list[Any]]


class FakeServer:
    """`script(request) -> [reply, ...]` (a reply is a dict, or bytes sent as a payload).
    `features`: the ones it grants from those a client asks for (None: it ignores the
    FEATURES key, like a 0.0.3 server)."""

    def __init__(self, script: Script, features: set[str] | None = None) -> None:
        self.script = script
        self.features = features
        self.auths: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.url = f"tcp://127.0.0.1:{self.port}"
        self.stopping = threading.Event()
        self.conns: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buffer = b""
        length = False

        def read() -> Any:
            nonlocal buffer
            while True:
                if length and len(buffer) >= 4:
                    (size,) = struct.unpack(">I", buffer[:4])
                    if len(buffer) >= 4 + size:
                        payload, buffer = buffer[4 : 4 + size], buffer[4 + size :]
                        return msgpack.unpackb(payload, raw=False)
                if not length and SEPARATOR in buffer:
                    payload, _, buffer = buffer.partition(SEPARATOR)
                    return msgpack.unpackb(payload, raw=False)
                chunk = conn.recv(65536)
                if not chunk:
                    return None
                buffer += chunk

        def send(reply: Any) -> None:
            payload = reply if isinstance(reply, bytes) else msgpack.packb(reply, use_bin_type=True)
            conn.sendall(
                struct.pack(">I", len(payload)) + payload if length else payload + SEPARATOR
            )

        try:
            auth = read()
            if auth is None:
                return
            self.auths.append(auth)
            welcome: dict[str, Any] = {
                "MPRPC": "0.1", "CODE": 100, "VERSION": None, "DESC": None,
                "DEBUG": False, "COMPRESER": None, "TIMEOUT": 0,
            }  # fmt: skip
            granted: list[str] = []
            if self.features is not None and "FEATURES" in auth:
                granted = sorted(self.features & set(auth["FEATURES"]))
                welcome["FEATURES"] = granted
            send(welcome)
            length = "length-framing" in granted
            while True:
                request = read()
                if request is None:
                    return
                if request.get("HEARTBEAT") == "ping":
                    send({"MPRPC": "0.1", "CODE": 101, "HEARTBEAT": "pong"})
                    continue
                self.requests.append(request)
                for reply in self.script(request):
                    send(reply)
        except OSError:
            return
        finally:
            conn.close()

    def close(self) -> None:
        self.stopping.set()
        self.listener.close()
        for conn in self.conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self.thread.join(5)


def answer(request: dict[str, Any], code: int = 200, **body: Any) -> dict[str, Any]:
    return {"MPRPC": "0.1", "CODE": code, "MESSAGE": {"ID": request.get("ID"), **body}}
