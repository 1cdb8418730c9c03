"""An unlucky user: oversized or unencodable arguments, the legacy separator in a payload
on a 0.0.3 server, calls after close(): clear errors, same on both, connection usable."""

from __future__ import annotations

from typing import Any

import pytest

from .fake import HANG, both, echo_server

BAD_ARGS = {
    "too-big": ("x" * 70_000,),
    "separator-old-server": ("a##PRO-END##b",),
    "object": (object(),),
    "set": ({1, 2},),
    "huge-int": (2**80,),
}


@pytest.mark.timeout(40)
@pytest.mark.parametrize("name", sorted(BAD_ARGS))
def test_bad_arguments_clear_same_and_connection_usable(name: str) -> None:
    args = BAD_ARGS[name]

    def sync(rpc: Any) -> Any:
        try:
            first: Any = ("ok", rpc.f(*args))
        except Exception as e:  # noqa: BLE001
            first = (type(e).__name__, str(e))
        return first, rpc.f(1)

    async def act(rpc: Any) -> Any:
        try:
            first: Any = ("ok", await rpc.f(*args))
        except Exception as e:  # noqa: BLE001
            first = (type(e).__name__, str(e))
        return first, await rpc.f(1)

    features = "old" if "old" in name else None
    a, b = both(
        echo_server(features=features), sync, act, limit=8, timeout=3, max_message_size=65536
    )
    assert a != HANG and b != HANG, (a, b)
    assert a[0] == "ok", f"connection unusable after a bad argument: {a}"
    assert a[1][1] == [1], a
    if name in ("too-big", "separator-old-server"):
        assert a[1][0][0] == "LocalProtocolError", a
    assert a == b, f"sync={a}\nasync={b}"


@pytest.mark.timeout(40)
def test_call_after_close_same() -> None:
    def sync(rpc: Any) -> Any:
        rpc.close()
        return rpc.f()

    async def act(rpc: Any) -> Any:
        await rpc.close()
        return await rpc.f()

    a, b = both(echo_server(), sync, act, limit=6)
    assert a[0] == "ConnectionLostError", a
    # the hint names each client's own API; the rest must match
    assert (a[0], a[1].split(": use")[0]) == (b[0], b[1].split(": use")[0]), (a, b)
