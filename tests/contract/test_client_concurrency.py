"""Many connections at once and many calls on one connection, with each client, plus
cancellation from the async client and interceptors seeing every call in order."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest

from pymprpc import RPC, AsyncRPC, errors
from pymprpc.context import CallContext
from pymprpc.testing import RunningServer

from .wire import new_id

pytestmark = pytest.mark.timeout(90)

METHODS = ["add", "add_coro", "add_thread", "add_process"]


def arun(coro: Any, timeout: float = 60) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


# -- many connections, one call each, at once ------------------------------------------
@pytest.mark.parametrize("method", [*METHODS, "nope", "raise_coro"])
def test_fifty_async_clients_one_call_each(either: RunningServer, method: str) -> None:
    async def main() -> list[Any]:
        clients = [AsyncRPC(either.url) for _ in range(50)]
        await asyncio.gather(*(c.connect() for c in clients))
        try:
            if method == "raise_coro":
                calls = [c.raise_coro("ValueError") for c in clients]
            else:
                calls = [c.call(method, i, 1) for i, c in enumerate(clients)]
            return await asyncio.gather(*calls, return_exceptions=True)
        finally:
            await asyncio.gather(*(c.close() for c in clients))

    results = arun(main())
    for i, value in enumerate(results):
        if method == "nope":
            assert isinstance(value, errors.NotFindError) and value.code == 401
        elif method == "raise_coro":
            assert isinstance(value, errors.RPCRuntimeError) and value.exception == "ValueError"
        else:
            assert value == i + 1


@pytest.mark.parametrize("method", [*METHODS, "nope"])
def test_fifty_sync_clients_one_call_each(either: RunningServer, method: str) -> None:
    n = 50
    clients = [RPC(either.url) for _ in range(n)]
    for c in clients:
        c.connect()
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n

    def one(i: int) -> None:
        barrier.wait(20)
        try:
            results[i] = clients[i].call(method, i, 1)
        except BaseException as exc:  # noqa: BLE001 - checked below
            results[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        for c in clients:
            c.close()
    for i, value in enumerate(results):
        if method == "nope":
            assert isinstance(value, errors.NotFindError)
        else:
            assert value == i + 1


# -- pipelined calls on one connection -------------------------------------------------
@pytest.mark.parametrize("method", METHODS)
def test_async_pipelined_calls(either: RunningServer, method: str) -> None:
    async def main() -> list[Any]:
        async with AsyncRPC(either.url) as rpc:
            calls = [rpc.call(method, i, i) for i in range(200)]
            calls += [rpc.call("nope") for _ in range(5)] + [rpc.add(1) for _ in range(5)]
            return await asyncio.gather(*calls, return_exceptions=True)

    results = arun(main())
    assert results[:200] == [2 * i for i in range(200)]
    assert all(isinstance(r, errors.NotFindError) for r in results[200:205])
    assert all(isinstance(r, errors.ParamError) for r in results[205:])


@pytest.mark.parametrize("method", METHODS)
def test_sync_client_shared_by_threads(either: RunningServer, method: str) -> None:
    results: dict[tuple[int, int], Any] = {}
    with RPC(either.url) as rpc:

        def worker(t: int) -> None:
            for j in range(15):
                try:
                    results[(t, j)] = rpc.call(method, t, j)
                except BaseException as exc:  # noqa: BLE001 - checked below
                    results[(t, j)] = exc

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(12)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(60)
    assert results == {(t, j): t + j for t in range(12) for j in range(15)}


# -- streams interleaved with plain calls on one connection ----------------------------
def test_async_streams_interleaved_with_calls(server: RunningServer) -> None:
    async def main() -> tuple[list[int], list[int], list[Any]]:
        async with AsyncRPC(server.url) as rpc:

            async def read(n: int) -> list[int]:
                return [item async for item in await rpc.count(n)]

            a, b, *plain = await asyncio.gather(
                read(100),
                read(60),
                *(rpc.add_coro(i, 1) for i in range(50)),
                *(rpc.add(i, 2) for i in range(50)),
            )
            return a, b, plain

    a, b, plain = arun(main())
    assert a == list(range(100)) and b == list(range(60))
    assert plain == [i + 1 for i in range(50)] + [i + 2 for i in range(50)]


def test_sync_stream_interleaved_with_calls(server: RunningServer) -> None:
    with RPC(server.url) as rpc:
        items: list[int] = []
        others: list[Any] = []
        for item in rpc.count(40):
            items.append(item)
            others.append(rpc.add(item, 1))  # a plain call between items, same connection
        assert items == list(range(40)) and others == [i + 1 for i in range(40)]


# -- cancellation from the async client ------------------------------------------------
def test_async_task_cancel_cancels_on_the_server(server: RunningServer) -> None:
    key = new_id()

    async def main() -> bool:
        async with AsyncRPC(server.url) as rpc:
            task = asyncio.ensure_future(rpc.block(key))
            assert await rpc.wait_event("started:" + key) is True
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            cancelled = await rpc.wait_event("cancelled:" + key)
            assert await rpc.add(1, 2) == 3
            return bool(cancelled)

    assert arun(main()) is True


def test_async_stream_closed_early_runs_generator_finally(server: RunningServer) -> None:
    key = new_id()

    async def main() -> bool:
        async with AsyncRPC(server.url) as rpc:
            stream = await rpc.gen_block(key)
            assert await stream.__anext__() == 0
            assert await rpc.wait_event("started:" + key) is True
            await stream.aclose()
            return bool(await rpc.wait_event("finally:" + key))

    assert arun(main()) is True


def test_sync_stream_closed_early_runs_generator_finally(server: RunningServer) -> None:
    key = new_id()
    with RPC(server.url) as rpc:
        stream = rpc.gen_block(key)
        assert next(stream) == 0
        assert rpc.wait_event("started:" + key) is True
        stream.close()
        assert rpc.wait_event("finally:" + key) is True
        assert rpc.add(1, 2) == 3


def test_client_close_mid_call_fails_it_and_cancels_on_server(
    serve: Callable[..., RunningServer],
) -> None:
    """A plain close looks like a half-close (EOF): with half_close_timeout=0 the server
    cancels the connection's calls at once."""
    server = serve(half_close_timeout=0)
    key = new_id()
    with RPC(server.url) as observer:
        rpc = RPC(server.url).connect()
        outcome: list[BaseException] = []

        def call() -> None:
            try:
                rpc.block(key)
            except BaseException as exc:  # noqa: BLE001 - checked below
                outcome.append(exc)

        t = threading.Thread(target=call)
        t.start()
        assert observer.wait_event("started:" + key) is True
        rpc.close()
        t.join(20)
        assert len(outcome) == 1 and isinstance(outcome[0], errors.ConnectionLostError)
        assert observer.wait_event("cancelled:" + key) is True


# -- interceptors ----------------------------------------------------------------------
def recorder(name: str, log: list[Any]) -> Callable[..., Any]:
    async def interceptor(ctx: CallContext, call_next: Any) -> Any:
        log.append((name, "before", ctx.method, ctx.id, ctx.streaming))
        try:
            value = await call_next(ctx)
        except BaseException as exc:
            log.append((name, "raised", ctx.method, type(exc).__name__))
            raise
        log.append((name, "after", ctx.method))
        return value

    return interceptor


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_server_interceptors_see_every_call_in_order(
    serve: Callable[..., RunningServer], kind: str
) -> None:
    log: list[Any] = []
    running = serve(interceptors=[recorder("outer", log), recorder("inner", log)])

    def calls(rpc: Any) -> list[Any]:
        return [
            ("add", (1, 2)),
            ("add_thread", (1, 2)),
            ("add_process", (1, 2)),
            ("add", (1,)),  # 402: binding happens inside the interceptors
            ("raise_coro", ("ValueError",)),
            ("nope", ()),  # 401: refused before them
        ]

    outcomes: list[Any] = []
    if kind == "sync":
        with RPC(running.url) as rpc:
            for method, args in calls(rpc):
                try:
                    outcomes.append(rpc.call(method, *args))
                except errors.MPRPCError as exc:
                    outcomes.append(exc.code)
    else:

        async def main() -> None:
            async with AsyncRPC(running.url) as rpc:
                for method, args in calls(rpc):
                    try:
                        outcomes.append(await rpc.call(method, *args))
                    except errors.MPRPCError as exc:
                        outcomes.append(exc.code)

        arun(main())
    assert outcomes == [3, 3, 3, 402, 404, 401]
    names = [entry[:3] for entry in log]
    expected: list[Any] = []
    for method, end in [
        ("add", "after"),
        ("add_thread", "after"),
        ("add_process", "after"),
        ("add", "raised"),
        ("raise_coro", "raised"),
    ]:
        expected += [("outer", "before", method), ("inner", "before", method)]
        expected += [("inner", end, method), ("outer", end, method)]
    assert names == expected
    ids = [entry[3] for entry in log if entry[1] == "before"]
    assert all(isinstance(i, str) and i for i in ids)
    raised = [entry[3] for entry in log if entry[1] == "raised"]
    assert raised == ["ParamError", "ParamError", "ValueError", "ValueError"]


def test_server_interceptor_sees_streams_and_can_refuse(
    serve: Callable[..., RunningServer],
) -> None:
    log: list[Any] = []

    async def refuse(ctx: CallContext, call_next: Any) -> Any:
        if ctx.method == "add_coro":
            raise errors.RestrictAccessError("not for you")
        return await call_next(ctx)

    running = serve(interceptors=[recorder("rec", log), refuse])
    with RPC(running.url) as rpc:
        assert list(rpc.count(2)) == [0, 1]
        with pytest.raises(errors.RestrictAccessError) as info:
            rpc.add_coro(1, 2)
        assert info.value.code == 403 and str(info.value) == "not for you"
    assert log[0][:3] == ("rec", "before", "count") and log[0][4] is True
    assert log[-1][:4] == ("rec", "raised", "add_coro", "RestrictAccessError")


def test_client_interceptors_order(server: RunningServer) -> None:
    log: list[Any] = []

    def sync_rec(name: str) -> Callable[..., Any]:
        def interceptor(ctx: Any, call_next: Any) -> Any:
            log.append((name, "before"))
            value = call_next(ctx.replace(metadata={**ctx.metadata, name: "1"}))
            log.append((name, "after"))
            return value

        return interceptor

    def async_rec(name: str) -> Callable[..., Any]:
        async def interceptor(ctx: Any, call_next: Any) -> Any:
            log.append((name, "before"))
            value = await call_next(ctx.replace(metadata={**ctx.metadata, name: "1"}))
            log.append((name, "after"))
            return value

        return interceptor

    with RPC(server.url, interceptors=[sync_rec("a"), sync_rec("b")]) as rpc:
        assert rpc.ctx_coro()["metadata"] == {"a": "1", "b": "1"}
    assert log == [("a", "before"), ("b", "before"), ("b", "after"), ("a", "after")]
    log.clear()

    async def main() -> Any:
        async with AsyncRPC(server.url, interceptors=[async_rec("a"), async_rec("b")]) as rpc:
            return await rpc.ctx_coro()

    assert arun(main())["metadata"] == {"a": "1", "b": "1"}
    assert log == [("a", "before"), ("b", "before"), ("b", "after"), ("a", "after")]


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_introspection(serve: Callable[..., RunningServer], kind: str) -> None:
    """The usage page's system.* calls, on a server this test alone uses."""
    running = serve()
    calls = [
        ("system.lenConnections", ()),
        ("system.lenUndoneTasks", ()),
        ("system.methodHelp", ("add",)),
        ("system.methodSignature", ("add",)),
        ("system.listMethods", ()),
    ]
    if kind == "sync":
        with RPC(running.url) as rpc:
            got = [rpc.call(m, *a) for m, a in calls]
    else:

        async def main() -> list[Any]:
            async with AsyncRPC(running.url) as rpc:
                return [await rpc.call(m, *a) for m, a in calls]

        got = arun(main())
    assert got[:4] == [1, 1, "Add two values.", "add(a: Any, b: Any) -> Any"]
    methods = got[4]
    assert methods == sorted(methods)
    assert {"add", "count", "system.getresult", "system.health", "system.listMethods"} <= set(
        methods
    )


def test_closed_clients_stay_closed_until_connect(server: RunningServer) -> None:
    rpc = RPC(server.url).connect()
    assert rpc.add(1, 2) == 3
    rpc.close()
    with pytest.raises(errors.ConnectionLostError):
        rpc.add(1, 2)
    rpc.connect()
    try:
        assert rpc.add(1, 2) == 3
    finally:
        rpc.close()

    async def main() -> None:
        arpc = AsyncRPC(server.url)
        await arpc.connect()
        assert await arpc.add(1, 2) == 3
        await arpc.close()
        with pytest.raises(errors.ConnectionLostError):
            await arpc.add(1, 2)
        await arpc.reconnect()
        try:
            assert await arpc.add(1, 2) == 3
        finally:
            await arpc.close()

    arun(main())


def test_server_closing_mid_call_fails_the_call(serve: Callable[..., RunningServer]) -> None:
    """A call still running when the grace period ends is answered 503 carrying its ID on a
    connection without `cancel` (407 with it), then the connection closes."""
    running = serve(grace_period=0)
    key = new_id()
    with RPC(running.url, features=()) as rpc:
        outcome: list[BaseException] = []

        def call() -> None:
            try:
                rpc.block(key)
            except BaseException as exc:  # noqa: BLE001 - checked below
                outcome.append(exc)

        t = threading.Thread(target=call)
        t.start()
        with RPC(running.url) as observer:
            assert observer.wait_event("started:" + key) is True
        running.stop()
        t.join(20)
        assert len(outcome) == 1 and type(outcome[0]) is errors.RpcUnavailableException
        assert outcome[0].code == 503
