"""The README's "Running in production" contract: eager start, shipped interceptors
(AccessControl, RateLimit, AccessLog), interceptors replacing the context, response
metadata on deprecated results."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest

from pymprpc import RPC, errors
from pymprpc.context import CallContext
from pymprpc.interceptors import AccessControl, AccessLog, RateLimit
from pymprpc.testing import RunningServer

from .wire import ALL_FEATURES, Wire, new_id

pytestmark = pytest.mark.timeout(60)

ACCOUNTS = [("alice", "a-pw"), ("bob", "b-pw")]


def test_handler_first_line_has_its_task(server: RunningServer) -> None:
    with RPC(server.url) as rpc:
        assert rpc.first_line() == [True, True]


def test_access_control(serve: Callable[..., RunningServer]) -> None:
    rules = AccessControl({"add_*": ["admin"], "*": ["*"]}, roles={"alice": ["admin"]})
    running = serve(auth=ACCOUNTS, interceptors=[rules])
    with RPC(running.url_for("alice", "a-pw")) as alice:
        assert alice.add_coro(1, 2) == 3 and alice.add(1, 2) == 3
    with RPC(running.url_for("bob", "b-pw")) as bob:
        assert bob.add(1, 2) == 3
        with pytest.raises(errors.RestrictAccessError) as info:
            bob.add_coro(1, 2)
        assert info.value.code == 403
        with pytest.raises(errors.NotFindError):  # unknown methods: 401 before interceptors
            bob.add_nothing()


def test_rate_limit_503_with_retry_after(serve: Callable[..., RunningServer]) -> None:
    running = serve(interceptors=[RateLimit(rate=0.001, burst=2, per="peer")])
    with Wire(running.server.address[1], features=ALL_FEATURES) as w:
        assert w.call("add", 1, 2)["CODE"] == 200
        assert w.call("add", 1, 2)["CODE"] == 200
        refused = w.call("add", 1, 2)
        assert (
            refused["CODE"] == 503 and refused["MESSAGE"]["EXCEPTION"] == "RpcUnavailableException"
        )
        assert refused["MESSAGE"]["DATA"]["RETRY_AFTER"] > 0
        assert w.ping()["CODE"] == 101  # the connection is not affected


def test_access_log_one_record_per_call(
    serve: Callable[..., RunningServer], caplog: pytest.LogCaptureFixture
) -> None:
    logger = logging.getLogger("contract.access")
    running = serve(interceptors=[AccessLog(logger)])
    with caplog.at_level(logging.INFO, logger="contract.access"), RPC(running.url) as rpc:
        assert rpc.add(1, 2) == 3
        with pytest.raises(errors.RPCRuntimeError):
            rpc.raise_coro("ValueError")
        assert list(rpc.count(2)) == [0, 1]
    records = [r.getMessage() for r in caplog.records if r.name == "contract.access"]
    assert len(records) == 3
    assert records[0].startswith("add id=") and "-> 200" in records[0]
    assert records[1].startswith("raise_coro id=") and "-> 404" in records[1]
    assert records[2].startswith("count id=")


def test_interceptor_replacing_metadata(serve: Callable[..., RunningServer]) -> None:
    async def tag(ctx: CallContext, call_next: Any) -> Any:
        return await call_next(ctx.replace(metadata={**ctx.metadata, "tagged": "yes"}))

    running = serve(interceptors=[tag])
    with Wire(running.server.address[1], features=ALL_FEATURES) as w:
        fields = w.call("ctx_coro", METADATA={"a": "b"})["MESSAGE"]["RESULT"]
        assert fields["metadata"] == {"a": "b", "tagged": "yes"}


def test_response_metadata_on_deprecated_results(iport: int) -> None:
    with Wire(iport, features=ALL_FEATURES) as w:
        id = new_id()
        w.send(w.request("old_add", 1, 2, id=id, METADATA={"want": "d"}))
        assert w.recv() == {
            "MPRPC": "0.1",
            "CODE": 300,
            "MESSAGE": {"ID": id, "RESULT": 3, "METADATA": {"got": "d"}},
        }
        id = new_id()
        w.send(w.request("old_count", 1, id=id, METADATA={"want": "s"}))
        assert w.recv() == {
            "MPRPC": "0.1",
            "CODE": 301,
            "MESSAGE": {"ID": id, "METADATA": {"got": "s"}},
        }
        assert [m["CODE"] for m in w.recv_n(2)] == [202, 206]
