"""A raw MPRPC 0.1 peer over a blocking socket: frames written and read by hand, as a
pymprpc 0.0.3 client (separator framing) or a client that negotiated length framing."""

from __future__ import annotations

import json
import socket
import struct
import uuid
from typing import Any

import msgpack

SEPARATOR = b"##PRO-END##"
ALL_FEATURES = ["length-framing", "cancel", "deadline", "metadata", "oneway"]


def new_id() -> str:
    return str(uuid.uuid4())


class Closed(Exception):
    """The server closed the connection (EOF or reset) before a whole frame arrived."""


class Wire:
    """One raw connection. `features=None` sends 0.0.3's auth request (no FEATURES key);
    a list asks for those extensions. `json_mode` encodes as JSON (0.0.3 debug mode)."""

    def __init__(
        self,
        port: int,
        *,
        features: list[str] | None = None,
        json_mode: bool = False,
        user: str | None = None,
        password: str | None = None,
        login: bool = True,
        timeout: float = 15.0,
    ) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.json_mode = json_mode
        self.length = False
        self.buffer = b""
        self.welcome: dict[str, Any] | None = None
        if login:
            self.welcome = self.login(user, password, features)

    # -- encoding and frames -------------------------------------------------------
    def encode(self, message: Any) -> bytes:
        if self.json_mode:
            return json.dumps(message, separators=(",", ":")).encode()
        return msgpack.packb(message, use_bin_type=True)

    def decode(self, payload: bytes) -> Any:
        if self.json_mode:
            return json.loads(payload)
        return msgpack.unpackb(payload, raw=False, strict_map_key=False)

    def frame(self, payload: bytes) -> bytes:
        if self.length:
            return struct.pack(">I", len(payload)) + payload
        return payload + SEPARATOR

    def send(self, *messages: Any) -> None:
        """Send messages in one write (pipelined)."""
        self.sock.sendall(b"".join(self.frame(self.encode(m)) for m in messages))

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> None:
        try:
            chunk = self.sock.recv(1 << 16)
        except ConnectionResetError as exc:
            raise Closed("reset") from exc
        if not chunk:
            raise Closed("EOF")
        self.buffer += chunk

    def recv_payload(self) -> bytes:
        while True:
            if self.length:
                if len(self.buffer) >= 4:
                    (size,) = struct.unpack(">I", self.buffer[:4])
                    if len(self.buffer) >= 4 + size:
                        payload = self.buffer[4 : 4 + size]
                        self.buffer = self.buffer[4 + size :]
                        return payload
            else:
                at = self.buffer.find(SEPARATOR)
                if at >= 0:
                    payload = self.buffer[:at]
                    self.buffer = self.buffer[at + len(SEPARATOR) :]
                    return payload
            self._fill()

    def recv(self) -> Any:
        return self.decode(self.recv_payload())

    def recv_n(self, n: int) -> list[Any]:
        return [self.recv() for _ in range(n)]

    def recv_until_closed(self) -> list[Any]:
        """Every message until the server closes the connection."""
        messages = []
        while True:
            try:
                messages.append(self.recv())
            except Closed:
                return messages

    def assert_closed(self) -> None:
        assert self.recv_until_closed() == []

    # -- protocol messages ---------------------------------------------------------
    def login(
        self,
        user: str | None = None,
        password: str | None = None,
        features: list[str] | None = None,
    ) -> dict[str, Any]:
        request: dict[str, Any] = {"MPRPC": "0.1", "AUTH": {"USERNAME": user, "PASSWORD": password}}
        if features is not None:
            request["FEATURES"] = features
        self.send(request)
        welcome = self.recv()
        if welcome.get("CODE") == 100 and "length-framing" in welcome.get("FEATURES", []):
            self.length = True
        return welcome  # type: ignore[no-any-return]

    def request(self, method: Any, *args: Any, id: Any = None, **fields: Any) -> dict[str, Any]:
        message = {"MPRPC": "0.1", "ID": new_id() if id is None else id, "METHOD": method}
        message["ARGS"] = list(args)
        message.update(fields)
        return message

    def call(self, method: str, *args: Any, **fields: Any) -> Any:
        """Send one call and return its single reply (asserting it carries the ID)."""
        message = self.request(method, *args, **fields)
        self.send(message)
        reply = self.recv()
        assert reply.get("MESSAGE", {}).get("ID") == message["ID"], reply
        return reply

    def ping(self) -> Any:
        self.send({"MPRPC": "0.1", "HEARTBEAT": "ping"})
        return self.recv()

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Wire:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def ok(id: Any, result: Any, code: int = 200) -> dict[str, Any]:
    return {"MPRPC": "0.1", "CODE": code, "MESSAGE": {"ID": id, "RESULT": result}}


def bare(code: int) -> dict[str, Any]:
    return {"MPRPC": "0.1", "CODE": code}
