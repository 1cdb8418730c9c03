"""The same calls over TLS, with both clients (the blocking one runs TLS over memory
buffers, shared by threads)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import tls_contexts
from pymprpc import RPC, AsyncRPC, errors
from pymprpc.testing import RunningServer

from . import app

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, Any]]:
    server_ctx, client_ctx = tls_contexts(Path(tmp_path_factory.mktemp("tls")))
    running = app.serve(ssl=server_ctx)
    yield running, client_ctx
    running.stop()


def test_blocking_client_over_tls(tls: tuple[RunningServer, Any]) -> None:
    running, ctx = tls
    with RPC(running.url, ssl=ctx) as rpc:
        assert rpc.add(1, 2) == 3 and list(rpc.count(3)) == [0, 1, 2]
        with pytest.raises(errors.NotFindError):
            rpc.nope()
        results: dict[int, Any] = {}

        def worker(t: int) -> None:
            results[t] = [rpc.add_coro(t, j) for j in range(10)]

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(60)
        assert results == {t: [t + j for j in range(10)] for t in range(8)}


def test_async_client_over_tls(tls: tuple[RunningServer, Any]) -> None:
    running, ctx = tls

    async def main() -> list[Any]:
        async with AsyncRPC(running.url, ssl=ctx) as rpc:
            items = [i async for i in await rpc.count(5)]
            sums = await asyncio.gather(*(rpc.add(i, 1) for i in range(100)))
            return [items, sums]

    items, sums = asyncio.run(asyncio.wait_for(main(), 60))
    assert items == [0, 1, 2, 3, 4] and sums == [i + 1 for i in range(100)]
