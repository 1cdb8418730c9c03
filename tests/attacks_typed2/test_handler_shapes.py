"""Handlers whose shape does not match the declared method kind: a `stream` handler that
returns a value instead of yielding, a unary method whose handler returns an async
generator or a coroutine. Whatever the handler does, every caller gets either the declared
kind of answer or a 404 `ValidationError` naming the method; never a raw TypeError from
iterating, and never a stream for a unary method."""

from __future__ import annotations

import asyncio
import gc
import warnings
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from attacks_typed.kit import new_server, package, served

from pymprpc.client import RPC, AsyncRPC
from pymprpc.errors import MPRPCError, RPCRuntimeError

IDL = """
service Shape {
    stream items(k: str) -> int;
    async def one(k: str) -> int;
    def plain(k: str) -> int;
    def ok() -> int;
}
"""


async def ints() -> AsyncIterator[int]:
    yield 1
    yield 2


async def twelve() -> int:
    return 12


MAKERS: dict[str, Any] = {
    "int": lambda: 5,
    "list": lambda: [1, 2],
    "none": lambda: None,
    "agen": ints,
    "coro": twelve,
}


@pytest.fixture(scope="module")
def shape(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, str]]:
    with package(IDL, "shape_attack2", tmp_path_factory.mktemp("shape")) as mod:

        async def items(self: Any, k: str) -> Any:  # returns: it does not yield
            return MAKERS[k]()

        async def one(self: Any, k: str) -> Any:
            return MAKERS[k]()

        methods = {
            "items": items,
            "one": one,
            "plain": lambda self, k: MAKERS[k](),
            "ok": lambda self: 41,
        }
        server = new_server()
        mod.register_shape(server, type("S", (mod.ShapeServicer,), methods)())
        with served(server) as running:
            yield mod, running.url


def outcome(call: Any) -> tuple[str, Any]:
    """('ok', value) or ('error', (class name, EXCEPTION, message)); a raw exception fails."""
    try:
        return "ok", call()
    except MPRPCError as exc:
        return "error", (type(exc).__name__, exc.exception, str(exc))


@pytest.mark.parametrize("k", ["list", "none"])
def test_a_stream_handler_returning_a_wrong_value_is_a_validation_error(
    shape: tuple[Any, str], k: str
) -> None:
    mod, url = shape
    with mod.ShapeClient(url) as client, RPC(url) as rpc:
        for caller in (client, rpc):
            got = outcome(lambda c=caller: list(c.items(k)))
            assert got[0] == "error" and got[1][:2] == ("RPCRuntimeError", "ValidationError"), got
            assert got[1][2].startswith("ValidationError: items()"), got
        assert client.ok() == 41


def test_a_stream_handler_returning_an_item_is_refused_not_a_raw_type_error(
    shape: tuple[Any, str],
) -> None:
    mod, url = shape
    seen = []
    with mod.ShapeClient(url) as client, RPC(url) as rpc:
        for caller in (client, rpc):
            try:
                seen.append(outcome(lambda c=caller: list(c.items("int"))))
            except TypeError as exc:
                seen.append(("raw", repr(exc)))

    async def main() -> None:
        async with mod.AsyncShapeClient(url) as client:
            try:
                seen.append(("ok", [x async for x in client.items("int")]))
            except MPRPCError as exc:
                seen.append(("error", (type(exc).__name__, exc.exception, str(exc))))
            except TypeError as exc:
                seen.append(("raw", repr(exc)))

    asyncio.run(asyncio.wait_for(main(), 20))
    assert all(s[0] == "error" and "items()" in s[1][2] for s in seen), seen


def materialized(raw: Any) -> Any:
    """A stream's items (the call is refused, or answered with one, as it happens)."""
    return list(raw) if hasattr(raw, "__next__") else raw


@pytest.mark.parametrize("method", ["one", "plain"])
def test_a_unary_handler_returning_an_async_generator_is_refused(
    shape: tuple[Any, str], method: str
) -> None:
    mod, url = shape
    with mod.ShapeClient(url) as client, RPC(url) as rpc:
        typed = outcome(lambda: getattr(client, method)("agen"))
        untyped = outcome(lambda: materialized(getattr(rpc, method)("agen")))
        assert client.ok() == 41
    for got in (typed, untyped):
        assert got[0] == "error", got
        assert got[1][:2] == ("RPCRuntimeError", "ValidationError"), got
        assert got[1][2].startswith(f"ValidationError: {method}(): expected int"), got


def test_a_coroutine_returned_by_a_plain_handler_is_awaited_or_refused_but_checked(
    shape: tuple[Any, str],
) -> None:
    # (Not `one`: an async def returning a coroutine is refused, and the server leaves that
    # coroutine un-awaited, a RuntimeWarning at an unpredictable moment.)
    mod, url = shape
    method = "plain"

    async def main() -> list[Any]:
        async with mod.AsyncShapeClient(url) as client, AsyncRPC(url) as arpc:
            seen = []
            for caller in (client, arpc):
                try:
                    seen.append(("ok", await getattr(caller, method)("coro")))
                except RPCRuntimeError as exc:
                    seen.append(("error", exc.exception, str(exc)))
            return seen

    seen = asyncio.run(asyncio.wait_for(main(), 20))
    # Either the coroutine's value (12, an int) or a ValidationError naming the method.
    for got in seen:
        assert got == ("ok", 12) or (
            got[1] == "ValidationError" and got[2].startswith(f"ValidationError: {method}()")
        ), seen
    assert seen[0][0] == seen[1][0], seen  # typed and untyped callers are treated alike


def test_a_refused_coroutine_result_is_closed_not_left_unawaited(shape: tuple[Any, str]) -> None:
    mod, url = shape
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with mod.ShapeClient(url) as client:
            with pytest.raises(RPCRuntimeError, match=r"^ValidationError: one\(\)"):
                client.one("coro")
            assert client.ok() == 41
        gc.collect()
    unawaited = [str(w.message) for w in caught if "never awaited" in str(w.message)]
    assert not unawaited, unawaited
