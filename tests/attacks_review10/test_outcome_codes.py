"""`outcome_code(..., ctx=)`: 408 for a call cancelled once its deadline passed."""

from __future__ import annotations

import asyncio
import time

import pytest
from attacks_review9.kit import Raw

from attacks_review10.kit import kept_log, serving_on
from pymprpc import Server
from pymprpc.interceptors import AccessLog


def _server(access: AccessLog) -> Server:
    server = Server(("127.0.0.1", 0), interceptors=[access], grace_period=1.0)

    @server.register_function()
    async def slow() -> None:
        await asyncio.sleep(5)

    return server


def _codes(kind: str, deadline: float, calls: int) -> tuple[set[int], list[int]]:
    with kept_log("review10.access") as access:
        server = _server(AccessLog(logger=access.logger))
        with serving_on(server, kind), Raw(server.address[1]) as raw:
            raw.login(features=["deadline", "cancel", "length-framing"])
            answered = set()
            for i in range(calls):
                raw.call(f"c{i}", "slow", DEADLINE=deadline)
                answered.add(raw.recv()["CODE"])
            time.sleep(0.2)
        logged = [int(r.args[4]) for r in access.records]  # type: ignore[index, arg-type]
    return answered, logged


@pytest.mark.timeout(30)
def test_deadline_logged_408_on_asyncio() -> None:
    answered, logged = _codes("asyncio", 0.0104, 20)
    assert answered == {408}
    assert logged == [408] * 20


@pytest.mark.timeout(30)
def test_deadline_logged_408_on_uvloop() -> None:
    answered, logged = _codes("uvloop", 0.0104, 20)
    assert answered == {408}
    assert logged == [408] * 20
