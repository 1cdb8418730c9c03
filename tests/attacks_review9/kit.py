"""Review9 kit: real servers on 127.0.0.1 (ephemeral ports), raw MPRPC peers, and
in-memory OpenTelemetry providers."""

from __future__ import annotations

import contextlib
import gc
import socket
import struct
import time
from collections.abc import Iterator
from typing import Any

import msgpack

from pymprpc import RPC, Server
from pymprpc.testing import RunningServer, serve_in_thread

SEP = b"##PRO-END##"
GRACE = 1.0


def pack(msg: Any) -> bytes:
    return msgpack.packb(msg, use_bin_type=True)


def new_server(**options: Any) -> Server:
    options.setdefault("grace_period", GRACE)
    return Server(("127.0.0.1", 0), **options)


@contextlib.contextmanager
def serving(server: Server, stop_within: float = GRACE + 3) -> Iterator[RunningServer]:
    """Serve for the block; then the server must stop within `stop_within` seconds."""
    with serve_in_thread(server) as running:
        yield running
        started = time.monotonic()
    took = time.monotonic() - started
    assert took < stop_within, f"shutdown took {took:.1f}s"
    gc.collect()


def assert_still_serving(
    running: RunningServer, rpc: RPC | None = None, name: str = "ping"
) -> None:
    if rpc is not None:
        assert rpc.method(name)() == "pong"
    with RPC(running.url, timeout=5) as fresh:
        assert fresh.method(name)() == "pong"


class Raw:
    """A hand-written MPRPC peer (separator framing, or length framing if negotiated)."""

    def __init__(self, port: int, *, source: str | None = None, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection(
            ("127.0.0.1", port), timeout=timeout, source_address=(source, 0) if source else None
        )
        self.buffer = b""
        self.length = False

    def login(
        self,
        user: str | None = None,
        password: str | None = None,
        features: list[str] | None = None,
    ) -> dict[str, Any]:
        msg: dict[str, Any] = {"MPRPC": "0.1", "AUTH": {"USERNAME": user, "PASSWORD": password}}
        if features is not None:
            msg["FEATURES"] = features
        self.sock.sendall(pack(msg) + SEP)
        welcome = msgpack.unpackb(self._separated())
        self.length = "length-framing" in (welcome.get("FEATURES") or [])
        return welcome

    def send(self, msg: dict[str, Any]) -> bytes:
        payload = pack({"MPRPC": "0.1", **msg})
        data = struct.pack(">I", len(payload)) + payload if self.length else payload + SEP
        self.sock.sendall(data)
        return data

    def call(self, id: str, method: str, *args: Any, **fields: Any) -> bytes:
        return self.send({"ID": id, "METHOD": method, "ARGS": list(args), **fields})

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError(f"connection closed; buffered {self.buffer!r}")
        self.buffer += chunk

    def _separated(self) -> bytes:
        while SEP not in self.buffer:
            self._fill()
        frame, _, self.buffer = self.buffer.partition(SEP)
        return frame

    def frame(self) -> bytes:
        """The next frame's payload."""
        if not self.length:
            return self._separated()
        while (
            len(self.buffer) < 4 or len(self.buffer) < 4 + struct.unpack(">I", self.buffer[:4])[0]
        ):
            self._fill()
        size = struct.unpack(">I", self.buffer[:4])[0]
        payload, self.buffer = self.buffer[4 : 4 + size], self.buffer[4 + size :]
        return payload

    def recv(self) -> dict[str, Any]:
        return msgpack.unpackb(self.frame())

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Raw:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Telemetry:
    """In-memory tracer and meter providers, and what they recorded."""

    def __init__(self) -> None:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def spans(self, name: str | None = None) -> list[Any]:
        return [s for s in self.exporter.get_finished_spans() if name is None or s.name == name]

    def points(self, metric: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        found = []
        for rm in data.resource_metrics if data else ():
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    if m.name == metric:
                        found.extend(m.data.data_points)
        return found

    def active(self) -> dict[str, int]:
        return {
            p.attributes["rpc.method"]: p.value for p in self.points("rpc.server.active_requests")
        }


def wait_until(predicate: Any, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            return False
        time.sleep(0.01)
    return True
