"""Review 23: `CallContext.add_done_callback`, `observe_call` and what
AccessLog and ServerTelemetry record, against the contract: every call's callbacks run
exactly once with the code its client got, whatever the interceptors do. Real servers on
127.0.0.1 (ephemeral ports)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import re
import threading
import time
import weakref
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from review_fixtures import client_run

from pymprpc import AsyncRPC, Server, current_call
from pymprpc.context import CallContext
from pymprpc.errors import MPRPCError, RestrictAccessError
from pymprpc.interceptors import AccessLog, CallNext
from pymprpc.testing import client_for

pytestmark = pytest.mark.timeout(20)

CODE = re.compile(r"^(\S+) id=(\S+) .* -> (\d{3}) in ")


@contextlib.contextmanager
def access_records() -> Iterator[list[tuple[str, int]]]:
    """Every AccessLog record, as (method, code), in order."""
    records: list[tuple[str, int]] = []

    class Grab(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            match = CODE.search(record.getMessage())
            if match:
                records.append((match.group(1), int(match.group(3))))

    logger = logging.getLogger("pymprpc.access")
    handler = Grab()
    old = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)


async def _until(predicate: Any, timeout: float = 2.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        await asyncio.sleep(0.02)
    return bool(predicate())


def _code(error: BaseException | None) -> Any:
    if error is None:
        return None
    return getattr(error, "code", type(error).__name__)


# -- a context built afresh, then refused further in -----------------------------------


def test_fresh_context_callbacks_run_when_an_inner_interceptor_refuses(loop: str) -> None:
    ends: list[tuple[str, Any]] = []

    async def fresh(ctx: CallContext, call_next: CallNext) -> Any:
        ctx = CallContext(ctx.id, ctx.method, ctx.peer, streaming=ctx.streaming)
        ctx.add_done_callback(lambda error: ends.append((ctx.method, _code(error))))
        return await call_next(ctx)

    async def deny(ctx: CallContext, call_next: CallNext) -> Any:
        if ctx.method == "denied":
            raise RestrictAccessError("no")
        return await call_next(ctx)

    async def main() -> tuple[list[Any], list[Any]]:
        server = Server(("127.0.0.1", 0), interceptors=[fresh, AccessLog(), deny])

        async def one() -> int:
            return 1

        server.register_function("ok")(one)
        server.register_function("denied")(one)
        with access_records() as records:
            async with client_for(server, AsyncRPC, timeout=5) as rpc:
                assert await rpc.ok() == 1
                with pytest.raises(RestrictAccessError):
                    await rpc.denied()
                await _until(lambda: len(ends) == 2 and len(records) == 2)
            return list(ends), list(records)

    ends_got, records = client_run(loop, main(), timeout=15)
    assert sorted(ends_got, key=repr) == [("denied", 403), ("ok", None)]
    assert sorted(records) == [("denied", 403), ("ok", 200)]


# -- a thread handler asking for its context once its call was cancelled -------------


def test_a_thread_handler_callback_added_after_its_cancel_runs_or_is_refused() -> None:
    outcome: list[Any] = []
    finished = threading.Event()

    def slow() -> int:
        time.sleep(0.4)
        try:
            current_call().add_done_callback(lambda error: outcome.append(_code(error)))
        except RuntimeError:
            outcome.append("refused")  # "the call is done already": also per contract
        finally:
            finished.set()
        return 1

    async def main() -> None:
        server = Server(("127.0.0.1", 0))
        server.register_function("slow", executor="thread")(slow)
        async with client_for(server, AsyncRPC, timeout=5) as rpc:
            task = asyncio.create_task(rpc.slow())
            await asyncio.sleep(0.1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await asyncio.to_thread(finished.wait, 3)
            await _until(lambda: bool(outcome), 1.0)

    client_run("asyncio", main(), timeout=15)
    assert outcome in (["refused"], ["CancelledError"])


# -- a stream wrapped by a plain async generator outside AccessLog ---------------------


async def _wrap_streams(ctx: CallContext, call_next: CallNext) -> Any:
    """A user's interceptor re-yielding a stream's items (a plain async generator)."""
    result = await call_next(ctx)
    if not ctx.streaming:
        return result

    async def wrapped() -> AsyncIterator[Any]:
        async for item in result:
            yield item

    return wrapped()


async def _nums() -> AsyncIterator[int]:
    for i in range(3):
        await asyncio.sleep(0.01)
        yield i


def test_a_oneway_stream_under_a_wrapping_interceptor_is_logged_once(loop: str) -> None:
    """A stream called oneway through a re-yielding interceptor outside AccessLog is
    closed unstarted (the inner stream is never closed): it is logged once all the same,
    as closed unread (407), as it is without the wrapper."""

    async def main() -> list[tuple[str, int]]:
        server = Server(("127.0.0.1", 0), interceptors=[_wrap_streams, AccessLog()])
        server.register_function("nums")(_nums)
        with access_records() as records:
            async with client_for(server, AsyncRPC, timeout=5) as rpc:
                assert [x async for x in await rpc.nums()] == [0, 1, 2]
                await rpc.notify("nums")
                await rpc.system.health()  # the notification was handled before this
                await _until(lambda: len(records) >= 2, 1.0)
            return list(records)

    assert client_run(loop, main(), timeout=15) == [
        ("nums", 201),
        ("nums", 407),
        ("system.health", 200),
    ]


def test_a_stream_under_a_wrapping_interceptor_read_or_closed_is_logged_once(
    loop: str,
) -> None:
    async def main() -> list[tuple[str, int]]:
        server = Server(("127.0.0.1", 0), interceptors=[_wrap_streams, AccessLog()])
        server.register_function("nums")(_nums)
        with access_records() as records:
            async with client_for(server, AsyncRPC, timeout=5) as rpc:
                assert [x async for x in await rpc.nums()] == [0, 1, 2]
                stream = await rpc.nums()
                await stream.aclose()
                kept = await rpc.delay("nums")
                await asyncio.sleep(0.2)
                got = await rpc.system.getresult(kept)
                assert [x async for x in got] == [0, 1, 2]
                await _until(lambda: len(records) >= 4, 2.0)
            await asyncio.sleep(0.1)
            return list(records)

    records = client_run(loop, main(), timeout=15)
    assert len(records) == 4
    assert records[0] == ("nums", 201)
    # (the kept stream's fetch: see test_a_stream_returned_by_a_coroutine_is_logged_201)
    assert sorted(records[1:])[:2] == [("nums", 201), ("nums", 407)]
    assert records[3][0] == "system.getresult"


def test_a_stream_returned_by_a_coroutine_is_logged_201(loop: str) -> None:
    async def returns_stream() -> Any:
        return _nums()

    async def main() -> list[tuple[str, int]]:
        server = Server(("127.0.0.1", 0), interceptors=[AccessLog()])
        server.register_function("returns_stream")(returns_stream)
        server.register_function("nums")(_nums)
        with access_records() as records:
            async with client_for(server, AsyncRPC, timeout=5) as rpc:
                # The client got a stream: a 201 start, items, an end (docs/protocol.md).
                assert [x async for x in await rpc.returns_stream()] == [0, 1, 2]
                kept = await rpc.delay("nums")
                await asyncio.sleep(0.2)
                assert [x async for x in await rpc.system.getresult(kept)] == [0, 1, 2]
                await _until(lambda: len(records) >= 3)
            return list(records)

    records = client_run(loop, main(), timeout=15)
    assert records == [("returns_stream", 201), ("nums", 201), ("system.getresult", 201)]


# -- an interceptor running call_next in a task of its own --------------------------


async def _shielded(ctx: CallContext, call_next: CallNext) -> Any:
    """Lets the call finish even if its client cancels it (a legal interceptor)."""
    task = asyncio.ensure_future(call_next(ctx))
    return await asyncio.shield(task)


def test_accesslog_under_an_interceptor_running_call_next_in_its_own_task(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> list[tuple[str, int]]:
        server = Server(("127.0.0.1", 0), interceptors=[_shielded, AccessLog()])

        async def slow() -> int:
            await asyncio.sleep(0.3)
            return 1

        server.register_function("slow")(slow)
        with access_records() as records:
            async with client_for(server, AsyncRPC, timeout=5) as rpc:
                assert await rpc.slow() == 1
                task = asyncio.create_task(rpc.slow())
                await asyncio.sleep(0.1)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                await asyncio.sleep(0.5)
                await _until(lambda: len(records) >= 2, 1.0)
            gc.collect()  # "never retrieved" is reported when the task is collected
            await asyncio.sleep(0.05)
            return list(records)

    records = client_run("asyncio", main(), timeout=15)
    assert len(records) == 2
    assert records[0] == ("slow", 200)
    assert records[1][1] in (200, 407)


# -- kept (RETURN false) calls: the unary and the stream alike -----------------------


@pytest.mark.logs_errors
def test_kept_unencodable_outcomes_end_their_context_alike(loop: str) -> None:
    ends: list[tuple[str, Any]] = []

    async def watch(ctx: CallContext, call_next: CallNext) -> Any:
        method = ctx.method
        ctx.add_done_callback(lambda error: ends.append((method, _code(error))))
        return await call_next(ctx)

    async def bad() -> Any:
        return {1}

    async def bad_stream() -> AsyncIterator[Any]:
        yield 1
        yield {2}

    async def main() -> list[tuple[str, Any]]:
        server = Server(("127.0.0.1", 0), interceptors=[watch])
        server.register_function("bad")(bad)
        server.register_function("bad_stream")(bad_stream)
        async with client_for(server, AsyncRPC, timeout=5) as rpc:
            for name in ("bad", "bad_stream"):
                kept = await rpc.delay(name)
                await asyncio.sleep(0.2)
                with pytest.raises(MPRPCError) as got:
                    result = await rpc.system.getresult(kept)
                    [x async for x in result]
                assert got.value.code == 405
            await _until(lambda: len(ends) >= 4)
        return [end for end in ends if end[0] != "system.getresult"]

    ends_got = client_run(loop, main(), timeout=15)
    assert dict(ends_got)["bad"] == dict(ends_got)["bad_stream"]


# -- no cycles keep a failed call's frames ---------------------------------------------


class _Marker:
    pass


@pytest.mark.logs_errors
@pytest.mark.parametrize("kind", ["raises", "unsendable", "bad_stream", "cancelled"])
def test_a_failed_call_frees_its_handler_locals_without_gc(loop: str, kind: str) -> None:
    refs: list[weakref.ref[_Marker]] = []
    ends: list[Any] = []

    async def watch(ctx: CallContext, call_next: CallNext) -> Any:
        ctx.add_done_callback(lambda error: ends.append(_code(error)))
        return await call_next(ctx)

    async def raises() -> Any:
        marker = _Marker()
        refs.append(weakref.ref(marker))
        raise ValueError("no")

    async def unsendable() -> Any:
        marker = _Marker()
        refs.append(weakref.ref(marker))
        return {1}

    async def bad_stream() -> AsyncIterator[Any]:
        marker = _Marker()
        refs.append(weakref.ref(marker))
        yield 1
        yield {2}

    async def cancelled() -> Any:
        marker = _Marker()
        refs.append(weakref.ref(marker))
        await asyncio.sleep(10)

    async def main() -> None:
        server = Server(("127.0.0.1", 0), interceptors=[AccessLog(), watch])
        for func in (raises, unsendable, bad_stream, cancelled):
            server.register_function(func.__name__)(func)
        async with client_for(server, AsyncRPC, timeout=5) as rpc:
            if kind == "cancelled":
                task = asyncio.create_task(rpc.cancelled())
                await asyncio.sleep(0.1)
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            else:
                with pytest.raises(MPRPCError):
                    result = await rpc.method(kind)()
                    [x async for x in result]
            assert await _until(lambda: len(ends) == 1)
            await asyncio.sleep(0.05)
            assert await rpc.system.health() == "SERVING"

    # The handler's own ERROR record keeps its traceback (caplog holds records): kept off.
    handler_log = logging.getLogger("pymprpc.server.handler")
    quiet = logging.NullHandler()
    handler_log.addHandler(quiet)
    handler_log.propagate = False
    gc.disable()
    try:
        client_run(loop, main(), timeout=15)
        assert refs and refs[0]() is None, f"{kind}: the handler's local is still alive"
    finally:
        gc.enable()
        handler_log.propagate = True
        handler_log.removeHandler(quiet)
