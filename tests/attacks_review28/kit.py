"""Review 28's kit: run a coroutine bounded, a server with a connected client."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

SHORT = 10.0


def run(coro: Any, timeout: float = SHORT) -> Any:
    """Run `coro` on a fresh asyncio loop, within `timeout` seconds."""

    async def bounded() -> Any:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


def wait_until(cond: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


class Records(logging.Handler):
    """Collects records of a logger (and its children) at `level` and above."""

    def __init__(self, name: str = "pymprpc", level: int = logging.DEBUG) -> None:
        super().__init__(level)
        self.records: list[logging.LogRecord] = []
        self.logger = logging.getLogger(name)
        self._old = self.logger.level

    def __enter__(self) -> Records:
        self.logger.addHandler(self)
        self.logger.setLevel(self.level)
        return self

    def __exit__(self, *exc: object) -> None:
        self.logger.removeHandler(self)
        self.logger.setLevel(self._old)

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def texts(self, min_level: int = logging.DEBUG) -> list[str]:
        out = []
        for r in self.records:
            if r.levelno >= min_level:
                text = r.getMessage()
                if r.exc_info and r.exc_info[1] is not None:
                    text += f" [exc {type(r.exc_info[1]).__name__}]"
                out.append(f"{r.name} {r.levelname}: {text}")
        return out


SEP = b"##PRO-END##"


def frame(msg: Any) -> bytes:
    import msgpack

    return msgpack.packb(msg, use_bin_type=True) + SEP


class Raw:
    """A raw MPRPC 0.1 client socket (separator framing, MessagePack, no features)."""

    def __init__(self, port: int) -> None:
        import socket

        self.sock = socket.create_connection(("127.0.0.1", port), timeout=SHORT)
        self.buf = b""

    def send(self, msg: Any) -> None:
        self.sock.sendall(frame(msg))

    def recv(self) -> Any:
        import msgpack

        while SEP not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError(f"closed; buffered {self.buf!r}")
            self.buf += data
        raw, _, self.buf = self.buf.partition(SEP)
        return msgpack.unpackb(raw, raw=False)

    def login(self, user: str | None = None, password: str | None = None) -> Any:
        auth: dict[str, Any] = {}
        if user is not None:
            auth = {"USERNAME": user, "PASSWORD": password}
        self.send({"MPRPC": "0.1", "AUTH": auth})
        return self.recv()

    def call(self, id: Any, method: str, *args: Any, **extra: Any) -> Any:
        self.send({"MPRPC": "0.1", "ID": id, "METHOD": method, "ARGS": list(args), **extra})
        if extra.get("RETURN") is False or extra.get("ONEWAY"):
            return None
        return self.recv()

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Raw:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
