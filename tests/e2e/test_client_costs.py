"""AsyncRPC's fixed costs per call, as counts: what fan-in load pays on every call."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from service import url

from helpers import ServerThread, arun
from pymprpc.client import AsyncRPC


def test_a_call_is_one_write_and_asks_no_running_loop(
    srv: ServerThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One write per call when nothing else is in flight, and the connection's own loop
    for the call's future: asyncio.get_running_loop() costs a getpid() per call on 3.11."""
    lookups = 0
    real = asyncio.get_running_loop

    def get_running_loop() -> asyncio.AbstractEventLoop:
        nonlocal lookups
        lookups += 1
        return real()

    async def main() -> None:
        async with AsyncRPC(url(srv)) as rpc:
            assert await rpc.coro_add(1, 2) == 3
            transport: Any = rpc._transport
            writes = 0
            write = transport.write

            def counting_write(data: Any) -> None:
                nonlocal writes
                writes += 1
                write(data)

            monkeypatch.setattr(transport, "write", counting_write)
            monkeypatch.setattr(asyncio, "get_running_loop", get_running_loop)
            for i in range(20):
                assert await rpc.coro_add(i, 1) == i + 1
            monkeypatch.setattr(asyncio, "get_running_loop", real)
            assert writes == 20
            assert lookups == 0

    arun(main())
