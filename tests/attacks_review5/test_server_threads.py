"""Several servers, each in its own thread on its own loop (asyncio and uvloop), at once
and under load, with thread switches forced often: each thread's step catcher serves
only its loop, every call keeps its own context, and nothing is left in a catcher."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any

import pytest

from pymprpc import RPC, AsyncRPC

from .kit import LoopServer, Probe, run_on

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def fast_switching() -> Iterator[None]:
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(old)


def in_loop(srv: LoopServer, func: Any) -> Any:
    assert srv.loop is not None
    done: Future[Any] = Future()

    def run() -> None:
        try:
            done.set_result(func())
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            done.set_exception(exc)

    srv.loop.call_soon_threadsafe(run)
    return done.result(10)


def catcher_state() -> Any:
    from pymprpc.server import eager

    c = eager._catchers.catcher
    loop = asyncio.get_running_loop()
    return (c.callback, c.context, list(c.more), "call_soon" in vars(loop), id(c))


def test_servers_in_threads_under_load(fast_switching: None) -> None:
    kinds = ["asyncio", "uvloop", "asyncio", "uvloop"]
    probes = [Probe() for _ in kinds]
    servers = [LoopServer(p, k) for p, k in zip(probes, kinds, strict=True)]
    for s in servers:
        s.__enter__()
    errors: list[BaseException] = []
    try:

        def client(n: int) -> None:
            async def main() -> None:
                rpcs = [AsyncRPC(s.url, timeout=20) for s in servers]
                for r in rpcs:
                    await r.connect()
                try:
                    for rnd in range(8):
                        calls = []
                        for k, r in enumerate(rpcs):
                            calls += [r.setvar((n, k, rnd, i)) for i in range(15)]
                            calls += [r.whoami() for _ in range(5)]
                            calls.append(r.spawn((n, k, rnd)))
                        got = await asyncio.gather(*calls)
                        for g in got:
                            if isinstance(g, list) and len(g) == 6:
                                assert g[2] and g[3] == "unset" and g[4] and g[5], g
                            elif isinstance(g, list):
                                assert g[0][0] == n, g
                            else:
                                assert g == "unset", g
                finally:
                    for r in rpcs:
                        await r.close()

            try:
                run_on("uvloop" if n % 2 else "asyncio", main, timeout=40)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(50)
        assert not errors, errors
        states = [in_loop(s, catcher_state) for s in servers]
        for st in states:
            assert st[:4] == (None, None, [], False), st
        assert len({st[4] for st in states}) == len(servers)  # one catcher per thread
    finally:
        for s in servers:
            s.__exit__(None, None, None)


def test_blocking_clients_against_thread_servers(fast_switching: None) -> None:
    kinds = ["asyncio", "uvloop"]
    servers = [LoopServer(Probe(), k) for k in kinds]
    for s in servers:
        s.__enter__()
    errors: list[BaseException] = []
    try:

        def client(n: int) -> None:
            try:
                with RPC(servers[n % 2].url, timeout=10) as rpc:
                    for i in range(150):
                        assert rpc.setvar((n, i)) == "unset"
                        assert rpc.add(n, i) == n + i
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=client, args=(n,)) for n in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(50)
        assert not errors, errors
    finally:
        for s in servers:
            s.__exit__(None, None, None)


def test_a_server_thread_keeps_no_call_alive() -> None:
    probe = Probe()
    with LoopServer(probe, "uvloop") as srv:

        async def main() -> None:
            async with AsyncRPC(srv.url) as rpc:
                for i in range(10):
                    await rpc.hold(i)
                    await rpc.hold_and_suspend(i)

        run_on("asyncio", main)

        def check() -> Any:
            import gc

            gc.collect()
            return [r() is None for r in probe.refs], catcher_state()[:4]

        dead, state = in_loop(srv, check)
        assert all(dead) and len(dead) == 20
        assert state == (None, None, [], False)


def test_a_server_thread_with_a_task_factory_set_from_a_handler() -> None:
    probe = Probe()
    with LoopServer(probe, "asyncio") as srv:
        made: list[Any] = []

        def factory(lp: Any, coro: Any, **kw: Any) -> Any:
            t = asyncio.Task(coro, loop=lp, **kw)
            made.append(t)
            return t

        async def main() -> None:
            async with AsyncRPC(srv.url) as rpc:
                assert await rpc.setvar(0) == "unset"
                in_loop(srv, lambda: srv.loop.set_task_factory(factory))  # type: ignore[union-attr]
                assert await asyncio.gather(*(rpc.setvar(i) for i in range(10))) == ["unset"] * 10
                in_loop(srv, lambda: srv.loop.set_task_factory(None))  # type: ignore[union-attr]
                assert await rpc.setvar(1) == "unset"

        run_on("asyncio", main)
        assert len(made) >= 10
