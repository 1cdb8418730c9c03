# ruff: noqa: SIM117  (a client's with-block and a pytest.raises read better apart)
"""The error hierarchy (README "### Errors", docs/protocol.md "Status codes" and
"Errors"): classes and codes, replies a client cannot accept, codes a handler raises."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest

from pymprpc import errors
from pymprpc.client import RPC
from pymprpc.testing import RunningServer, serve_in_thread

from ._kit import Fake, make_server

TABLE = [
    (400, errors.RequestError, None),
    (401, errors.NotFindError, "NotFoundError"),
    (402, errors.ParamError, None),
    (403, errors.RestrictAccessError, "AccessDeniedError"),
    (404, errors.RPCRuntimeError, "RemoteError"),
    (405, errors.ResultLimitError, None),
    (406, errors.UnsupportSysMethodError, "UnsupportedSystemMethodError"),
    (407, errors.CancelledError, "CallCancelled"),
    (408, errors.DeadlineExceeded, None),
    (500, errors.RpcException, "InternalServerError"),
    (501, errors.LoginError, None),
    (502, errors.RequirementException, "DependencyError"),
    (503, errors.RpcUnavailableException, "UnavailableError"),
    (504, errors.TimeoutException, "IdleTimeoutError"),
    (505, errors.ProtocolException, "ProtocolError"),
    (506, errors.ProtocolSyntaxException, "ProtocolSyntaxError"),
]


@pytest.mark.parametrize(("code", "cls", "alias"), TABLE)
def test_one_class_per_code_and_its_alias(code: int, cls: type, alias: str | None) -> None:
    """README: "Every exception lives in `pymprpc.errors`, one class per protocol code
    (table below). ... The modern names are aliases of the same classes"."""
    assert cls.code == code
    if alias is not None:
        assert getattr(errors, alias) is cls
    assert issubclass(cls, errors.CallError if code < 500 else errors.ServerError)


def test_warnings_and_their_aliases() -> None:
    """README: "300/301 | `ExpireWarning` / `ExpireStreamWarning`
    (`DeprecatedMethodWarning` / `DeprecatedStreamWarning`)"."""
    assert errors.ExpireWarning.code == 300 and errors.ExpireStreamWarning.code == 301
    assert errors.DeprecatedMethodWarning is errors.ExpireWarning
    assert errors.DeprecatedStreamWarning is errors.ExpireStreamWarning
    assert issubclass(errors.ExpireWarning, Warning)


def test_local_conditions() -> None:
    """README: "`ConnectionLostError` (also a `ConnectionError`) ... `RemoteProtocolError`,
    a subclass of `ProtocolException`"; docs/protocol.md: "(with no code of its own)"."""
    assert issubclass(errors.ConnectionLostError, ConnectionError)
    assert issubclass(errors.RemoteProtocolError, errors.ProtocolException)
    assert errors.RemoteProtocolError.code is None


def answering(code: Any, message: dict[str, Any] | None) -> Fake:
    """A fake server answering every call with `code` (and `message`, its ID filled)."""

    def on(fake: Fake, conn: socket.socket, request: dict[str, Any]) -> None:
        if "ID" not in request:
            return
        reply: dict[str, Any] = {"MPRPC": "0.1", "CODE": code}
        if message is not None:
            reply["MESSAGE"] = {**message, "ID": request["ID"]} if "ID" in message else message
        fake.send(conn, reply)

    return Fake(on)


@pytest.mark.parametrize("code", [700, -1, 102])
def test_code_outside_the_table_is_a_remote_protocol_error(code: int) -> None:
    """docs/protocol.md: "a code outside 100-599 not in the table (`700`, `-1`, `102`)
    closes the connection with `RemoteProtocolError` ("unknown response code 700 from the
    server")"."""
    with answering(code, {"ID": "?"}) as fake, RPC(fake.url, timeout=5) as rpc:
        with pytest.raises(errors.RemoteProtocolError, match=f"unknown response code {code}"):
            rpc.m()
        with pytest.raises(errors.ConnectionLostError):
            rpc.m()


def test_unknown_4xx_and_5xx_codes() -> None:
    """docs/protocol.md: "Unknown 4xx codes become `CallError`, unknown 5xx codes
    `RpcException` (a newer server)"."""
    body = {"ID": "?", "EXCEPTION": "Newer", "MESSAGE": "words"}
    with answering(499, body) as fake, RPC(fake.url, timeout=5) as rpc:
        with pytest.raises(errors.CallError) as error:
            rpc.m()
        assert error.value.exception == "Newer" and "words" in str(error.value)
    with answering(599, body) as fake, RPC(fake.url, timeout=5) as rpc:
        with pytest.raises(errors.RpcException):
            rpc.m()


def test_4xx_without_id_is_a_remote_protocol_error() -> None:
    """docs/protocol.md: "A client receiving a 4xx without an ID ... closes the
    connection with `RemoteProtocolError`"."""
    with answering(404, {"EXCEPTION": "X", "MESSAGE": "m"}) as fake:
        with RPC(fake.url, timeout=5) as rpc, pytest.raises(errors.RemoteProtocolError):
            rpc.m()


def test_bare_504_is_the_idle_timeout_error() -> None:
    """README: "A call in flight when the connection ends fails with the server's error
    (`TimeoutException` for an idle close)"; 504 is `TimeoutException`."""
    with answering(504, None) as fake, RPC(fake.url, timeout=5) as rpc:
        with pytest.raises(errors.TimeoutException):
            rpc.m()


def test_408_not_of_the_clients_deadline_keeps_its_words() -> None:
    """docs/protocol.md: "a client keeps the words of a 408 that is not its own
    deadline's (the server's own begins `deadline of`)"."""
    body = {"ID": "?", "EXCEPTION": "DeadlineExceeded", "MESSAGE": "upstream took too long"}
    with answering(408, body) as fake, RPC(fake.url, timeout=5) as rpc:
        with pytest.raises(errors.DeadlineExceeded, match=r"^upstream took too long$"):
            rpc.m()


def test_reply_out_of_order_fails_only_that_call() -> None:
    """docs/protocol.md: "A reply out of order for a call the client tracks (`202` ...
    before `201` ...) fails that call with `RemoteProtocolError` ... and the connection
    stays open."""

    def on(fake: Fake, conn: socket.socket, request: dict[str, Any]) -> None:
        if request.get("METHOD") == "bad":
            message = {"ID": request["ID"], "RESULT": 1}
            fake.send(conn, {"MPRPC": "0.1", "CODE": 202, "MESSAGE": message})
        elif "ID" in request:
            fake.reply(conn, request, "fine")

    with Fake(on) as fake, RPC(fake.url, timeout=5) as rpc:
        with pytest.raises(
            errors.RemoteProtocolError, match=r"stream item \(202\) before its start"
        ):
            rpc.bad()
        assert rpc.good() == "fine"
    assert len(fake.conns) == 1


@pytest.fixture(scope="module")
def raising() -> Iterator[RunningServer]:
    server = make_server()

    @server.register_function()
    async def unavailable() -> None:
        raise errors.RpcUnavailableException("busy, retry later")

    @server.register_function()  # a plain function: the process pool
    def denied_in_pool() -> None:
        raise errors.RestrictAccessError("not yours", data={"WHY": "role"})

    @server.register_function(executor="thread")
    def denied_in_thread() -> None:
        raise errors.RestrictAccessError("not yours", data={"WHY": "role"})

    @server.register_function()
    async def lost() -> None:
        raise errors.ConnectionLostError("the database went away")

    @server.register_function()
    async def own_deadline() -> None:
        raise errors.DeadlineExceeded("upstream took too long")

    server.register_introspection_functions()
    with serve_in_thread(server) as running:
        yield running


@pytest.mark.logs_errors
@pytest.mark.parametrize("method", ["denied_in_pool", "denied_in_thread"])
def test_handler_raising_a_code_on_every_executor(raising: RunningServer, method: str) -> None:
    """README: "A handler may answer with a code itself by raising one of these (`raise
    RestrictAccessError("...")` is a 403, with its `data=` merged into the reply's
    `DATA`), on every executor, the process pool included"."""
    with RPC(raising.url) as rpc, pytest.raises(errors.RestrictAccessError) as error:
        getattr(rpc, method)()
    assert error.value.code == 403
    assert error.value.data is not None and error.value.data["WHY"] == "role"
    assert "not yours" in str(error.value)


@pytest.mark.logs_errors
def test_5xx_raised_by_a_method_fails_that_call_only(raising: RunningServer) -> None:
    """docs/protocol.md: "A 5xx that concerns one call only (... or a 5xx raised by a
    method) carries `MESSAGE {"ID", "EXCEPTION", "MESSAGE"}`; the client fails that call
    only and the connection stays open."""
    with RPC(raising.url) as rpc:
        with pytest.raises(errors.RpcUnavailableException, match="busy, retry later"):
            rpc.unavailable()
        assert rpc.echo(1) == 1
        assert rpc.system.lenConnections() == 1


@pytest.mark.logs_errors
def test_uncoded_pymprpc_error_from_a_method_is_404(raising: RunningServer) -> None:
    """docs/protocol.md: "one without (`ConnectionLostError` from a client the method
    used) is `404` too"."""
    with RPC(raising.url) as rpc, pytest.raises(errors.RPCRuntimeError) as error:
        rpc.lost()
    assert error.value.exception == "ConnectionLostError"
    assert "the database went away" in str(error.value)


@pytest.mark.logs_errors
def test_method_raising_deadline_exceeded_without_the_feature_is_404(
    raising: RunningServer,
) -> None:
    """docs/protocol.md: "a `DeadlineExceeded` (408) a method raises itself ... is
    answered with its code only on a connection that negotiated ... (`deadline`), else
    with 404 whose `EXCEPTION` names it"."""
    with RPC(raising.url) as rpc, pytest.raises(errors.DeadlineExceeded, match="upstream"):
        rpc.own_deadline()
    with RPC(raising.url, features=()) as rpc, pytest.raises(errors.RPCRuntimeError) as error:
        rpc.own_deadline()
    assert error.value.exception == "DeadlineExceeded"


def test_remote_exception_keeps_its_type_name(raising: RunningServer) -> None:
    """README: "A remote exception keeps its type name in `.exception`"; docs: a method
    that raises is `404`."""
    with RPC(raising.url) as rpc, pytest.raises(errors.RPCRuntimeError) as error:
        rpc.boom()
    assert error.value.exception == "ValueError"
    assert "bad thing" in str(error.value)
    assert error.value.remote_traceback is None  # not a debug server


def test_unknown_method_and_unknown_system_method(raising: RunningServer) -> None:
    """docs/protocol.md: "no method of that name | `401`; an unknown `system.*` name is
    `406`"."""
    with RPC(raising.url) as rpc:
        with pytest.raises(errors.NotFoundError, match="nope"):
            rpc.nope()
        with pytest.raises(errors.UnsupportedSystemMethodError, match=r"system\.nope"):
            rpc.system.nope()
