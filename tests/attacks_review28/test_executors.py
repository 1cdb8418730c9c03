"""README "#### Executors: which one for a plain function?" and the call context in each
("`current_call()` (coroutines, streams, and plain functions on the server's executors,
worker processes included, and on a `ThreadPoolExecutor` of your own)")."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import os
import threading
from typing import Any

import pytest

from pymprpc import RPC, Server, current_call
from pymprpc.errors import ParamError, RPCRuntimeError
from pymprpc.testing import client_for, sync_client_for

from .kit import Records, run

MAIN_PID = os.getpid()


def _where() -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "thread": threading.current_thread() is threading.main_thread(),
        "tname": threading.current_thread().name,
    }


def _ctx() -> dict[str, Any]:
    call = current_call()
    return {
        "id": call.id,
        "method": call.method,
        "user": call.user,
        "peer": list(call.peer) if call.peer else None,
        "meta": dict(call.metadata),
        "left": call.time_remaining(),
    }


class Obj:
    def where(self) -> dict[str, Any]:
        return _where()


class CallableObj:
    def __call__(self) -> dict[str, Any]:
        return _where()


class AsyncCallable:
    async def __call__(self) -> dict[str, Any]:
        return {"loop": asyncio.get_running_loop() is not None, **_where()}


def test_default_executors() -> None:
    """ "a function ... **process**"; "a bound method: `register_function()(obj.method)`,
    every method of `register_instance(obj)` ... or a callable object | **thread**"."""
    server = Server(("127.0.0.1", 0), max_workers=1)

    @server.register_function()
    def func() -> dict[str, Any]:
        return _where()

    server.register_function("bound")(Obj().where)
    server.register_function("callable")(CallableObj())
    server.register_instance(Obj())
    with sync_client_for(server, RPC, timeout=10) as rpc:
        assert rpc.func()["pid"] != MAIN_PID
        for name in ("bound", "callable", "where"):
            got = getattr(rpc, name)()
            assert got["pid"] == MAIN_PID, name
            assert not got["thread"], name


def test_bound_method_on_process_logs_info_at_registration() -> None:
    """ "a bound method runs here only when asked, and the server logs one INFO line
    saying so at registration"."""
    server = Server(("127.0.0.1", 0), max_workers=1)
    with Records(level=logging.DEBUG) as rec:
        server.register_function("bound", executor="process")(Obj().where)
    infos = [r for r in rec.records if r.levelno == logging.INFO]
    assert len(infos) == 1, rec.texts()


def test_register_instance_process_logs_info_line() -> None:
    """The same for `register_instance(obj, executor="process")`: one INFO line."""
    server = Server(("127.0.0.1", 0), max_workers=1)
    with Records(level=logging.DEBUG) as rec:
        server.register_instance(Obj(), executor="process")
    infos = [r for r in rec.records if r.levelno == logging.INFO]
    assert len(infos) == 1, rec.texts()


def test_server_executor_applies_to_functions_and_methods() -> None:
    """ "`Server(executor=...)` chooses one executor for every plain callable of that
    server, functions and methods alike"."""
    server = Server(("127.0.0.1", 0), executor="inline")

    @server.register_function()
    def func() -> dict[str, Any]:
        return _where()

    server.register_instance(Obj())
    with sync_client_for(server, RPC, timeout=10) as rpc:
        f, m = rpc.func(), rpc.where()
    assert f["pid"] == m["pid"] == MAIN_PID
    assert f["tname"] == m["tname"] == "pymprpc-test-server"


def test_async_callable_object_runs_on_loop() -> None:
    """ "So does a callable object whose `__call__` is `async def` ..., or a
    `functools.partial` of one"."""
    server = Server(("127.0.0.1", 0))
    server.register_function("acall")(AsyncCallable())
    server.register_function("apartial")(functools.partial(AsyncCallable()))
    with sync_client_for(server, RPC, timeout=10) as rpc:
        for name in ("acall", "apartial"):
            got = getattr(rpc, name)()
            assert got["tname"] == "pymprpc-test-server", (name, got)


def test_sync_wrapper_returning_coroutine_on_thread_is_awaited() -> None:
    """ "A plain function that returns a coroutine ... is run where its executor says,
    then its coroutine is awaited on the loop"."""
    server = Server(("127.0.0.1", 0))

    async def inner(x: int) -> int:
        await asyncio.sleep(0)
        return x * 2

    def wrapper(x: int) -> Any:
        return inner(x)

    server.register_function("w", executor="thread")(wrapper)
    with sync_client_for(server, RPC, timeout=10) as rpc:
        assert rpc.w(21) == 42


@pytest.mark.logs_errors
def test_sync_wrapper_returning_coroutine_on_process_is_404_saying_so() -> None:
    """ "in a worker process that cannot work, and the call fails with 404 saying so
    (declare it `async def`, or register it with `executor="thread"`)"."""
    server = Server(("127.0.0.1", 0), max_workers=1)

    async def inner(x: int) -> int:
        return x

    @server.register_function()
    def w(x: int) -> Any:
        return inner(x)

    with sync_client_for(server, RPC, timeout=10) as rpc, pytest.raises(RPCRuntimeError) as exc:
        rpc.w(1)
    assert exc.value.code == 404
    assert "async def" in str(exc.value) or "thread" in str(exc.value), str(exc.value)


@pytest.mark.logs_errors
@pytest.mark.parametrize("executor", ["inline", "thread", "process"])
def test_sync_generator_fails_404_saying_streams_must_be_async(executor: str) -> None:
    """ "One that returns a (sync) generator fails with 404 saying streams must be async
    generator functions"."""
    server = Server(("127.0.0.1", 0), max_workers=1)

    def gen(n: int) -> Any:  # not a generator function: returns a generator
        return (i for i in range(n))

    server.register_function("gen", executor=executor)(gen)
    with sync_client_for(server, RPC, timeout=10) as rpc:
        with pytest.raises(RPCRuntimeError) as exc:
            rpc.gen(3)
        assert exc.value.code == 404
        assert "async generator" in str(exc.value), str(exc.value)


def test_positional_only_by_keyword_is_402() -> None:
    """ "A positional-only parameter given only by keyword is refused with 402"."""
    server = Server(("127.0.0.1", 0))

    @server.register_function()
    async def po(a: int, /) -> int:
        return a

    with sync_client_for(server, RPC, timeout=10) as rpc, pytest.raises(ParamError):
        rpc.po(a=1)


def test_wraps_decorator_checked_against_decorated_with_own_keyword() -> None:
    """ "A decorator made with `functools.wraps` that passes `*args, **kwargs` on is
    checked against the decorated function's parameters; one that also takes keywords of
    its own (`wrapper(*args, unit="", **kwargs)`) accepts those too"."""

    def with_unit(f: Any) -> Any:
        @functools.wraps(f)
        async def wrapper(*args: Any, unit: str = "", **kwargs: Any) -> Any:
            return f"{await f(*args, **kwargs)}{unit}"

        return wrapper

    server = Server(("127.0.0.1", 0))

    @server.register_function()
    @with_unit
    async def add(a: int, b: int) -> int:
        return a + b

    with sync_client_for(server, RPC, timeout=10) as rpc:
        assert rpc.add(1, 2, unit="m") == "3m"
        with pytest.raises(ParamError):
            rpc.add(1, 2, 3)
        with pytest.raises(ParamError):
            rpc.add(1, c=2)


# -- current_call() in each executor kind ------------------------------------------------


def _ctx_server(**options: Any) -> Server:
    server = Server(("127.0.0.1", 0), auth=[("bob", "pw")], max_workers=1, **options)
    for executor in ("inline", "thread", "process"):
        server.register_function(f"ctx_{executor}", executor=executor)(_ctx)

    @server.register_function()
    async def ctx_coro() -> dict[str, Any]:
        return _ctx()

    @server.register_function()
    async def ctx_stream() -> Any:
        yield _ctx()

    return server


@pytest.mark.parametrize("kind", ["inline", "thread", "process", "coro", "stream"])
def test_current_call_in_every_executor(kind: str) -> None:
    """ "A handler asks who is calling with `current_call()` (coroutines, streams, and
    plain functions on the server's executors, worker processes included ...): call ID,
    method, peer address, authenticated user, ... deadline (`time_remaining()`), and the
    metadata the client sent"."""
    server = _ctx_server()
    with sync_client_for(server, RPC, user="bob", password="pw", timeout=10) as rpc:
        proxy = getattr(rpc, f"ctx_{kind}").with_options(timeout=5, metadata={"rid": "r-1"})
        got = proxy()
        if kind == "stream":
            got = next(iter(got))
    assert got["method"] == f"ctx_{kind}"
    assert got["user"] == "bob"
    assert got["peer"][0] == "127.0.0.1"
    assert got["meta"] == {"rid": "r-1"}
    assert got["left"] is not None and 0 < got["left"] <= 5
    assert isinstance(got["id"], str) and got["id"]


def test_current_call_on_own_thread_pool_executor() -> None:
    """ "(a `ThreadPoolExecutor` runs it in the call's context, so `current_call()`
    works"; and "the server does not shut it down")."""
    pool = concurrent.futures.ThreadPoolExecutor(2)
    try:
        server = Server(("127.0.0.1", 0), auth=[("bob", "pw")])
        server.register_function("ctx", executor=pool)(_ctx)
        with sync_client_for(server, RPC, user="bob", password="pw", timeout=10) as rpc:
            got = rpc.ctx.with_options(metadata={"rid": "x"})()
        assert got["user"] == "bob" and got["meta"] == {"rid": "x"}
        assert pool.submit(lambda: 7).result(5) == 7  # not shut down
    finally:
        pool.shutdown(wait=False)


def test_current_call_outside_call_raises_lookup_error() -> None:
    """current_call() outside a handler raises LookupError (its docstring)."""
    with pytest.raises(LookupError):
        current_call()


def test_process_function_response_metadata_returns() -> None:
    """Response metadata set by a process-pool function reaches the client (the call
    context is sent to the worker, "worker processes included")."""
    server = Server(("127.0.0.1", 0), max_workers=1)

    @server.register_function()
    def tag() -> int:
        current_call().set_response_metadata("from", "worker")
        return 1

    async def main() -> Any:
        async with client_for(server) as rpc:
            return await rpc.tag.call_with_metadata()

    value, meta = run(main())
    assert value == 1 and meta.get("from") == "worker"


def test_eager_current_task_and_timeout_from_first_line() -> None:
    """ "`asyncio.current_task()`, `asyncio.timeout()` and `TaskGroup` work from a
    handler's first line"."""
    server = Server(("127.0.0.1", 0))

    @server.register_function()
    async def first() -> bool:
        task = asyncio.current_task()
        async with asyncio.timeout(5):
            async with asyncio.TaskGroup() as tg:
                t = tg.create_task(asyncio.sleep(0, 3))
        return task is not None and t.result() == 3

    with sync_client_for(server, RPC, timeout=10) as rpc:
        assert rpc.first() is True
