"""`interceptors.chain.observe_stream` as an iterator class (`_Observed`) instead of an
async generator: on_end once, at any close; and what an async generator's finalizer used
to do for a stream dropped unclosed."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from attacks_review9.kit import Telemetry, wait_until

from attacks_review10.kit import kept_log
from pymprpc import RPC, Server
from pymprpc.errors import ResultLimitError
from pymprpc.interceptors import AccessLog, observe_stream
from pymprpc.otel import ServerTelemetry
from pymprpc.testing import serve_in_thread


async def pass_through(ctx: Any, call_next: Any) -> Any:
    """An interceptor seeing a stream's items the plain way: its own async generator."""
    result = await call_next(ctx)
    if not ctx.streaming:
        return result

    async def items() -> AsyncIterator[Any]:
        async for item in result:
            yield item

    return items()


def _server(*interceptors: Any) -> Server:
    server = Server(("127.0.0.1", 0), interceptors=list(interceptors), grace_period=1.0)

    @server.register_function()
    async def bad_second() -> Any:
        yield 1
        yield object()  # cannot be sent: 405, and the server ends the stream
        yield 3

    return server


@pytest.mark.timeout(30)
def test_stream_ended_early_under_a_wrapping_interceptor_is_recorded() -> None:
    tel = Telemetry()
    with kept_log("review10.access") as access:
        server = _server(
            pass_through,
            AccessLog(logger=access.logger),
            ServerTelemetry(tel.tracer_provider, tel.meter_provider),
        )
        with serve_in_thread(server) as running, RPC(running.url, timeout=5) as rpc:
            with pytest.raises(ResultLimitError):
                list(rpc.bad_second())
            # However long it takes the collector: a cycle is not what keeps it.
            for _ in range(3):
                running.call_in_loop(gc.collect)
                time.sleep(0.1)
            recorded = wait_until(lambda: bool(access.messages()), 2.0)
            active = tel.active()
    assert recorded, "no access record for the stream"
    assert active == {"bad_second": 0}
    assert [s.name for s in tel.spans()] == ["bad_second"]


@pytest.mark.timeout(10)
def test_on_end_once_whatever_closes_the_stream() -> None:
    async def main() -> list[Any]:
        ends: list[Any] = []

        async def three() -> AsyncIterator[int]:
            for i in range(3):
                yield i

        def on_end(error: BaseException | None, items: int) -> None:
            ends.append((type(error).__name__ if error else None, items))

        # Closed before the first item, twice; then read after the close.
        s: Any = observe_stream(three(), on_end)
        await s.aclose()
        await s.aclose()
        assert [x async for x in s] == []
        # Read to its end, then closed.
        s = observe_stream(three(), on_end)
        assert [x async for x in s] == [0, 1, 2]
        await s.aclose()
        # The inner stream raises.

        async def boom() -> AsyncIterator[int]:
            yield 1
            raise ValueError("x")

        s = observe_stream(boom(), on_end)
        with pytest.raises(ValueError):
            async for _ in s:
                pass
        await s.aclose()
        # Cancelled while waiting for an item.

        async def slow() -> AsyncIterator[int]:
            yield 1
            await asyncio.sleep(10)
            yield 2

        s = observe_stream(slow(), on_end)

        async def read() -> None:
            async for _ in s:
                pass

        task = asyncio.ensure_future(read())
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await s.aclose()
        return ends

    assert asyncio.run(main()) == [
        ("GeneratorExit", 0),
        (None, 3),
        ("ValueError", 1),
        ("CancelledError", 1),
    ]
