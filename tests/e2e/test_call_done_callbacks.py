"""`CallContext.add_done_callback`: each callback runs once, when the server is done with
the call, with None (everything sent) or the exception its client was answered with,
whichever way the call ends, from an interceptor or from the handler itself."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import logging
import pickle
from collections.abc import AsyncIterator
from typing import Any

import pytest

from helpers import arun, wait_for
from pymprpc import AsyncRPC, Server, current_call
from pymprpc.context import CallContext
from pymprpc.errors import MPRPCError, RPCRuntimeError
from pymprpc.interceptors import CallNext
from pymprpc.testing import client_for

pytestmark = pytest.mark.timeout(60)


def _code(error: BaseException | None) -> Any:
    if error is None:
        return None
    return getattr(error, "code", type(error).__name__)


class Ends:
    """An interceptor adding one done callback per call, recording (method, code)."""

    def __init__(self, fresh: bool = False) -> None:
        self.ends: list[tuple[str, Any]] = []
        self.fresh = fresh

    async def __call__(self, ctx: CallContext, call_next: CallNext) -> Any:
        if self.fresh:
            # A context built afresh (not `ctx.replace`): its callbacks still run.
            ctx = CallContext(ctx.id, ctx.method, ctx.peer, streaming=ctx.streaming)
        method = ctx.method
        ctx.add_done_callback(lambda error: self.ends.append((method, _code(error))))
        return await call_next(ctx)


async def _ok() -> int:
    return 1


async def _raises() -> int:
    raise ValueError("no")


async def _unsendable() -> Any:
    return {1, 2}


async def _slow() -> int:
    await asyncio.sleep(30)
    return 1


async def _stream() -> AsyncIterator[int]:
    for i in range(3):
        yield i


async def _bad_stream() -> AsyncIterator[Any]:
    yield 1
    yield object()


def _server(interceptors: list[Any]) -> Server:
    server = Server(("127.0.0.1", 0), interceptors=interceptors)
    for name, func in [
        ("ok", _ok),
        ("raises", _raises),
        ("unsendable", _unsendable),
        ("slow", _slow),
        ("stream", _stream),
        ("bad_stream", _bad_stream),
    ]:
        server.register_function(name)(func)
    server.register_function("in_thread", executor="thread")(lambda: {3})
    return server


async def _outcome(rpc: AsyncRPC, name: str, **options: Any) -> Any:
    try:
        result = await rpc.method(name).with_options(**options)()
        if hasattr(result, "__aiter__"):
            return [item async for item in result]
        return result
    except MPRPCError as exc:
        return exc.code


@pytest.mark.parametrize("fresh", [False, True])
def test_each_callback_runs_once_with_what_the_client_got(fresh: bool) -> None:
    ends = Ends(fresh)

    async def main() -> dict[str, Any]:
        server = _server([ends])
        async with client_for(server, AsyncRPC, timeout=10) as rpc:
            got = {
                name: await _outcome(rpc, name)
                for name in ["ok", "raises", "unsendable", "stream", "bad_stream", "in_thread"]
            }
            got["slow"] = await _outcome(rpc, "slow", timeout=0.2)
            await rpc.notify("ok")
            kept = await rpc.delay("unsendable")
            # A call its client cancels: no reply; the callback still runs.
            task = asyncio.create_task(rpc.slow())
            await asyncio.sleep(0.2)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert isinstance(kept, str)
            await asyncio.to_thread(wait_for, lambda: len(ends.ends) == 10)
            return got

    got = arun(main(), timeout=40)
    assert got["ok"] == 1 and got["raises"] == 404 and got["unsendable"] == 405
    assert got["in_thread"] == 405 and got["slow"] == 408
    ends_by = sorted(ends.ends, key=repr)
    assert ends_by == sorted(
        [
            ("ok", None),
            ("ok", None),  # the notification: no reply owed
            ("raises", 404),
            ("unsendable", 405),
            ("unsendable", 405),  # kept (RETURN false): what its fetch gets
            ("in_thread", 405),
            ("stream", None),
            ("bad_stream", 405),
            ("slow", 408),  # its deadline
            ("slow", "CancelledError"),  # cancelled by its client
        ],
        key=repr,
    )


@pytest.mark.parametrize("executor", ["loop", "thread", "inline"])
def test_a_handler_adds_a_callback_to_its_own_context(executor: str) -> None:
    """Without interceptors the context is built when the handler asks: its callbacks run
    too (on the fast lane, the general path, a thread), after the reply is queued."""
    ends: list[tuple[str, Any]] = []

    def record(name: str) -> None:
        current_call().add_done_callback(lambda error: ends.append((name, _code(error))))

    async def main() -> list[Any]:
        server = Server(("127.0.0.1", 0))
        if executor == "loop":

            async def good(x: int = 0) -> int:
                record("good")
                return 1

            async def bad() -> Any:
                record("bad")
                return {1}

            async def raising() -> Any:
                record("raising")
                raise RPCRuntimeError("told to")

            for func in (good, bad, raising):
                server.register_function(func.__name__)(func)
        else:

            def good_(x: int = 0) -> int:
                record("good")
                return 1

            def bad_() -> Any:
                record("bad")
                return {1}

            def raising_() -> Any:
                record("raising")
                raise RPCRuntimeError("told to")

            for func in (good_, bad_, raising_):
                server.register_function(func.__name__.rstrip("_"), executor=executor)(func)
        async with client_for(server, AsyncRPC, timeout=10) as rpc:
            got = [await _outcome(rpc, name) for name in ("good", "bad", "raising")]
            got.append(await rpc.good(x=1))  # by keyword: the general path
            await asyncio.to_thread(wait_for, lambda: len(ends) == 4)
            return got

    assert arun(main(), timeout=30) == [1, 405, 404, 1]
    assert sorted(ends, key=repr) == sorted(
        [("good", None), ("bad", 405), ("raising", 404), ("good", None)], key=repr
    )


def test_a_callback_that_raises_is_logged_and_the_reply_sent(
    caplog: pytest.LogCaptureFixture,
) -> None:
    later: list[Any] = []

    async def faulty(ctx: CallContext, call_next: CallNext) -> Any:
        ctx.add_done_callback(lambda error: 1 / 0)
        ctx.add_done_callback(later.append)
        return await call_next(ctx)

    async def main() -> Any:
        server = _server([faulty])
        async with client_for(server, AsyncRPC, timeout=10) as rpc:
            return await rpc.ok(), await rpc.ok()

    with caplog.at_level(logging.ERROR, logger="pymprpc"):
        assert arun(main()) == (1, 1)
    assert later == [None, None]
    raised = [r for r in caplog.records if "done callback" in r.getMessage()]
    assert len(raised) == 2 and all(r.exc_info for r in raised)


def test_a_callback_added_once_the_call_is_done_runs_at_once() -> None:
    kept: list[CallContext] = []

    async def keep(ctx: CallContext, call_next: CallNext) -> Any:
        kept.append(ctx)
        return await call_next(ctx)

    async def main() -> Any:
        server = _server([keep])
        async with client_for(server, AsyncRPC, timeout=10) as rpc:
            return await rpc.ok(), await _outcome(rpc, "raises")

    assert arun(main()) == (1, 404)
    late: list[Any] = []
    kept[0].add_done_callback(late.append)
    kept[1].add_done_callback(late.append)
    assert late[0] is None
    # The error it was answered with, as a copy without the traceback (whose frames
    # would keep the call's context alive).
    assert isinstance(late[1], RPCRuntimeError) and late[1].__traceback__ is None


def test_copies_share_callbacks_and_pickles_do_not() -> None:
    ctx = CallContext("1", "m")
    seen: list[str] = []
    ctx.replace(user="u").add_done_callback(lambda e: seen.append("replace"))
    dataclasses.replace(ctx, user="v").add_done_callback(lambda e: seen.append("dataclasses"))
    copy.copy(ctx).add_done_callback(lambda e: seen.append("copy"))
    # A pickled context (sent to another process) has callbacks of its own: a callback
    # (a closure, say) need not pickle, and runs in the server only.
    clone = pickle.loads(pickle.dumps(ctx))
    assert clone == ctx
    clone.add_done_callback(lambda e: seen.append("clone"))
    from pymprpc.context import end_call

    end_call(ctx, None)
    end_call(ctx, ValueError())  # once only
    assert seen == ["replace", "dataclasses", "copy"]
