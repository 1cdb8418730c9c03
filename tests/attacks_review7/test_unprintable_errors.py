"""A handler's exception whose `str()` itself fails (a custom `__str__` reading an
attribute that was never set) must still fail its call with 404, as the process pool
does. On the thread pool, inline and on the event loop the call was never answered: the
client waited until its deadline (forever without one) and asyncio logged "Task
exception was never retrieved" for the server's call task (fixed: errors.exception_text).
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from pymprpc import RPC, Server
from pymprpc.errors import RPCRuntimeError
from pymprpc.testing import sync_client_for

pytestmark = pytest.mark.timeout(30)


class OutOfStock(Exception):
    """A user's exception with a `__str__` that fails (`detail` is never set)."""

    def __init__(self, sku: str) -> None:
        super().__init__(sku)
        self.sku = sku

    def __str__(self) -> str:
        return f"{self.sku}: {self.detail}"  # type: ignore[attr-defined]


def reserve(sku: str) -> int:
    raise OutOfStock(sku)


async def reserve_async(sku: str) -> int:
    raise OutOfStock(sku)


async def watch(sku: str) -> AsyncIterator[int]:
    yield 1
    raise OutOfStock(sku)


def ping() -> str:
    return "pong"


@pytest.fixture
def client() -> Iterator[RPC]:
    server = Server(("127.0.0.1", 0), grace_period=1)
    server.register_function("reserve_inline", executor="inline")(reserve)
    server.register_function("reserve_thread", executor="thread")(reserve)
    server.register_function("reserve_process", executor="process")(reserve)
    server.register_function("reserve_async")(reserve_async)
    server.register_function("watch")(watch)
    server.register_function(executor="inline")(ping)
    with sync_client_for(server, timeout=5) as rpc:
        yield rpc
    gc.collect()  # the leaked call task's "never retrieved" log, inside this test


def check_answered(rpc: RPC, method: str) -> None:
    with pytest.raises(RPCRuntimeError) as info:
        result: Any = rpc.method(method)("sku-1")
        if method == "watch":
            list(result)
    assert info.value.exception == "OutOfStock"
    assert rpc.ping() == "pong"


@pytest.mark.logs_errors
@pytest.mark.parametrize("method", ["reserve_inline", "reserve_thread", "reserve_async", "watch"])
def test_exception_with_failing_str_still_fails_the_call(client: RPC, method: str) -> None:
    check_answered(client, method)


@pytest.mark.logs_errors
def test_exception_with_failing_str_on_the_process_pool(client: RPC) -> None:
    """The process pool already answers (the same contract the others break)."""
    check_answered(client, "reserve_process")
