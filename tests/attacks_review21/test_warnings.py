"""Review 21: README: "Deprecation warnings name the line that made the call". The
README's own async example runs calls with `asyncio.gather(...)`, and says
`asyncio.create_task(client.add(1, 2))` works as usual. Real servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from pymprpc import RPC, AsyncRPC, Server
from pymprpc.testing import client_for, sync_client_for

pytestmark = pytest.mark.timeout(20)


def deprecated_server() -> Server:
    server = Server(("127.0.0.1", 0), grace_period=0.5)

    async def old(a: int) -> int:
        return a

    async def oldgen(n: int) -> AsyncIterator[int]:
        for i in range(n):
            yield i

    server.register_function("old", deprecated=True)(old)
    server.register_function("oldgen", deprecated=True)(oldgen)
    return server


def warned_in(run: Callable[[AsyncRPC], Awaitable[Any]]) -> list[str]:
    """The file names the deprecation warnings point at."""

    async def main() -> list[str]:
        async with client_for(deprecated_server(), AsyncRPC) as rpc:
            with warnings.catch_warnings(record=True) as seen:
                warnings.simplefilter("always")
                await run(rpc)
        return [w.filename for w in seen]

    result: list[str] = asyncio.run(main())
    return result


def test_awaited_call_warns_at_the_callers_line() -> None:
    async def run(rpc: AsyncRPC) -> None:
        await rpc.old(1)

    assert warned_in(run) == [__file__]


def test_sync_calls_warn_at_the_callers_line() -> None:
    with (
        sync_client_for(deprecated_server(), RPC) as rpc,
        warnings.catch_warnings(record=True) as seen,
    ):
        warnings.simplefilter("always")
        rpc.old(1)
        rpc.old.with_options(timeout=5)(1)
        list(rpc.oldgen(2))
    assert [w.filename for w in seen] == [__file__] * 3


@pytest.mark.parametrize("how", ["gather", "create_task"])
@pytest.mark.xfail(
    strict=True,
    reason="a deprecated call run by asyncio.gather/create_task warns at "
    "asyncio/events.py, not at the user's line (README: documented; no user frame is on "
    "the stack when its reply comes)",
)
def test_call_run_in_a_task_warns_at_the_users_line(how: str) -> None:
    async def run(rpc: AsyncRPC) -> None:
        if how == "gather":
            await asyncio.gather(rpc.old(1), rpc.old(2))
        else:
            await asyncio.create_task(rpc.old(1))

    files = warned_in(run)
    assert files
    assert all(f == __file__ for f in files), files
