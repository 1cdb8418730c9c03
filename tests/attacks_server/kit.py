"""Attack kit: a server in a subprocess (for RSS/crash checks) and a raw wire client."""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgpack

SEP = b"##PRO-END##"
HERE = Path(__file__).parent


def pack(m: Any) -> bytes:
    return msgpack.packb(m, use_bin_type=True)


def _pairs(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    return {(tuple(k) if isinstance(k, list) else k): v for k, v in pairs}


def unpack(b: bytes) -> Any:
    return msgpack.unpackb(b, raw=False, strict_map_key=False, object_pairs_hook=_pairs)


class Srv:
    def __init__(self, **opts: Any) -> None:
        opts.setdefault("grace_period", 2)
        import tempfile

        # A pipe would fill up and block the server; closed by close().
        self.errfile = tempfile.TemporaryFile("w+")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "attack_server.py"), json.dumps(opts)],
            stdout=subprocess.PIPE,
            stderr=self.errfile,
            text=True,
        )
        line = self.proc.stdout.readline()  # type: ignore[union-attr]
        if not line.strip():
            self.proc.wait(5)
            self.errfile.seek(0)
            err = self.errfile.read()
            raise RuntimeError(f"server did not start: {err}")
        self.port = int(line)
        self._err: str | None = None

    def alive(self) -> bool:
        return self.proc.poll() is None

    def rss(self) -> int:
        """RSS in bytes of the server process and its children."""
        total = 0
        pids = [self.proc.pid]
        try:
            kids = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
            pids += [int(k) for k in kids]
        except OSError:
            pass
        for pid in pids[:1]:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        return total

    def hwm(self) -> int:
        """Peak RSS (VmHWM) of the server process in bytes."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        return 0

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def threads(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/task"))

    def stop(self, timeout: float = 15) -> tuple[float, int | None]:
        """SIGTERM; returns (seconds to exit, returncode)."""
        if not self.alive():
            return 0.0, self.proc.returncode
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            return time.monotonic() - t0, None
        return time.monotonic() - t0, self.proc.returncode

    def stderr(self) -> str:
        if self._err is None:
            if self.alive():
                self.stop()
            self.errfile.seek(0)
            self._err = self.errfile.read()
        return self._err

    def __enter__(self) -> Srv:
        return self

    def __exit__(self, *a: object) -> None:
        if self.alive():
            self.stop()
        if self.alive():
            self.proc.kill()


class Raw:
    """Hand-written wire client: separator framing, or length framing after negotiation."""

    def __init__(self, port: int, timeout: float = 5.0, enc: str = "msgpack") -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""
        self.length = False
        self.enc = enc

    def encode(self, m: Any) -> bytes:
        if self.enc == "json":
            return json.dumps(m).encode()
        return pack(m)

    def decode(self, b: bytes) -> Any:
        if self.enc == "json" or b[:1] == b"{":
            return json.loads(b)
        return unpack(b)

    def frame(self, payload: bytes) -> bytes:
        if self.length:
            return struct.pack(">I", len(payload)) + payload
        return payload + SEP

    def send(self, m: Any) -> None:
        self.sock.sendall(self.frame(self.encode(m)))

    def send_raw(self, b: bytes) -> None:
        self.sock.sendall(b)

    def recv_frame(self) -> bytes:
        while True:
            if self.length:
                if len(self.buf) >= 4:
                    (n,) = struct.unpack(">I", self.buf[:4])
                    if len(self.buf) >= 4 + n:
                        f, self.buf = self.buf[4 : 4 + n], self.buf[4 + n :]
                        return f
            elif SEP in self.buf:
                f, _, self.buf = self.buf.partition(SEP)
                return f
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise EOFError(f"closed; buffered {self.buf[:200]!r}")
            self.buf += chunk

    def recv(self) -> Any:
        return self.decode(self.recv_frame())

    def login(
        self, user: str | None = None, pw: str | None = None, features: list[str] | None = None
    ) -> Any:
        m: dict[str, Any] = {"MPRPC": "0.1", "AUTH": {"USERNAME": user, "PASSWORD": pw}}
        if features is not None:
            m["FEATURES"] = features
        self.send(m)
        r = self.recv()
        if features and "length-framing" in (r.get("FEATURES") or []):
            self.length = True
        return r

    def call(self, id: Any, method: Any, *args: Any, **extra: Any) -> None:
        m = {"MPRPC": "0.1", "ID": id, "METHOD": method, "ARGS": list(args)}
        m.update(extra)
        self.send(m)

    def rpc(self, method: str, *args: Any, id: str = "x1") -> Any:
        self.call(id, method, *args)
        return self.recv()

    def eof(self, timeout: float = 5.0) -> bool:
        self.sock.settimeout(timeout)
        try:
            while True:
                d = self.sock.recv(65536)
                if not d:
                    return True
                self.buf += d
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Raw:
        return self

    def __exit__(self, *a: object) -> None:
        self.close()


def code(r: Any) -> int:
    return int(r["CODE"])


def result(r: Any) -> Any:
    return r["MESSAGE"]["RESULT"]
