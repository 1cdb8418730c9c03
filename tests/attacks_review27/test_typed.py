"""Typed (mprpcgen) clients' streams: deadlines and closing before the first item."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from helpers import generated_package
from pymprpc.errors import DeadlineExceeded

from .kit import Seen, arun, serving

IDL = """\
/// Ticks.
service Clock {
    /// Monotonic times, one per pause.
    stream ticks(tag: str, pause: float) -> float;
    def echo(x: int) -> int;
}
"""


@pytest.fixture
def clock(tmp_path: Path) -> Iterator[ModuleType]:
    idl = tmp_path / "r27clock.idl"
    idl.write_text(IDL)
    with generated_package(idl, tmp_path / "out") as package:
        yield package


def clock_server(package: ModuleType, seen: Seen) -> Any:
    from pymprpc import Server

    class Clock(package.ClockServicer):  # type: ignore[name-defined,misc]
        async def ticks(self, tag: str, pause: float):  # type: ignore[no-untyped-def]
            try:
                while True:
                    yield time.monotonic()
                    await asyncio.sleep(pause)
            finally:
                seen.add(f"{tag}:finally")

        def echo(self, x: int) -> int:
            return x

    server = Server(("127.0.0.1", 0), grace_period=2)
    package.register_clock(server, Clock())
    return server


@pytest.mark.timeout(40)
def test_typed_sync_plain_stream_deadline(clock: ModuleType) -> None:
    server = clock_server(clock, Seen())
    with serving(server) as url, clock.ClockClient(url, features=()) as client:
        stream = client.with_options(timeout=0.5).ticks("t", 0.01)
        items = [next(stream)]
        called = time.monotonic()
        time.sleep(1.0)
        with pytest.raises(DeadlineExceeded, match=r"within its 0\.5s deadline"):
            for item in stream:
                items.append(item)
        assert client.echo(3) == 3
        assert [t for t in items if t > called + 0.6] == []


@pytest.mark.timeout(40)
def test_typed_sync_negotiated_stream_deadline_cancels(clock: ModuleType) -> None:
    seen = Seen()
    server = clock_server(clock, seen)
    with serving(server) as url, clock.ClockClient(url) as client:
        items = []
        with pytest.raises(DeadlineExceeded, match=r"'ticks' did not finish within its 0\.4s"):
            for item in client.with_options(timeout=0.4).ticks("tn", 0.01):
                items.append(item)
        assert items
        assert seen.wait_for("tn:finally")
        assert client.echo(4) == 4


@pytest.mark.parametrize("features", [(), None], ids=["plain", "negotiated"])
@pytest.mark.timeout(40)
def test_typed_async_stream_deadline(clock: ModuleType, features: Any) -> None:
    seen = Seen()
    server = clock_server(clock, seen)
    kw = {} if features is None else {"features": features}

    async def main() -> None:
        async with clock.AsyncClockClient(url, **kw) as client:
            items = []
            called = time.monotonic()
            with pytest.raises(DeadlineExceeded, match=r"'ticks' did not finish within its 0\.4s"):
                async for item in client.with_options(timeout=0.4).ticks("ta", 0.01):
                    items.append(item)
            assert items
            assert [t for t in items if t > called + 0.5] == []
            assert await client.echo(5) == 5

    with serving(server) as url:
        arun(main())
        if features is None:
            assert seen.wait_for("ta:finally")


@pytest.mark.parametrize("how", ["close", "drop", "close-after-next"])
@pytest.mark.timeout(30)
def test_typed_sync_stream_iterator_closed_cancels(clock: ModuleType, how: str) -> None:
    seen = Seen()
    server = clock_server(clock, seen)
    with serving(server) as url, clock.ClockClient(url) as client:
        stream = client.ticks("c", 0.05)
        if how == "close":
            stream.close()  # type: ignore[attr-defined]
        elif how == "close-after-next":
            next(stream)
            stream.close()  # type: ignore[attr-defined]
        else:
            del stream
            gc.collect()
        assert seen.wait_for("c:finally")
        assert client.echo(6) == 6
