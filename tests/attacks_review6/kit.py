"""Review6 kit: a hand-written MPRPC server on asyncio (length framing negotiated) whose
replies a test scripts byte by byte, and a real pymprpc server with stream handlers."""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgpack

from helpers import OLD_WELCOME
from pymprpc.protocol import messages

SEP = b"##PRO-END##"


def pack(msg: Any) -> bytes:
    return msgpack.packb(msg, use_bin_type=True)


def frame(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


def item(id: Any, value: Any) -> bytes:
    """A 202 laid out as our server writes it (length-framed)."""
    return frame(pack(messages.stream_item(id, value)))


def reply(code: int, id: Any, **fields: Any) -> bytes:
    return frame(pack({"MPRPC": "0.1", "CODE": code, "MESSAGE": {"ID": id, **fields}}))


def result(id: Any, value: Any) -> bytes:
    return frame(pack(messages.result(id, value)))


def start(id: Any) -> bytes:
    return reply(201, id)


def end(id: Any) -> bytes:
    return reply(206, id)


OnCall = Callable[["RawConn", dict[str, Any]], Awaitable[None] | None]


class RawConn:
    def __init__(
        self, server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        self.calls: list[dict[str, Any]] = []
        self.framing = False

    def write(self, data: bytes) -> None:
        self.writer.write(data)

    async def drain(self) -> None:
        await self.writer.drain()

    async def run(self) -> None:
        buf = b""
        while True:
            chunk = await self.reader.read(65536)
            if not chunk:
                return
            buf += chunk
            while True:
                if not self.framing:
                    if SEP not in buf:
                        break
                    payload, _, buf = buf.partition(SEP)
                else:
                    if len(buf) < 4:
                        break
                    (n,) = struct.unpack_from(">I", buf)
                    if len(buf) < 4 + n:
                        break
                    payload, buf = buf[4 : 4 + n], buf[4 + n :]
                msg = msgpack.unpackb(payload, raw=False, strict_map_key=False)
                await self.on_message(msg)

    async def on_message(self, msg: dict[str, Any]) -> None:
        srv = self.server
        if "AUTH" in msg:
            feats = msg.get("FEATURES")
            welcome: dict[str, Any] = dict(OLD_WELCOME)
            if feats is not None:
                welcome["FEATURES"] = (
                    sorted(set(feats) & {"length-framing", "cancel"}) if srv.framing else []
                )
            self.write(pack(welcome) + SEP)
            self.framing = srv.framing and feats is not None and "length-framing" in feats
            return
        if msg.get("HEARTBEAT") == "ping":
            srv.pings += 1
            if srv.answer_pings:
                self.write(self.frame(pack(messages.pong())))
            return
        if msg.get("CANCEL"):
            srv.cancels.append(msg["ID"])
            return
        self.calls.append(msg)
        srv.calls.append(msg)
        out = srv.on_call(self, msg)
        if out is not None:
            srv.tasks.append(asyncio.ensure_future(out))

    def frame(self, payload: bytes) -> bytes:
        return frame(payload) if self.framing else payload + SEP


class RawServer:
    def __init__(self, on_call: OnCall, *, answer_pings: bool = True, framing: bool = True) -> None:
        self.on_call = on_call
        self.answer_pings = answer_pings
        self.framing = framing
        self.pings = 0
        self.calls: list[dict[str, Any]] = []
        self.cancels: list[Any] = []
        self.conns: list[RawConn] = []
        self.tasks: list[asyncio.Future[Any]] = []
        self.server: asyncio.AbstractServer | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = RawConn(self, reader, writer)
        self.conns.append(conn)
        try:
            await conn.run()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"tcp://127.0.0.1:{port}"

    async def __aenter__(self) -> RawServer:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for c in self.conns:
            c.writer.close()
        for t in self.tasks:
            t.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.server.wait_closed(), 2)


@contextlib.asynccontextmanager
async def raw_server(on_call: OnCall, **kw: Any) -> AsyncIterator[RawServer]:
    async with RawServer(on_call, **kw) as s:
        yield s
