"""Server and client interceptors around real calls: order, metadata, rejection, outcome."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from servicers import StubCalculator

from generated_examples.calculator.client import AsyncCalculatorClient
from generated_examples.calculator.server import register_calculator
from helpers import arun
from pymprpc import RPC, Server, current_call
from pymprpc.client.interceptors import ClientCallContext
from pymprpc.context import CallContext
from pymprpc.errors import (
    NotFindError,
    ParamError,
    RestrictAccessError,
    RpcUnavailableException,
)
from pymprpc.interceptors import AccessControl, CallNext, RateLimit, observe_stream
from pymprpc.testing import client_for


class Recorder:
    """An interceptor writing what it sees to a shared log."""

    def __init__(self, name: str, log: list[Any]) -> None:
        self.name = name
        self.log = log

    async def __call__(self, ctx: CallContext, call_next: CallNext) -> Any:
        self.log.append((self.name, "in", ctx.method, dict(ctx.metadata)))
        try:
            result = await call_next(ctx)
        except Exception as exc:
            self.log.append((self.name, "error", type(exc).__name__))
            raise
        if ctx.streaming:

            def ended(error: BaseException | None, items: int) -> None:
                self.log.append((self.name, "stream ended", items, error))

            return observe_stream(result, ended)
        self.log.append((self.name, "out", result))
        return result


async def tag(ctx: CallContext, call_next: CallNext) -> Any:
    """Adds metadata for the handler and response metadata for the client."""
    ctx.set_response_metadata("served-by", "test")
    return await call_next(ctx.replace(metadata=ctx.metadata.with_items({"tagged": "yes"})))


async def echo_metadata() -> dict[str, str]:
    return dict(current_call().metadata)


async def fail() -> None:
    raise ValueError("boom")


async def count(n: int) -> AsyncIterator[int]:
    for i in range(n):
        yield i


def build(interceptors: list[Any], **options: Any) -> Server:
    server = Server(("127.0.0.1", 0), interceptors=interceptors, **options)
    server.register_function("echo_metadata")(echo_metadata)
    server.register_function("fail")(fail)
    server.register_function("count")(count)
    server.register_function("add", executor="inline")(lambda a, b: a + b)
    return server


def test_chain_order_metadata_outcome_and_streams() -> None:
    log: list[Any] = []
    server = build([Recorder("outer", log), Recorder("inner", log), tag])

    async def main() -> None:
        async with client_for(server) as rpc:
            seen, reply = await rpc.echo_metadata.with_options(
                metadata={"a": "1"}
            ).call_with_metadata()
            assert seen == {"a": "1", "tagged": "yes"}  # altered by `tag`, inside
            assert reply == {"served-by": "test"}
            assert log == [
                ("outer", "in", "echo_metadata", {"a": "1"}),
                ("inner", "in", "echo_metadata", {"a": "1"}),
                ("inner", "out", seen),
                ("outer", "out", seen),
            ]
            log.clear()
            with pytest.raises(Exception, match="boom"):
                await rpc.fail()
            assert log[-2:] == [("inner", "error", "ValueError"), ("outer", "error", "ValueError")]
            log.clear()
            stream, reply = await rpc.count.call_with_metadata(3)
            assert [i async for i in stream] == [0, 1, 2]
            assert reply == {"served-by": "test"}  # set by an interceptor: in the 201
            await rpc.add(1, 1)  # the stream's end was reported before this reply
            assert ("outer", "stream ended", 3, None) in log

    arun(main())


def test_401_before_the_chain_402_inside() -> None:
    log: list[Any] = []
    server = build([Recorder("only", log)])

    async def main() -> None:
        async with client_for(server) as rpc:
            with pytest.raises(NotFindError):
                await rpc.no_such_method()
            assert log == []  # refused before any interceptor
            with pytest.raises(ParamError):
                await rpc.add(1)
            assert log == [("only", "in", "add", {}), ("only", "error", "ParamError")]

    arun(main())


def test_access_control_by_role_with_the_authenticated_user() -> None:
    rules = AccessControl({"admin.*": ["admin"], "*": ["*"]}, roles={"alice": ["admin"]})
    server = Server(("127.0.0.1", 0), auth=[("alice", "a"), ("bob", "b")], interceptors=[rules])
    server.register_function("admin.reset")(lambda: "reset")
    server.register_function("hello", executor="inline")(lambda: "hi")

    async def main() -> None:
        async with client_for(server, user="alice", password="a") as alice:
            assert await alice.method("admin.reset")() == "reset"
        async with client_for(server, user="bob", password="b") as bob:
            assert await bob.hello() == "hi"
            with pytest.raises(RestrictAccessError, match="user 'bob' may not call"):
                await bob.method("admin.reset")()

    arun(main())


def test_rate_limit_refuses_with_503_and_a_retry_hint() -> None:
    now = [0.0]
    server = build([RateLimit(1, burst=2, per="peer", clock=lambda: now[0])])

    async def main() -> None:
        async with client_for(server) as rpc:
            assert await rpc.add(1, 2) == 3
            assert await rpc.add(1, 2) == 3
            with pytest.raises(RpcUnavailableException, match="retry in") as refused:
                await rpc.add(1, 2)
            assert refused.value.data is not None
            assert refused.value.data["RETRY_AFTER"] == pytest.approx(1.0)
            now[0] += 1.0  # a token came back
            assert await rpc.add(1, 2) == 3

    arun(main())


def test_async_client_interceptors_wrap_calls_in_order() -> None:
    log: list[Any] = []

    def recorder(name: str) -> Callable[..., Any]:
        async def intercept(ctx: ClientCallContext, call_next: Callable[..., Any]) -> Any:
            log.append((name, ctx.method, dict(ctx.metadata)))
            ctx = ctx.replace(metadata=ctx.metadata.with_items({name: "1"}))
            result = await call_next(ctx)
            log.append((name, "done", result, dict(ctx.response_metadata)))
            return result

        return intercept

    server = build([tag])

    async def main() -> None:
        interceptors = [recorder("a"), recorder("b")]
        async with client_for(server, interceptors=interceptors) as rpc:
            seen = await rpc.echo_metadata()
        assert seen == {"a": "1", "b": "1", "tagged": "yes"}
        assert log == [
            ("a", "echo_metadata", {}),
            ("b", "echo_metadata", {"a": "1"}),
            ("b", "done", seen, {"served-by": "test"}),
            ("a", "done", seen, {"served-by": "test"}),
        ]

    arun(main())


def test_sync_client_interceptors_are_plain_functions(
    mprpc_client: Callable[..., RPC],
) -> None:
    log: list[Any] = []

    def refuse_fail(ctx: ClientCallContext, call_next: Callable[..., Any]) -> Any:
        if ctx.method == "fail":
            raise PermissionError("not from this client")
        log.append(ctx.method)
        return call_next(ctx.replace(metadata={"who": "sync"}))

    rpc = mprpc_client(build([]), interceptors=[refuse_fail])
    assert rpc.echo_metadata() == {"who": "sync"}
    with pytest.raises(PermissionError):
        rpc.fail()
    assert log == ["echo_metadata"]


def test_typed_clients_and_call_by_name_go_through_client_interceptors() -> None:
    seen: list[str] = []

    async def note(ctx: ClientCallContext, call_next: Callable[..., Any]) -> Any:
        seen.append(ctx.method)
        return await call_next(ctx)

    async def main() -> None:
        async with client_for(build([]), interceptors=[note]) as rpc:
            assert await rpc.call("add", 1, 2) == 3
        server = Server(("127.0.0.1", 0))
        register_calculator(server, StubCalculator())
        async with client_for(server, AsyncCalculatorClient, interceptors=[note]) as typed:
            assert await typed.add(2, 3) == 5
            assert await typed.with_options(timeout=5).add(2, 3) == 5

    arun(main())
    assert seen == ["add", "add", "add"]


def test_client_interceptors_wrap_delay_and_notify_with_their_metadata() -> None:
    # "Around every outgoing call": delay() (RETURN false) and notify() (oneway) go through
    # the client's chain too, as kind "delay"/"notify", and the metadata an interceptor
    # adds reaches the handler (what trace propagation needs).
    log: list[Any] = []
    got: list[dict[str, str]] = []
    done = asyncio.Event()

    async def stamp(ctx: ClientCallContext, call_next: Callable[..., Any]) -> Any:
        log.append((ctx.kind, ctx.method))
        return await call_next(ctx.replace(metadata={"trace": ctx.kind}))

    async def remember() -> None:
        got.append(dict(current_call().metadata))
        done.set()

    server = build([])
    server.register_function("remember")(remember)

    async def main() -> None:
        async with client_for(server, interceptors=[stamp]) as rpc:
            kept = await rpc.delay("echo_metadata")
            assert await rpc.system.getresult(kept) == {"trace": "delay"}
            assert await rpc.notify("remember") is None
            await asyncio.wait_for(done.wait(), 10)
        assert got == [{"trace": "notify"}]
        assert log == [
            ("delay", "echo_metadata"),
            ("call", "system.getresult"),
            ("notify", "remember"),
        ]

    arun(main())


def test_a_plain_function_is_refused_as_a_server_interceptor() -> None:
    """A plain `def` interceptor used to fail every call with 404 (or, returning
    `call_next(ctx)`, work by accident): refused when the server is made."""
    import functools

    from pymprpc import Server

    def plain(ctx: Any, call_next: Any) -> Any:
        call_next(ctx)  # forgot to return (and to await)

    with pytest.raises(TypeError, match="is not async; a server interceptor is `async def"):
        Server(("127.0.0.1", 0), interceptors=[plain])

    async def tagged(ctx: Any, call_next: Any, tag: str = "") -> Any:
        return await call_next(ctx)

    class Counting:
        async def __call__(self, ctx: Any, call_next: Any) -> Any:
            return await call_next(ctx)

    Server(("127.0.0.1", 0), interceptors=[tagged, functools.partial(tagged, tag="x"), Counting()])
