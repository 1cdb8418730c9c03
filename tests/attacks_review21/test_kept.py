"""Review 21: kept results (`delay` + `system.getresult`) of values MessagePack cannot
carry. docs/protocol.md: such a result or stream item gets 405 "give(): result not
delivered: cannot encode as MessagePack: MESSAGE.RESULT[2] is a set", naming the method,
where and what. Real servers on 127.0.0.1 (ephemeral ports)."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from pymprpc import RPC, Server
from pymprpc.errors import ResultLimitError
from pymprpc.testing import sync_client_for

pytestmark = pytest.mark.timeout(20)


def server() -> Server:
    s = Server(("127.0.0.1", 0), executor="thread", grace_period=0.5)

    def give() -> Any:
        return {"a": [1, {2}]}

    async def gen() -> AsyncIterator[Any]:
        yield 1
        yield {"x": {3}}

    s.register_function("give")(give)
    s.register_function("gen")(gen)
    return s


def direct_and_kept(method: str) -> tuple[str, str]:
    with sync_client_for(server(), RPC) as rpc:
        with pytest.raises(ResultLimitError) as direct:
            list(rpc.method(method)()) if method == "gen" else rpc.method(method)()
        call_id = rpc.delay(method)
        time.sleep(0.2)
        with pytest.raises(ResultLimitError) as kept:
            value = rpc.system.getresult(call_id)
            if method == "gen":
                list(value)
    return str(direct.value), str(kept.value)


@pytest.mark.logs_errors
def test_direct_405_names_method_where_and_what() -> None:
    direct, _ = direct_and_kept("give")
    assert direct == (
        "give(): result not delivered: cannot encode as MessagePack: "
        "MESSAGE.RESULT['a'][1] is a set"
    )


@pytest.mark.logs_errors
def test_kept_405_names_method_and_where() -> None:
    _, kept = direct_and_kept("give")
    assert "give()" in kept
    assert "['a'][1]" in kept


@pytest.mark.logs_errors
def test_kept_stream_405_names_the_item_method_and_where() -> None:
    _, kept = direct_and_kept("gen")
    assert "gen()" in kept
    assert "item" in kept
    assert "['x']" in kept


def test_kept_405_is_logged_like_a_direct_one(caplog: pytest.LogCaptureFixture) -> None:
    """README: a result it returned that cannot be sent is logged once at ERROR."""
    caplog.set_level(logging.INFO)
    with sync_client_for(server(), RPC) as rpc:
        call_id = rpc.delay("give")
        time.sleep(0.2)
        with pytest.raises(ResultLimitError):
            rpc.system.getresult(call_id)
    errors = [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.ERROR and r.name.startswith("pymprpc")
    ]
    assert len(errors) == 1, errors
    assert "give" in errors[0]
