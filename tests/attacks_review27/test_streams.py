"""Stream deadlines (both clients, plain MPRPC 0.1 and negotiated), RPC streams closed or
dropped before their first item, AsyncRPC streams read on a new loop."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from typing import Any

import pytest

from pymprpc.client import RPC, AsyncRPC
from pymprpc.errors import ConnectionLostError, DeadlineExceeded

from .kit import Seen, arun, make_server, serving

TIMEOUT = 0.5
# An item made this long after the call's deadline was certainly received after it.
MARGIN = 0.1


def read_slowly(stream: Any) -> tuple[list[float], BaseException | None]:
    """Read one item, stop reading for 2 deadlines, then read the rest."""
    items = [next(stream)]
    time.sleep(2 * TIMEOUT)
    try:
        for item in stream:
            items.append(item)
    except DeadlineExceeded as exc:
        return items, exc
    return items, None


@pytest.mark.timeout(30)
def test_sync_plain_stream_returns_no_item_received_after_its_deadline() -> None:
    server = make_server()
    with serving(server) as url, RPC(url, features=()) as rpc:
        stream = rpc.ticks.with_options(timeout=TIMEOUT)("plain", 0.01)
        called = time.monotonic()
        items, error = read_slowly(stream)
        assert isinstance(error, DeadlineExceeded)
        late = [t for t in items if t > called + TIMEOUT + MARGIN]
        assert late == [], f"{len(late)} of {len(items)} items made after the deadline"


@pytest.mark.timeout(30)
def test_async_plain_stream_returns_no_item_received_after_its_deadline() -> None:
    server = make_server()

    async def main() -> tuple[float, list[float], BaseException | None]:
        async with AsyncRPC(url, features=()) as rpc:
            stream = await rpc.ticks.with_options(timeout=TIMEOUT)("plain", 0.01)
            called = time.monotonic()
            items = [await stream.__anext__()]
            await asyncio.sleep(2 * TIMEOUT)
            try:
                async for item in stream:
                    items.append(item)
            except DeadlineExceeded as exc:
                return called, items, exc
            return called, items, None

    with serving(server) as url:
        called, items, error = arun(main())
    assert isinstance(error, DeadlineExceeded)
    late = [t for t in items if t > called + TIMEOUT + MARGIN]
    assert late == [], f"{len(late)} of {len(items)} items made after the deadline"


@pytest.mark.timeout(30)
def test_sync_negotiated_stream_slow_reader_deadline_cancels_generator() -> None:
    seen = Seen()
    server = make_server(seen)
    with serving(server) as url, RPC(url) as rpc:
        stream = rpc.ticks.with_options(timeout=TIMEOUT)("neg", 0.01)
        called = time.monotonic()
        items, error = read_slowly(stream)
        assert isinstance(error, DeadlineExceeded)
        assert str(error) == f"call 'ticks' did not finish within its {TIMEOUT}s deadline"
        assert [t for t in items if t > called + TIMEOUT + MARGIN] == []
        assert seen.wait_for("neg:finally")
        assert "neg:done" not in seen.events
        assert rpc.echo("after") == "after"
        assert list(rpc.count(5)) == [0, 1, 2, 3, 4]


@pytest.mark.timeout(30)
def test_async_negotiated_stream_deadline_message_and_cancel() -> None:
    seen = Seen()
    server = make_server(seen)

    async def main() -> None:
        async with AsyncRPC(url) as rpc:
            stream = await rpc.ticks.with_options(timeout=TIMEOUT)("aneg", 0.01)
            called = time.monotonic()
            items = []
            with pytest.raises(DeadlineExceeded) as info:
                async for item in stream:
                    items.append(item)
            assert str(info.value) == (
                f"call 'ticks' did not finish within its {TIMEOUT}s deadline"
            )
            assert items and [t for t in items if t > called + TIMEOUT + MARGIN] == []
            assert await rpc.echo("after") == "after"
            assert [i async for i in await rpc.count(4)] == [0, 1, 2, 3]

    with serving(server) as url:
        arun(main())
        assert seen.wait_for("aneg:finally")


@pytest.mark.parametrize("features", [(), None], ids=["plain", "negotiated"])
@pytest.mark.timeout(40)
def test_stream_deadline_leftovers_do_not_confuse_later_calls(features: Any) -> None:
    """A fast stream of large items times out; its leftovers keep coming (plain) while
    other calls, streams included, run on the same connection."""
    server = make_server()

    @server.register_function()
    async def flood(size: int):  # type: ignore[no-untyped-def]
        i = 0
        while True:
            yield [i, b"x" * size]
            i += 1
            await asyncio.sleep(0)

    kw = {} if features is None else {"features": features}
    with serving(server) as url, RPC(url, **kw) as rpc:
        for round_ in range(3):
            stream = rpc.flood.with_options(timeout=0.3)(20000)
            got = []
            with pytest.raises(DeadlineExceeded):
                for item in stream:
                    got.append(item[0])
            assert got == list(range(len(got)))
            for i in range(20):
                assert rpc.echo([round_, i]) == [round_, i]
            assert list(rpc.count(7)) == list(range(7))
            assert rpc.slow(0.01, "s") == "s"


@pytest.mark.parametrize("features", [(), None], ids=["plain", "negotiated"])
@pytest.mark.timeout(40)
def test_streams_with_deadlines_read_from_several_threads(features: Any) -> None:
    server = make_server()
    kw = {} if features is None else {"features": features}
    results: dict[int, Any] = {}

    with serving(server) as url, RPC(url, **kw) as rpc:

        def reader(n: int) -> None:
            try:
                stream = rpc.ticks.with_options(timeout=0.4 + 0.1 * n)(f"t{n}", 0.005)
                called = time.monotonic()
                items = []
                try:
                    for item in stream:
                        items.append(item)
                except DeadlineExceeded as exc:
                    results[n] = (called, 0.4 + 0.1 * n, items, exc, rpc.echo(n))
                    return
                results[n] = "no DeadlineExceeded"
            except BaseException as exc:  # noqa: BLE001
                results[n] = exc

        threads = [threading.Thread(target=reader, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        assert len(results) == 4
        for n, value in results.items():
            assert isinstance(value, tuple), (n, value)
            called, timeout, items, exc, echoed = value
            assert echoed == n
            assert items, n
            assert [t for t in items if t > called + timeout + MARGIN] == [], n
            assert f"within its {timeout}s deadline" in str(exc)
        assert rpc.echo("end") == "end"


@pytest.mark.parametrize("how", ["close", "drop"])
@pytest.mark.timeout(30)
def test_sync_stream_closed_or_dropped_before_first_item_cancels(how: str) -> None:
    seen = Seen()
    server = make_server(seen)
    with serving(server) as url, RPC(url) as rpc:
        stream = rpc.ticks("c", 0.05)
        if how == "close":
            stream.close()
        else:
            del stream
            gc.collect()
        assert seen.wait_for("c:finally")
        assert rpc.echo(1) == 1


@pytest.mark.timeout(60)
def test_many_sync_streams_dropped_leave_nothing_behind() -> None:
    seen = Seen()
    server = make_server(seen)
    server.register_introspection_functions()
    with serving(server) as url, RPC(url) as rpc:
        for i in range(60):
            stream = rpc.ticks(f"m{i}", 0.02)
            if i % 2:
                stream.close()
            del stream
        gc.collect()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if sum(e.endswith(":finally") for e in seen.events) == 60:
                break
            time.sleep(0.05)
        assert sum(e.endswith(":finally") for e in seen.events) == 60
        # only this call runs on the server; the client tracks no call
        assert rpc.system.lenUndoneTasks() == 1
        assert rpc._pending == {}


@pytest.mark.timeout(30)
def test_sync_close_with_unread_stream_fails_it_and_ends_generator() -> None:
    seen = Seen()
    server = make_server(seen, half_close_timeout=1)

    @server.register_function()
    async def once_then_wait(tag: str):  # type: ignore[no-untyped-def]
        try:
            yield 1
            await asyncio.sleep(30)
            yield 2
        finally:
            seen.add(f"{tag}:finally")

    with serving(server) as url:
        rpc = RPC(url)
        rpc.connect()
        stream = rpc.once_then_wait("u")
        assert next(stream) == 1
        rpc.close()
        started = time.monotonic()
        with pytest.raises(ConnectionLostError):
            next(stream)
        assert time.monotonic() - started < 5
        assert seen.wait_for("u:finally", 10)


@pytest.mark.parametrize("second", ["asyncio", "uvloop"])
@pytest.mark.timeout(30)
def test_async_stream_read_first_on_new_loop_fails(second: str) -> None:
    server = make_server()
    with serving(server) as url:
        rpc = AsyncRPC(url)

        async def open_it() -> Any:
            await rpc.connect()
            return await rpc.ticks("n", 0.5, 10, 1.0)

        stream = arun(open_it())

        async def read_it() -> Any:
            return await asyncio.wait_for(stream.__anext__(), 10)

        if second == "uvloop":
            import uvloop

            runner: Any = uvloop.run
        else:
            runner = asyncio.run
        started = time.monotonic()
        with pytest.raises(ConnectionLostError):
            runner(read_it())
        assert time.monotonic() - started < 5

        async def call_again() -> Any:
            try:
                return await rpc.echo(3)
            finally:
                await rpc.close()

        assert runner(call_again()) == 3


@pytest.mark.timeout(30)
def test_async_stream_of_old_loop_read_after_a_call_on_new_loop_fails() -> None:
    server = make_server()
    with serving(server) as url:
        rpc = AsyncRPC(url)

        async def open_it() -> Any:
            await rpc.connect()
            return await rpc.ticks("n2", 0.5, 10, 1.0)

        stream = arun(open_it())

        async def call_then_read() -> Any:
            try:
                assert await rpc.echo(4) == 4
                with pytest.raises(ConnectionLostError):
                    await asyncio.wait_for(stream.__anext__(), 10)
                return await rpc.echo(5)
            finally:
                await rpc.close()

        assert arun(call_then_read()) == 5
