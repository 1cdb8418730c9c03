"""pymprpc's own clients (AsyncRPC on asyncio and uvloop, the blocking RPC) lay calls
out as the server's fast lane reads them: every outcome of a pool call, and what a
worker's `current_call()` sees, must be the same with and without a pass-through
interceptor on the server."""

from __future__ import annotations

import asyncio
import re
import threading
from typing import Any

import pytest
from attacks_server.fastlane_kit import run_on

from pymprpc.client import RPC, AsyncRPC
from pymprpc.errors import MPRPCError

from .pool_kit import serving

pytestmark = pytest.mark.timeout(120)

_PID = re.compile(r"pid \d+")

CALLS: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
    ("add", (2, 3), {}),
    ("add", (2,), {}),
    ("add", (), {}),
    ("add", (1, 2, 3), {}),
    ("add", ("x", 1), {}),
    ("add", (2,), {"b": 9}),
    ("kwonly", (1,), {}),
    ("deco_logged", (2,), {}),
    ("deco_fixed", (1, 2), {}),
    ("raises", ("exit",), {}),
    ("raises", ("cancelled",), {}),
    ("raises", ("timeout",), {}),
    ("returns_coro", (1,), {}),
    ("returns_gen", (1,), {}),
    ("returns_lock", (), {}),
    ("returns_noload", (), {}),
    ("returns_set", (), {}),
    ("typed_add", (1, 2), {}),
    ("typed_add", ("1", 2), {}),
    ("typed_wrong", (1,), {}),
    ("p_where", (), {}),
    ("cobj_p", (1,), {}),
    ("die", (), {}),
    ("add", (40, 2), {}),
    ("no_such", (), {}),
]


def _ctx_view(value: Any) -> Any:
    if isinstance(value, dict) and "id" in value:
        value = dict(value)
        value["id"] = "<uuid>" if len(str(value["id"])) == 36 else value["id"]
    return value


def _settle(exc: MPRPCError) -> Any:
    return (type(exc).__name__, exc.code, _PID.sub("pid N", str(exc).split("\n")[0]))


async def _async_outcomes(port: int) -> list[Any]:
    out: list[Any] = []
    async with AsyncRPC(f"tcp://127.0.0.1:{port}") as rpc:
        for name, args, kwargs in CALLS:
            try:
                out.append(("ok", _ctx_view(await rpc.call(name, *args, **kwargs))))
            except MPRPCError as exc:
                out.append(_settle(exc))
        value, meta = await rpc.method("set_meta").call_with_metadata("m")
        out.append(("meta", value, dict(meta)))
        out.append(("ctx", _ctx_view(await rpc.ctx_fields())))
        many = await asyncio.gather(*(rpc.add(i, i) for i in range(50)))
        out.append(("many", many))
    return out


def _sync_outcomes(port: int) -> list[Any]:
    out: list[Any] = []
    with RPC(f"tcp://127.0.0.1:{port}") as rpc:
        for name, args, kwargs in CALLS:
            try:
                out.append(("ok", _ctx_view(rpc.call(name, *args, **kwargs))))
            except MPRPCError as exc:
                out.append(_settle(exc))
        value, meta = rpc.method("set_meta").call_with_metadata("m")
        out.append(("meta", value, dict(meta)))
        out.append(("ctx", _ctx_view(rpc.ctx_fields())))
    return out


@pytest.fixture(params=["asyncio", "uvloop"])
def loop(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_async_client_outcomes_alike(loop: str) -> None:
    async def scenario(general: bool) -> Any:
        async with serving(general) as (_s, port):
            return await _async_outcomes(port)

    async def main() -> tuple[Any, Any]:
        return await scenario(False), await scenario(True)

    fast, general = run_on(loop, main, timeout=100)
    assert fast == general
    assert fast[0] == ("ok", 5)
    assert fast[-3] == ("meta", "m", {"k": "m"})
    assert fast[-2][1]["id"] == "<uuid>" and fast[-2][1]["method"] == "ctx_fields"
    assert fast[-1] == ("many", [2 * i for i in range(50)])


def test_blocking_client_outcomes_alike(loop: str) -> None:
    """The blocking client, against a server on `loop` in this thread's loop."""

    async def scenario(general: bool) -> Any:
        async with serving(general) as (_s, port):
            box: list[Any] = []
            t = threading.Thread(target=lambda: box.append(_sync_outcomes(port)))
            t.start()
            while t.is_alive():
                await asyncio.sleep(0.01)
            t.join()
            return box[0]

    async def main() -> tuple[Any, Any]:
        return await scenario(False), await scenario(True)

    fast, general = run_on(loop, main, timeout=100)
    assert fast == general
    assert fast[0] == ("ok", 5)
    assert fast[-2] == ("meta", "m", {"k": "m"})
