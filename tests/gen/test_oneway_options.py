"""A generated client view's options reach its oneway calls too: metadata set with
`with_options(metadata=...)` is sent with a oneway call (sync and async, with and
without a client interceptor, which sees it), as with every other call."""

from __future__ import annotations

import asyncio
import queue
from collections.abc import Iterator
from typing import Any

import pytest
from attacks_typed.kit import new_server, package, served

from pymprpc.client.interceptors import ClientCallContext
from pymprpc.context import current_call

IDL = """
service Tell {
    oneway def tell(n: int);
    def ok() -> int;
}
"""
SEEN: queue.Queue[tuple[int, dict[str, str]]] = queue.Queue()


class _Tell:
    def tell(self, n: int) -> None:
        SEEN.put((n, dict(current_call().metadata)))

    def ok(self) -> int:
        return 41


@pytest.fixture(scope="module")
def tell(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, str]]:
    with package(IDL, "tell_oneway", tmp_path_factory.mktemp("tell")) as mod:
        server = new_server(executor="inline")
        mod.register_tell(server, type("T", (_Tell, mod.TellServicer), {})())
        with served(server) as running:
            yield mod, running.url


def _interceptor(seen: list[tuple[str, dict[str, str]]]) -> Any:
    def intercept(ctx: ClientCallContext, call_next: Any) -> Any:
        seen.append((ctx.kind, dict(ctx.metadata)))
        return call_next(ctx)

    return intercept


@pytest.mark.timeout(60)
def test_sync_oneway_sends_the_views_metadata(tell: tuple[Any, str]) -> None:
    mod, url = tell
    seen: list[tuple[str, dict[str, str]]] = []
    with (
        mod.TellClient(url) as client,
        mod.TellClient(url, interceptors=[_interceptor(seen)]) as tapped,
    ):
        client.with_options(metadata={"tenant": "a"}).tell(1)
        assert SEEN.get(timeout=10) == (1, {"tenant": "a"})
        client.tell(2)
        assert SEEN.get(timeout=10) == (2, {})
        tapped.with_options(metadata={"tenant": "b"}).tell(3)
        assert SEEN.get(timeout=10) == (3, {"tenant": "b"})
        assert seen == [("notify", {"tenant": "b"})]
        assert client.ok() == 41


@pytest.mark.timeout(60)
def test_async_oneway_sends_the_views_metadata(tell: tuple[Any, str]) -> None:
    mod, url = tell

    async def main() -> None:
        async with mod.AsyncTellClient(url) as client:
            await client.with_options(metadata={"tenant": "c"}).tell(4)
            assert await client.ok() == 41  # answered after the oneway call ran
        assert SEEN.get(timeout=10) == (4, {"tenant": "c"})

    asyncio.run(asyncio.wait_for(main(), 30))
