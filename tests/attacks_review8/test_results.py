"""Hostile results: whatever a handler returns, its call gets the value or an error
reply (405 for what cannot be encoded; 404 for what cannot leave a worker process), and
the connection goes on serving other calls."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from attacks_review8.kit import EXECUTORS, assert_still_serving, build, invoke, serving
from pymprpc import RPC
from pymprpc.errors import ResultLimitError, RPCRuntimeError
from pymprpc.testing import client_for

pytestmark = pytest.mark.timeout(30)

# Each answered (a value or 404/405) on every executor, and the connection goes on.
HELD_UP = [
    "raising_eq",  # every dunder raises: not encodable
    "raising_eq_in_list",
    "raising_int",  # int subclass whose __index__/__int__/__eq__/__repr__ raise
    "raising_int_and_set",
    "raising_str",
    "raising_bytes",
    "non_str_keys",
    "recursive_list",
    "recursive_dict",
    "nested_1100",
    "nested_100000",
    "set",
    "object",
    "sync_generator",
    "async_iterator",
    "huge_under",
    "huge_over",
    "huge_str_over",
    "huge_list_over",
]


def server() -> Any:
    return build(max_message_size=1_000_000)


@pytest.mark.logs_errors
@pytest.mark.parametrize("executor", EXECUTORS)
def test_hostile_results_are_answered(executor: str) -> None:
    with serving(server()) as running, RPC(running.url, timeout=10) as rpc:
        extra = {"inline": ["coroutine", "nested_1000"], "thread": ["coroutine", "nested_1000"]}
        extra["process"] = []  # a coroutine cannot run there; nested_1000: see below
        for kind in HELD_UP + extra.get(executor, ["nested_1000"]):
            try:
                value = invoke(rpc, f"result_{executor}", kind)
                if kind == "async_iterator":
                    list(value)  # a plain function's async iterator is a stream
            except RPCRuntimeError as exc:
                assert exc.code in (404, 405), (kind, exc)
            except ResultLimitError as exc:
                assert exc.code == 405, (kind, exc)
            assert rpc.ping() == "pong", kind
        assert_still_serving(running, rpc)


def _lying(executor: str, kind: str) -> Any:
    # Before the encoder checked what it packed, a list/dict subclass whose __iter__ or
    # items() disagreed with its length went out as a corrupt MessagePack frame: the
    # client closed the connection, failing every other call on it. (On the process
    # pool a list subclass is pickled item by item, so it arrived honest.)
    return pytest.param(executor, kind)


@pytest.mark.parametrize(
    ("executor", "kind"),
    [
        _lying(executor, kind)
        for kind in ("short_list", "long_list", "lying_dict", "short_list_nested")
        for executor in EXECUTORS
    ],
)
def test_lying_container_fails_only_its_call(executor: str, kind: str) -> None:
    with serving(server()) as running, RPC(running.url, timeout=5) as rpc:
        try:
            invoke(rpc, f"result_{executor}", kind)
        except (RPCRuntimeError, ResultLimitError) as exc:
            assert exc.code in (404, 405)
        assert_still_serving(running, rpc)


@pytest.mark.logs_errors
def test_lying_container_fails_only_its_call_on_the_async_client_too() -> None:
    async def main() -> None:
        async with client_for(server(), timeout=5) as rpc:
            other = asyncio.ensure_future(rpc.method("raise_async")("keyboard_interrupt"))
            try:
                with contextlib.suppress(ResultLimitError):
                    await rpc.method("result_async")("short_list")
                with pytest.raises(RPCRuntimeError):
                    await other  # another call on the same connection: its own answer
                assert await rpc.ping() == "pong"
            finally:
                await asyncio.gather(other, return_exceptions=True)

    asyncio.run(main())


def _raising(executor: str, kind: str) -> Any:
    # Before errors were caught while encoding (protocol/codec.py), inline, thread and
    # coroutine calls were left unanswered, and the process pool's str-subclass case.
    return pytest.param(executor, kind)


@pytest.mark.logs_errors
@pytest.mark.parametrize(
    ("executor", "kind"),
    [
        _raising(executor, kind)
        for kind in ("raising_iter_list", "raising_items_dict", "raising_str_and_set")
        for executor in EXECUTORS
    ],
)
def test_result_that_raises_while_encoded_is_answered(executor: str, kind: str) -> None:
    with serving(server()) as running, RPC(running.url, timeout=2) as rpc:
        with pytest.raises((RPCRuntimeError, ResultLimitError)) as info:
            invoke(rpc, f"result_{executor}", kind)
        assert info.value.code in (404, 405)
        assert_still_serving(running, rpc)


def test_deep_result_crosses_the_process_pool() -> None:
    # Before 3.13 the worker pickled it under the default recursion limit (404
    # RecursionError); every other executor delivered it.
    with serving(server()) as running, RPC(running.url, timeout=5) as rpc:
        value = invoke(rpc, "result_process", "nested_1000")
        depth = 0
        while value:
            value, depth = value[0], depth + 1
        assert depth == 1000
