"""README: "`AccessLog` (one record per call on the `pymprpc.access` logger) ... to record
the code the client got, report from the call's end with `observe_call(ctx, result,
on_end)` ... or `ctx.add_done_callback(fn)` (also for what `call_next` raised, which may
be answered with another code), as `AccessLog` and `ServerTelemetry` do"; and
interceptors refusing with "any `pymprpc.errors` exception"."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from pymprpc import RPC, Server, errors
from pymprpc.interceptors import AccessLog, RateLimit, outcome_code
from pymprpc.testing import sync_client_for

from .kit import Records, wait_until


def _server(*interceptors: Any) -> Server:
    server = Server(("127.0.0.1", 0), interceptors=list(interceptors))

    @server.register_function()
    async def ok() -> str:
        return "ok"

    @server.register_function()
    async def boom() -> None:
        raise ValueError("boom")

    @server.register_function()
    async def count(n: int) -> Any:
        for i in range(n):
            yield i

    return server


@pytest.mark.logs_errors
def test_accesslog_codes_for_each_outcome() -> None:
    """One record per call, with the code its client got: 200, 404 (a handler's
    ValueError), 503 (an inner RateLimit refusal), 201 for a stream (with its items)."""
    server = _server(AccessLog(), RateLimit(rate=0.01, burst=3))
    with (
        Records("pymprpc.access", logging.INFO) as rec,
        sync_client_for(server, RPC, timeout=5) as rpc,
    ):
        assert rpc.ok() == "ok"
        with pytest.raises(errors.RPCRuntimeError):
            rpc.boom()
        assert list(rpc.count(2)) == [0, 1]
        with pytest.raises(errors.RpcUnavailableException):
            rpc.ok()
        wait_until(lambda: len(rec.records) >= 4, 5, "four records")
    lines = [r.getMessage() for r in rec.records]
    assert len(lines) == 4, lines
    assert "-> 200" in lines[0] and lines[0].startswith("ok ")
    assert "-> 404" in lines[1] and lines[1].startswith("boom ")
    assert "-> 201" in lines[2] and "items=2" in lines[2]
    assert "-> 503" in lines[3]


def test_accesslog_records_delay_and_notify_calls() -> None:
    """ "one record per call": a RETURN-false call (`delay`) and a oneway one (`notify`)
    are calls too."""
    server = _server(AccessLog())
    with (
        Records("pymprpc.access", logging.INFO) as rec,
        sync_client_for(server, RPC, timeout=5) as rpc,
    ):
        call_id = rpc.delay("ok")
        assert rpc.system.getresult(call_id) == "ok"
        rpc.notify("ok")
        assert rpc.ok() == "ok"
        wait_until(lambda: len([r for r in rec.records if "ok " in r.getMessage()]) >= 3, 5)
    oks = [r.getMessage() for r in rec.records if r.getMessage().startswith("ok ")]
    assert len(oks) == 3, [r.getMessage() for r in rec.records]


@pytest.mark.logs_errors
def test_done_callback_sees_code_client_got() -> None:
    """`ctx.add_done_callback(fn)` "also for what `call_next` raised, which may be
    answered with another code": a handler's ValueError reaches the callback as what
    the client got (404)."""
    codes: list[int] = []

    async def spy(ctx: Any, call_next: Any) -> Any:
        ctx.add_done_callback(lambda error: codes.append(outcome_code(error, ctx=ctx)))
        return await call_next(ctx)

    with sync_client_for(_server(spy), RPC, timeout=5) as rpc:
        with pytest.raises(errors.RPCRuntimeError):
            rpc.boom()
        assert rpc.ok() == "ok"
        wait_until(lambda: len(codes) >= 2, 5, "two callbacks")
    assert codes == [404, 200]


REFUSALS = [
    (errors.RequestError, 400),
    (errors.NotFindError, 401),
    (errors.ParamError, 402),
    (errors.RestrictAccessError, 403),
    (errors.RPCRuntimeError, 404),
    (errors.ResultLimitError, 405),
    (errors.CancelledError, 407),
    (errors.DeadlineExceeded, 408),
    (errors.RpcException, 500),
    (errors.LoginError, 501),
    (errors.RequirementException, 502),
    (errors.RpcUnavailableException, 503),
    (errors.TimeoutException, 504),
    (errors.ProtocolException, 505),
    (errors.ProtocolSyntaxException, 506),
]


@pytest.mark.parametrize(("error", "code"), REFUSALS)
def test_refusal_with_any_error_keeps_connection(error: type, code: int) -> None:
    """ "refuse the call with any `pymprpc.errors` exception": the call gets that code,
    the connection goes on (even for codes that otherwise end a connection)."""

    async def refuse(ctx: Any, call_next: Any) -> Any:
        if ctx.method == "boom":
            raise error("refused", id=ctx.id)
        return await call_next(ctx)

    with sync_client_for(_server(refuse), RPC, timeout=5) as rpc:
        with pytest.raises(errors.MPRPCError) as exc:
            rpc.boom()
        assert exc.value.code == code
        assert rpc.ok() == "ok"
