"""README "Running in production", **Interceptors**: "run around every call, the first
outermost: `async def (ctx, call_next)` may read or replace the context
(`ctx.replace(metadata=...)`), refuse the call with any `pymprpc.errors` exception, time
it and see its outcome. An unknown method is refused (401) before them; argument binding
(402) happens inside them." Plus "No handler can stop the server" for interceptors."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import pytest

from pymprpc import Server, current_call
from pymprpc.errors import (
    CancelledError,
    NotFindError,
    ParamError,
    RequestError,
    RestrictAccessError,
    RPCRuntimeError,
    RpcUnavailableException,
)
from pymprpc.testing import client_for, sync_client_for

from .kit import run


def _server(*interceptors: Any, **options: Any) -> Server:
    server = Server(("127.0.0.1", 0), interceptors=list(interceptors), **options)

    @server.register_function()
    async def echo(x: Any) -> Any:
        return x

    @server.register_function()
    async def meta() -> dict[str, str]:
        return dict(current_call().metadata)

    @server.register_function()
    async def count(n: int) -> Any:
        for i in range(n):
            yield i

    return server


def test_first_interceptor_is_outermost() -> None:
    """ "run around every call, the first outermost"."""
    order: list[str] = []

    def make(name: str) -> Any:
        async def icpt(ctx: Any, call_next: Any) -> Any:
            order.append(f"{name}>")
            try:
                return await call_next(ctx)
            finally:
                order.append(f"<{name}")

        return icpt

    with sync_client_for(_server(make("a"), make("b")), timeout=10) as rpc:
        assert rpc.echo(1) == 1
    assert order == ["a>", "b>", "<b", "<a"]


def test_replace_metadata_reaches_handler() -> None:
    """ "may read or replace the context (`ctx.replace(metadata=...)`)": the handler's
    `current_call().metadata` is the replaced one."""

    async def add(ctx: Any, call_next: Any) -> Any:
        return await call_next(ctx.replace(metadata={**ctx.metadata, "added": "yes"}))

    with sync_client_for(_server(add), timeout=10) as rpc:
        got = rpc.meta.with_options(metadata={"sent": "1"})()
    assert got == {"sent": "1", "added": "yes"}


@pytest.mark.parametrize(
    "error",
    [RestrictAccessError, RpcUnavailableException, RequestError, ParamError, NotFindError],
)
def test_refuse_with_any_pymprpc_error(error: type) -> None:
    """ "refuse the call with any `pymprpc.errors` exception": the client gets that
    exception's code and message."""

    async def refuse(ctx: Any, call_next: Any) -> Any:
        raise error("no way", id=ctx.id)

    with sync_client_for(_server(refuse), timeout=10) as rpc:
        with pytest.raises(error) as exc:
            rpc.echo(1)
        assert "no way" in str(exc.value)
        assert exc.value.code == error.code


def test_unknown_method_refused_before_interceptors() -> None:
    """ "An unknown method is refused (401) before them"."""
    seen: list[str] = []

    async def spy(ctx: Any, call_next: Any) -> Any:
        seen.append(ctx.method)
        return await call_next(ctx)

    with sync_client_for(_server(spy), timeout=10) as rpc:
        with pytest.raises(NotFindError):
            rpc.nosuch()
        assert rpc.echo(2) == 2
    assert seen == ["echo"]


def test_argument_binding_inside_interceptors() -> None:
    """ "argument binding (402) happens inside them": the interceptor sees the 402 raised
    by call_next."""
    seen: list[Any] = []

    async def spy(ctx: Any, call_next: Any) -> Any:
        try:
            return await call_next(ctx)
        except BaseException as exc:
            seen.append(getattr(exc, "code", type(exc).__name__))
            raise

    with sync_client_for(_server(spy), timeout=10) as rpc, pytest.raises(ParamError):
        rpc.echo(1, 2, 3)
    assert seen == [402]


@pytest.mark.logs_errors
def test_interceptor_plain_exception_fails_call_only() -> None:
    """An interceptor raising a non-pymprpc exception fails that call (404) only."""

    async def bad(ctx: Any, call_next: Any) -> Any:
        if ctx.method == "echo":
            raise ValueError("interceptor bug")
        return await call_next(ctx)

    with sync_client_for(_server(bad), timeout=10) as rpc:
        with pytest.raises(RPCRuntimeError) as exc:
            rpc.echo(1)
        assert exc.value.code == 404
        assert rpc.meta() == {}


@pytest.mark.logs_errors
@pytest.mark.parametrize("kind", ["SystemExit", "KeyboardInterrupt"])
def test_interceptor_exit_does_not_stop_server(kind: str) -> None:
    """ "No handler can stop the server: `sys.exit()`, `KeyboardInterrupt` ... fails that
    call only (404)" -- from an interceptor too (it runs in the call's task)."""

    async def bad(ctx: Any, call_next: Any) -> Any:
        if ctx.method == "echo":
            if kind == "SystemExit":
                sys.exit(1)
            raise KeyboardInterrupt
        return await call_next(ctx)

    with sync_client_for(_server(bad), timeout=10) as rpc:
        with pytest.raises(RPCRuntimeError) as exc:
            rpc.echo(1)
        assert exc.value.code == 404
        assert rpc.meta() == {}


@pytest.mark.logs_errors
def test_interceptor_stray_cancelled_error_fails_call_only() -> None:
    """A stray `CancelledError` from an interceptor fails that call only (407 with
    `cancel`), like one from a method."""

    async def bad(ctx: Any, call_next: Any) -> Any:
        if ctx.method == "echo":
            raise asyncio.CancelledError
        return await call_next(ctx)

    with sync_client_for(_server(bad), timeout=10) as rpc:
        with pytest.raises(CancelledError):
            rpc.echo(1)
        assert rpc.meta() == {}


def test_interceptor_may_answer_without_call_next() -> None:
    """ "time it and see its outcome" / "an interceptor may still convert it": one that
    never calls call_next answers with what it returns."""

    async def short(ctx: Any, call_next: Any) -> Any:
        return "from interceptor"

    with sync_client_for(_server(short), timeout=10) as rpc:
        assert rpc.echo(1) == "from interceptor"


def test_interceptor_converts_result() -> None:
    """ "What `call_next` returns is not sent yet (an interceptor may still convert it)"."""

    async def conv(ctx: Any, call_next: Any) -> Any:
        value = await call_next(ctx)
        return {"wrapped": value}

    with sync_client_for(_server(conv), timeout=10) as rpc:
        assert rpc.echo(5) == {"wrapped": 5}


def test_interceptor_calls_call_next_twice() -> None:
    """A retrying interceptor: call_next twice on a unary coroutine runs the method twice
    and the second value is answered."""
    runs: list[int] = []
    server = Server(("127.0.0.1", 0))

    async def twice(ctx: Any, call_next: Any) -> Any:
        await call_next(ctx)
        return await call_next(ctx)

    server = Server(("127.0.0.1", 0), interceptors=[twice])

    @server.register_function()
    async def bump() -> int:
        runs.append(1)
        return len(runs)

    with sync_client_for(server, timeout=10) as rpc:
        assert rpc.bump() == 2


def test_async_client_and_interceptor_timing() -> None:
    """client_for yields a connected AsyncRPC; the README's `timed` interceptor's
    response metadata comes back with `call_with_metadata`."""

    async def timed(ctx: Any, call_next: Any) -> Any:
        try:
            return await call_next(ctx)
        finally:
            ctx.set_response_metadata("server-ms", "1.00")

    async def main() -> Any:
        async with client_for(_server(timed)) as rpc:
            return await rpc.echo.call_with_metadata(3)

    value, reply = run(main())
    assert value == 3
    assert reply.get("server-ms") == "1.00"


def test_stream_response_metadata_from_interceptor() -> None:
    """ "A stream's response metadata leaves with its start ... set it in an interceptor
    (before `call_next` returns)"."""

    async def tag(ctx: Any, call_next: Any) -> Any:
        ctx.set_response_metadata("k", "v")
        return await call_next(ctx)

    async def main() -> Any:
        async with client_for(_server(tag)) as rpc:
            stream = await rpc.count.call_with_metadata(3)
            return stream

    got = run(main())
    # (value, metadata) for a stream: the stream object and the start's metadata
    assert got[1].get("k") == "v"
