"""Server interceptors that misbehave: every call is still answered exactly once, the
connection stays usable and the server keeps serving and shuts down in time."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from typing import Any

import pytest

from attacks_review9 import handlers
from attacks_review9.kit import Raw, assert_still_serving, new_server, serving
from pymprpc import RPC, AsyncRPC, Server, current_call
from pymprpc.errors import (
    CancelledError,
    RestrictAccessError,
    RPCRuntimeError,
)
from pymprpc.testing import client_for

pytestmark = pytest.mark.timeout(30)


def build(*interceptors: Any, **options: Any) -> Server:
    server = new_server(interceptors=list(interceptors), **options)

    @server.register_function()
    async def ping() -> str:
        return "pong"

    @server.register_function()
    async def echo(x: Any) -> Any:
        return x

    @server.register_function()
    async def numbers(n: int) -> Any:
        for i in range(n):
            yield i

    @server.register_function()
    async def sleepy(seconds: float) -> str:
        await asyncio.sleep(seconds)
        return "woke"

    server.register_function("who_process", executor="process")(handlers.who)
    server.register_function("who_thread", executor="thread")(handlers.who)
    return server


def once(exc: BaseException) -> Any:
    """An interceptor raising `exc` for `echo` calls only."""

    async def interceptor(ctx: Any, call_next: Any) -> Any:
        if ctx.method == "echo":
            raise exc
        return await call_next(ctx)

    return interceptor


@pytest.mark.logs_errors
@pytest.mark.parametrize(
    "exc",
    [SystemExit(3), KeyboardInterrupt(), GeneratorExit(), BaseException("base"), StopIteration()],
    ids=lambda e: type(e).__name__,
)
def test_interceptor_raising_base_exceptions_fails_only_its_call(exc: BaseException) -> None:
    with serving(build(once(exc))) as running, RPC(running.url, timeout=5) as rpc:
        with pytest.raises(RPCRuntimeError) as info:
            rpc.echo(1)
        assert type(exc).__name__ in str(info.value)
        assert_still_serving(running, rpc)


def test_interceptor_raising_asyncio_cancelled_is_answered() -> None:
    with (
        serving(build(once(asyncio.CancelledError()))) as running,
        RPC(running.url, timeout=5) as rpc,
    ):
        with pytest.raises(CancelledError):
            rpc.echo(1)
        assert_still_serving(running, rpc)


def test_refusal_from_interceptor_is_not_logged_as_error(caplog: pytest.LogCaptureFixture) -> None:
    refuse = once(RestrictAccessError("nope"))
    with serving(build(refuse)) as running, RPC(running.url, timeout=5) as rpc:
        for _ in range(3):
            with pytest.raises(RestrictAccessError):
                rpc.echo(1)
        assert_still_serving(running, rpc)
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


def test_call_next_twice_and_never() -> None:
    runs: list[int] = []

    async def twice(ctx: Any, call_next: Any) -> Any:
        first = await call_next(ctx)
        second = await call_next(ctx)
        runs.append(1)
        return [first, second] if ctx.method == "echo" else second

    async def short_circuit(ctx: Any, call_next: Any) -> Any:
        if ctx.method == "echo":
            return "cached"
        return await call_next(ctx)

    with serving(build(twice)) as running, RPC(running.url, timeout=5) as rpc:
        assert rpc.echo(7) == [7, 7]
        assert list(rpc.numbers(3)) == [0, 1, 2]
        assert_still_serving(running, rpc)
    with serving(build(short_circuit)) as running, RPC(running.url, timeout=5) as rpc:
        assert rpc.echo(7) == "cached"
        assert_still_serving(running, rpc)


def test_call_next_stashed_and_called_after_the_reply() -> None:
    stash: list[Any] = []
    done = threading.Event()

    async def stasher(ctx: Any, call_next: Any) -> Any:
        if ctx.method == "echo":
            stash.append((call_next, ctx))

            async def later() -> None:
                await asyncio.sleep(0.05)
                try:
                    await stash[0][0](stash[0][1])
                finally:
                    done.set()

            asyncio.get_running_loop().create_task(later())
            return "early"
        return await call_next(ctx)

    with serving(build(stasher)) as running, RPC(running.url, timeout=5) as rpc:
        assert rpc.echo(1) == "early"
        assert done.wait(5)
        assert_still_serving(running, rpc)  # nothing else arrived for the old ID


@pytest.mark.logs_errors
def test_interceptor_returning_unencodable_value_gets_405_and_connection_goes_on() -> None:
    async def wrong(ctx: Any, call_next: Any) -> Any:
        value = await call_next(ctx)
        return object() if ctx.method == "echo" else value

    with serving(build(wrong)) as running, RPC(running.url, timeout=5) as rpc:
        with pytest.raises(Exception) as info:
            rpc.echo(1)
        assert getattr(info.value, "code", None) == 405
        assert_still_serving(running, rpc)


def test_interceptor_past_the_deadline_is_answered_408_and_server_goes_on() -> None:
    async def slow(ctx: Any, call_next: Any) -> Any:
        if ctx.method == "echo":
            await asyncio.sleep(10)
        return await call_next(ctx)

    with serving(build(slow)) as running, Raw(running.server.port) as raw:
        raw.login(features=["deadline", "cancel"])
        raw.call("d", "echo", 1, DEADLINE=0.2)
        reply = raw.recv()
        assert reply["CODE"] == 408 and reply["MESSAGE"]["ID"] == "d"
        raw.call("p", "ping")
        assert raw.recv()["MESSAGE"]["RESULT"] == "pong"


def test_client_cancel_mid_interceptor() -> None:
    seen: list[str] = []

    async def slow(ctx: Any, call_next: Any) -> Any:
        try:
            if ctx.method == "sleepy":
                await asyncio.sleep(10)
            return await call_next(ctx)
        except BaseException as exc:
            seen.append(type(exc).__name__)
            raise

    async def main() -> None:
        async with client_for(build(slow), AsyncRPC, timeout=5) as rpc:
            task = asyncio.ensure_future(rpc.sleepy(0))
            await asyncio.sleep(0.2)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await rpc.ping() == "pong"

    asyncio.run(main())
    assert seen == ["CancelledError"]


def test_replaced_context_reaches_plain_functions_everywhere() -> None:
    pool = concurrent.futures.ThreadPoolExecutor(2)

    async def replace(ctx: Any, call_next: Any) -> Any:
        assert current_call() is ctx
        return await call_next(ctx.replace(metadata=ctx.metadata.with_items({"x": "replaced"})))

    server = build(replace, auth=[("bob", "pw")])
    server.register_function("who_pool", executor=pool)(handlers.who)
    server.register_function("who_inline", executor="inline")(handlers.who)
    try:
        with serving(server) as running, RPC(running.url_for("bob", "pw"), timeout=10) as rpc:
            for name in ("who_process", "who_thread", "who_pool", "who_inline"):
                call = rpc.method(name).with_options(metadata={"x": "orig", "y": "kept"})
                value, reply = call.call_with_metadata()
                assert value == [name, "bob", {"x": "replaced", "y": "kept"}, True], name
                assert reply == {"seen-x": "replaced"}, name
    finally:
        pool.shutdown()


def test_interceptor_sees_oneway_and_kept_calls_and_refuses_them() -> None:
    seen: list[tuple[str, bool]] = []

    async def refuse(ctx: Any, call_next: Any) -> Any:
        seen.append((ctx.method, ctx.returns))
        if ctx.method == "echo":
            raise RestrictAccessError("no")
        return await call_next(ctx)

    with serving(build(refuse)) as running, RPC(running.url, timeout=5) as rpc:
        kept = rpc.delay("echo", 1)
        time.sleep(0.1)
        with pytest.raises(RestrictAccessError):
            rpc.system.getresult(kept)
        rpc.notify("echo", 2)
        assert rpc.ping() == "pong"
    assert ("echo", False) in seen and ("system.getresult", True) in seen


def test_pipelined_calls_through_interceptors_each_answered_once() -> None:
    async def jitter(ctx: Any, call_next: Any) -> Any:
        await asyncio.sleep(0.001 * (hash(ctx.id) % 5))
        return await call_next(ctx)

    async def main() -> None:
        async with client_for(build(jitter), AsyncRPC, timeout=10) as rpc:
            values = await asyncio.gather(*[rpc.echo(i) for i in range(300)])
            assert values == list(range(300))
            streams = await asyncio.gather(*[rpc.numbers(i % 4) for i in range(40)])
            assert [[x async for x in s] for s in streams] == [
                list(range(i % 4)) for i in range(40)
            ]

    asyncio.run(main())


def test_unknown_method_never_reaches_interceptors_and_402_does() -> None:
    seen: list[str] = []

    async def record(ctx: Any, call_next: Any) -> Any:
        seen.append(ctx.method)
        return await call_next(ctx)

    with serving(build(record)) as running, Raw(running.server.port) as raw:
        raw.login()
        raw.call("a", "nope")
        assert raw.recv()["CODE"] == 401
        raw.call("b", "echo", 1, 2, 3)
        assert raw.recv()["CODE"] == 402
    assert seen == ["echo"]


def test_time_remaining_in_interceptor_and_handler() -> None:
    got: list[float] = []

    async def measure(ctx: Any, call_next: Any) -> Any:
        got.append(ctx.time_remaining())
        return await call_next(ctx)

    with serving(build(measure)) as running:
        with RPC(running.url, timeout=2) as rpc:
            assert rpc.ping() == "pong"
            value, _ = rpc.who_process.call_with_metadata()
            assert value[3] is True
        with RPC(running.url) as rpc:
            assert rpc.ping() == "pong"
    assert 1.5 < got[0] <= 2.0 and got[-1] is None
