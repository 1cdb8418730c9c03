"""A hostile MPRPC server for attacking the clients: a socket server on 127.0.0.1:0 whose
every connection is handled by a script (a function of a Peer), in its own thread."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import re
import socket
import struct
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import msgpack

SEP = b"##PRO-END##"
T = TypeVar("T")


def pack(msg: Any) -> bytes:
    return msgpack.packb(msg, use_bin_type=True)


class Peer:
    """One accepted connection, as seen by the fake server."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""
        self.length = False
        self.received: list[Any] = []
        self.compression: str | None = None
        self.lock = threading.Lock()
        self.debug = False
        # Set when the fake server closes: a script's pauses end then, not minutes later.
        self.stopped = threading.Event()

    def pause(self, seconds: float) -> bool:
        """Do nothing for `seconds` (a server that is slow or stuck); False if the fake
        server closed meanwhile (the script should return)."""
        return not self.stopped.wait(seconds)

    def recv_frame(self, timeout: float = 10) -> bytes | None:
        self.sock.settimeout(timeout)
        while True:
            if self.length:
                if len(self.buf) >= 4:
                    (n,) = struct.unpack(">I", self.buf[:4])
                    if len(self.buf) >= 4 + n:
                        frame, self.buf = self.buf[4 : 4 + n], self.buf[4 + n :]
                        return frame
            else:
                i = self.buf.find(SEP)
                if i >= 0:
                    frame, self.buf = self.buf[:i], self.buf[i + len(SEP) :]
                    return frame
            try:
                chunk = self.sock.recv(65536)
            except OSError:
                return None
            if not chunk:
                return None
            self.buf += chunk

    def recv(self, timeout: float = 10) -> Any:
        frame = self.recv_frame(timeout)
        if frame is None:
            return None
        if not self.received:
            if frame.startswith(b"\xfd7zXZ\x00"):
                self.compression = "lzma"
            elif frame.startswith(b"BZh"):
                self.compression = "bz2"
            elif frame.startswith(b"\x78"):
                self.compression = "zlib"
        if self.compression:
            frame = importlib.import_module(self.compression).decompress(frame)
        if frame[:1] in (b"{", b" "):
            self.debug = True
            msg = json.loads(frame)
        else:
            msg = msgpack.unpackb(frame, raw=False, strict_map_key=False)
        self.received.append(msg)
        return msg

    def send_raw(self, data: bytes) -> None:
        with self.lock, contextlib.suppress(OSError):
            self.sock.sendall(data)

    def frame(self, payload: bytes) -> bytes:
        if self.length:
            return struct.pack(">I", len(payload)) + payload
        return payload + SEP

    def encode(self, msg: Any) -> bytes:
        data = json.dumps(msg).encode() if self.debug else pack(msg)
        if self.compression:
            data = importlib.import_module(self.compression).compress(data)
        return data

    def send(self, msg: Any) -> None:
        self.send_raw(self.frame(self.encode(msg)))

    def login(self, welcome: dict[str, Any] | None = None, *, features: Any = None) -> Any:
        """Read the auth request, send a welcome; features=None echoes what was asked
        (a modern server), "old" sends no FEATURES key (0.0.3)."""
        auth = self.recv()
        if auth is None:
            return None
        if welcome is None:
            welcome = {
                "MPRPC": "0.1",
                "CODE": 100,
                "VERSION": None,
                "DESC": None,
                "DEBUG": False,
                "COMPRESER": None,
                "TIMEOUT": 0,
            }
            if features == "old":
                pass
            elif features is None:
                if "FEATURES" in auth:
                    welcome["FEATURES"] = list(auth["FEATURES"])
            else:
                welcome["FEATURES"] = features
        self.send(welcome)
        if "length-framing" in (welcome.get("FEATURES") or []) and isinstance(
            welcome.get("FEATURES"), list
        ):
            self.length = True
        return auth

    def reply(self, call: dict[str, Any], result: Any, code: int = 200) -> None:
        self.send({"MPRPC": "0.1", "CODE": code, "MESSAGE": {"ID": call["ID"], "RESULT": result}})

    def next_call(self, timeout: float = 10) -> Any:
        """The next message that is a call (pings answered with pong, cancels skipped)."""
        while True:
            msg = self.recv(timeout)
            if msg is None:
                return None
            if msg.get("HEARTBEAT") == "ping":
                self.send({"MPRPC": "0.1", "CODE": 101, "HEARTBEAT": "pong"})
                continue
            if msg.get("CANCEL"):
                continue
            return msg

    def pings(self) -> int:
        """How many heartbeats this peer received so far."""
        return sum(1 for m in list(self.received) if m.get("HEARTBEAT") == "ping")

    def wait_eof(self, timeout: float = 10) -> None:
        self.sock.settimeout(timeout)
        try:
            while self.sock.recv(65536):
                pass
        except OSError:
            pass


class FakeServer:
    """Accepts connections on 127.0.0.1:0; each runs script(peer) in a thread."""

    def __init__(self, script: Callable[[Peer], None], family: int = socket.AF_INET) -> None:
        self.script = script
        self.lsock = socket.socket(family, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("::1" if family == socket.AF_INET6 else "127.0.0.1", 0))
        self.lsock.listen(16)
        self.port = self.lsock.getsockname()[1]
        self.peers: list[Peer] = []
        self.errors: list[BaseException] = []
        self.accepted = threading.Semaphore(0)
        self.closing = False
        self.threads: list[threading.Thread] = []
        self.acceptor = threading.Thread(target=self._accept, daemon=True)
        self.acceptor.start()

    def _accept(self) -> None:
        while not self.closing:
            try:
                sock, _ = self.lsock.accept()
            except OSError:
                return
            peer = Peer(sock)
            self.peers.append(peer)
            self.accepted.release()
            t = threading.Thread(target=self._run, args=(peer,), daemon=True)
            self.threads.append(t)
            t.start()

    def _run(self, peer: Peer) -> None:
        try:
            self.script(peer)
        except BaseException as e:  # noqa: BLE001 - kept for the test to see
            self.errors.append(e)
        finally:
            if not getattr(peer, "keep_open", False):
                with contextlib.suppress(OSError):
                    peer.sock.close()

    def url(self, userinfo: str = "") -> str:
        host = "[::1]" if self.lsock.family == socket.AF_INET6 else "127.0.0.1"
        return f"tcp://{userinfo}{host}:{self.port}"

    def close(self) -> None:
        self.closing = True
        with contextlib.suppress(OSError):  # shutdown wakes accept(); close() alone does not
            self.lsock.shutdown(socket.SHUT_RDWR)
        self.lsock.close()
        for p in self.peers:
            p.stopped.set()
            with contextlib.suppress(OSError):  # shutdown wakes a blocked recv()
                p.sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                p.sock.close()
        for t in self.threads:
            t.join(5)

    def __enter__(self) -> FakeServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def arun(coro: Coroutine[Any, Any, T], timeout: float = 15) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


def wait_pings(peers: list[Peer], count: int, timeout: float = 8) -> None:
    """Wait until the latest peer received `count` heartbeats (each answered)."""
    deadline = time.monotonic() + timeout
    while not (peers and peers[-1].pings() >= count):
        assert time.monotonic() < deadline, f"fewer than {count} heartbeats arrived"
        time.sleep(0.01)


def wait_disconnected(rpc: Any, timeout: float = 5) -> None:
    """Wait until the client noticed its connection ended (state, not a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while rpc.connected:
        assert time.monotonic() < deadline, "the client never noticed the close"
        time.sleep(0.01)


async def await_disconnected(rpc: Any, timeout: float = 5) -> None:
    """`wait_disconnected` for AsyncRPC."""
    deadline = time.monotonic() + timeout
    while rpc.connected:
        assert time.monotonic() < deadline, "the client never noticed the close"
        await asyncio.sleep(0.01)


HANG = "HANG"


UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def outcome_of(exc: BaseException) -> tuple[str, str]:
    """Exception type and message, call IDs (random per connection) masked."""
    return (type(exc).__name__, UUID.sub("<ID>", str(exc)))


def run_sync(url: str, action: Callable[[Any], Any], limit: float = 8, **options: Any) -> Any:
    """Run action(rpc) with a blocking RPC in a thread; ("ok", value), (ExcName, message),
    or HANG if it did not finish within limit seconds."""
    from pymprpc.client import RPC

    box: list[Any] = []

    def target() -> None:
        try:
            with RPC(url, **options) as rpc:
                box.append(("ok", action(rpc)))
        except BaseException as e:  # noqa: BLE001
            box.append(outcome_of(e))

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(limit)
    return box[0] if box else HANG


def run_async(
    url: str, action: Callable[[Any], Coroutine[Any, Any, Any]], limit: float = 8, **options: Any
) -> Any:
    from pymprpc.client import AsyncRPC

    async def main() -> Any:
        try:
            async with AsyncRPC(url, **options) as rpc:
                return ("ok", await action(rpc))
        except asyncio.CancelledError:
            raise
        except BaseException as e:  # noqa: BLE001
            return outcome_of(e)

    async def bounded() -> Any:
        try:
            return await asyncio.wait_for(main(), limit)
        except TimeoutError:
            return HANG

    box: list[Any] = []
    t = threading.Thread(target=lambda: box.append(asyncio.run(bounded())), daemon=True)
    t.start()
    t.join(limit + 5)
    return box[0] if box else HANG


def both(
    script: Callable[[Peer], None],
    sync_action: Callable[[Any], Any] = lambda rpc: rpc.f(),
    async_action: Callable[[Any], Coroutine[Any, Any, Any]] | None = None,
    limit: float = 8,
    **options: Any,
) -> tuple[Any, Any]:
    """The outcome of the same scenario for RPC and AsyncRPC, against one fake server
    running `script` (each client gets its own connection)."""
    with FakeServer(script) as s:
        return both_at(s.url(), sync_action, async_action, limit, **options)


def both_at(
    url: str,
    sync_action: Callable[[Any], Any] = lambda rpc: rpc.f(),
    async_action: Callable[[Any], Coroutine[Any, Any, Any]] | None = None,
    limit: float = 8,
    **options: Any,
) -> tuple[Any, Any]:
    """`both` against `url` (a server of the test's, or none); the async action defaults
    to awaiting `rpc.f()`, as the sync one calls it."""
    if async_action is None:

        async def async_action(rpc: Any) -> Any:
            return await rpc.f()

    return (
        run_sync(url, sync_action, limit, **options),
        run_async(url, async_action, limit, **options),
    )


# RemoteProtocolError: main's class for garbage from the peer (docs/protocol.md).
PROTO = (
    "ProtocolException",
    "ProtocolSyntaxException",
    "ConnectionLostError",
    "RemoteProtocolError",
)


def assert_clear(out: Any) -> None:
    """A clear pymprpc error: ProtocolException family or ConnectionLostError."""
    assert out != HANG, "client hung"
    assert out[0] in PROTO, f"not a protocol error: {out}"


def echo_server(
    welcome: dict[str, Any] | None = None, features: Any = None
) -> Callable[[Peer], None]:
    """Logs in with the given welcome, then answers every call with its ARGS."""

    def script(peer: Peer) -> None:
        if peer.login(welcome, features=features) is None:
            return
        while (call := peer.next_call()) is not None:
            peer.reply(call, call.get("ARGS"))

    return script


WELCOME: dict[str, Any] = {
    "MPRPC": "0.1",
    "CODE": 100,
    "VERSION": None,
    "DESC": None,
    "DEBUG": False,
    "COMPRESER": None,
    "TIMEOUT": 0,
}
