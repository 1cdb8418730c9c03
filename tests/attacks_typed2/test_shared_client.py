"""One generated client shared by several threads (blocking) or tasks (asyncio): wrong
arguments refused locally, wrong results refused by the server and good calls, interleaved,
each get their own outcome, and the client stays usable."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from attacks_typed.kit import new_server, package, served

from pymprpc.errors import MPRPCError, ParamError, RPCRuntimeError

IDL = """
enum Color { RED = 1; GREEN = 2; }
struct Pt { x: float; y: int = 0; }
service Shared {
    def scale(p: Pt, k: int) -> Pt;
    def color(n: int) -> Color;
    stream pts(n: int) -> Pt;
}
"""


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, str]]:
    with package(IDL, "shared_attack2", tmp_path_factory.mktemp("shared")) as mod:

        async def pts(self: Any, n: int) -> AsyncIterator[Any]:
            for i in range(abs(n)):
                yield mod.Pt(x=i, y=i)
            if n < 0:
                yield {"x": 1.0}  # a map is not a Pt: the stream fails here

        methods = {
            "scale": lambda self, p, k: mod.Pt(x=p.x * k, y=p.y * k),
            "color": lambda self, n: n,  # only 1 and 2 are Colors
            "pts": pts,
        }
        server = new_server()
        mod.register_shared(server, type("S", (mod.SharedServicer,), methods)())
        with served(server) as running:
            yield mod, running.url


def one_call(mod: Any, client: Any, i: int) -> tuple[str, Any]:
    """Call number i: which kind it is follows from i, so the expected outcome is known."""
    kind = i % 5
    try:
        if kind == 0:
            return "ok", client.scale(mod.Pt(x=i, y=1), 2)
        if kind == 1:
            return "ok", client.scale(mod.Pt(x=i, y=1.5), 2)  # wrong argument
        if kind == 2:
            return "ok", client.color(1 + i % 4)  # 3 and 4 are wrong results
        if kind == 3:
            return "ok", list(client.pts(3 if i % 2 else -3))
        return "ok", client.scale(mod.Pt(x=1), True)  # a bool is not an int
    except ParamError as exc:
        return "param", str(exc)
    except RPCRuntimeError as exc:
        return str(exc.exception), str(exc)


def expected(mod: Any, i: int) -> tuple[str, Any]:
    kind = i % 5
    if kind == 0:
        return "ok", mod.Pt(x=float(2 * i), y=2)
    if kind == 1:
        return "param", "scale(): p.y: expected int, got float"
    if kind == 2:
        n = 1 + i % 4
        if n <= 2:
            return "ok", mod.Color(n)
        return (
            "ValidationError",
            f"ValidationError: color(): {n} is not a Color (one of RED=1, GREEN=2)",
        )
    if kind == 3:
        if i % 2:
            return "ok", [mod.Pt(x=float(j), y=j) for j in range(3)]
        return "ValidationError", "ValidationError: pts()[3]: expected Pt, got map"
    return "param", "scale(): k: expected int, got bool"


def test_threads_sharing_one_blocking_client(shared: tuple[Any, str]) -> None:
    mod, url = shared
    threads, per_thread = 4, 40
    results: dict[int, tuple[str, Any]] = {}
    lock = threading.Lock()
    start = threading.Barrier(threads)
    with mod.SharedClient(url) as client:

        def work(t: int) -> None:
            start.wait(timeout=10)
            for j in range(per_thread):
                i = t * per_thread + j
                got = one_call(mod, client, i)
                with lock:
                    results[i] = got

        pool = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
        for th in pool:
            th.start()
        for th in pool:
            th.join(timeout=30)
        assert not any(th.is_alive() for th in pool)
        assert client.scale(mod.Pt(x=1), 1) == mod.Pt(x=1.0)
    wrong = {i: (got, expected(mod, i)) for i, got in results.items() if got != expected(mod, i)}
    assert len(results) == threads * per_thread and not wrong, wrong


def test_tasks_sharing_one_async_client(shared: tuple[Any, str]) -> None:
    mod, url = shared

    async def one(client: Any, i: int) -> tuple[str, Any]:
        kind = i % 5
        try:
            if kind == 0:
                return "ok", await client.scale(mod.Pt(x=i, y=1), 2)
            if kind == 1:
                return "ok", await client.scale(mod.Pt(x=i, y=1.5), 2)
            if kind == 2:
                return "ok", await client.color(1 + i % 4)
            if kind == 3:
                return "ok", [p async for p in client.pts(3 if i % 2 else -3)]
            return "ok", await client.scale(mod.Pt(x=1), True)
        except ParamError as exc:
            return "param", str(exc)
        except RPCRuntimeError as exc:
            return str(exc.exception), str(exc)
        except MPRPCError as exc:  # anything else is a failure of the test, shown as such
            return type(exc).__name__, str(exc)

    async def main() -> list[tuple[str, Any]]:
        async with mod.AsyncSharedClient(url) as client:
            got = await asyncio.gather(*(one(client, i) for i in range(200)))
            assert await client.scale(mod.Pt(x=1), 1) == mod.Pt(x=1.0)
            return list(got)

    got = asyncio.run(asyncio.wait_for(main(), 30))
    wrong = {i: (g, expected(mod, i)) for i, g in enumerate(got) if g != expected(mod, i)}
    assert not wrong, wrong
