"""What the server logs: one ERROR with traceback per failing handler, nothing per
successful call, connections at INFO, failed logins at WARNING without the password."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from helpers import arun
from pymprpc import RPC, Server
from pymprpc.errors import LoginError, ResultLimitError, RPCRuntimeError
from pymprpc.interceptors import AccessLog
from pymprpc.testing import client_for


def broken(x: int) -> int:
    raise ZeroDivisionError(f"cannot divide {x}")


async def add(a: int, b: int) -> int:
    return a + b


def server_with(**options: object) -> Server:
    server = Server(("127.0.0.1", 0), **options)  # type: ignore[arg-type]
    server.register_function("add")(add)
    server.register_function("broken_inline", executor="inline")(broken)
    server.register_function("broken_process", executor="process")(broken)
    return server


def records(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith("pymprpc") and r.levelno == level]


@pytest.mark.parametrize("method", ["broken_inline", "broken_process"])
def test_a_failing_handler_is_logged_once_at_error_with_its_traceback(
    caplog: pytest.LogCaptureFixture, mprpc_client: Callable[..., RPC], method: str
) -> None:
    caplog.set_level(logging.DEBUG, logger="pymprpc")
    rpc = mprpc_client(server_with())
    with pytest.raises(RPCRuntimeError, match="cannot divide 7") as failed:
        rpc.method(method)(7)
    errors = records(caplog, logging.ERROR)
    assert len(errors) == 1, errors
    text = errors[0].getMessage() + (caplog.text if errors[0].exc_info else "")
    assert method in text and str(failed.value.id) in text and "127.0.0.1:" in text
    assert "ZeroDivisionError" in text
    assert "Traceback" in caplog.text  # with its traceback (a worker's, as text)
    assert errors[0].name == "pymprpc.server.handler"  # one logger per module


@pytest.mark.parametrize("method", ["unsendable", "unsendable_inline", "unsendable_items"])
def test_a_result_that_cannot_be_sent_is_logged_once_at_error(
    caplog: pytest.LogCaptureFixture, mprpc_client: Callable[..., RPC], method: str
) -> None:
    """Before, only the client learned (405) that a handler returned what cannot be
    encoded: the server's log said nothing."""
    caplog.set_level(logging.DEBUG, logger="pymprpc")
    server = server_with()

    @server.register_function()
    async def unsendable() -> object:
        return {"rows": [object()]}

    @server.register_function(executor="inline")
    def unsendable_inline() -> object:
        return {1, 2}

    @server.register_function()
    async def unsendable_items() -> object:
        yield 1
        yield object()

    rpc = mprpc_client(server)
    with pytest.raises(ResultLimitError, match="cannot encode") as failed:
        result = rpc.method(method)()
        if method == "unsendable_items":
            list(result)
    assert failed.value.code == 405
    errors = records(caplog, logging.ERROR)
    assert len(errors) == 1, errors
    text = errors[0].getMessage()
    assert method in text and str(failed.value.id) in text and "127.0.0.1:" in text
    assert "answered 405" in text and "cannot encode" in text


def test_nothing_is_logged_per_successful_call(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="pymprpc")

    async def main() -> None:
        async with client_for(server_with()) as rpc:
            caplog.clear()
            for i in range(20):
                assert await rpc.add(i, 1) == i + 1
            assert [r for r in caplog.records if r.name.startswith("pymprpc")] == []

    arun(main())


def test_the_access_log_logs_each_call(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pymprpc")

    async def main() -> None:
        async with client_for(server_with(interceptors=[AccessLog()])) as rpc:
            caplog.clear()
            await rpc.add(1, 2)
        access = [r for r in caplog.records if r.name == "pymprpc.access"]
        assert len(access) == 1 and "add id=" in access[0].getMessage()
        assert "-> 200" in access[0].getMessage()

    arun(main())


def test_connections_at_info_failed_logins_at_warning_without_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="pymprpc")
    server = server_with(auth=[("alice", "right")])

    async def main() -> None:
        async with client_for(server, user="alice", password="right") as rpc:
            await rpc.add(1, 2)
        with pytest.raises(LoginError):
            async with client_for(server, user="alice", password="hunter2-wrong"):
                pass

    arun(main())
    infos = [r.getMessage() for r in records(caplog, logging.INFO)]
    assert any("accepted" in m and "127.0.0.1:" in m for m in infos), infos
    assert any("closed" in m and "127.0.0.1:" in m for m in infos), infos
    warnings = [r.getMessage() for r in records(caplog, logging.WARNING)]
    assert any("failed login as 'alice' from 127.0.0.1" in m for m in warnings), warnings
    assert "hunter2" not in caplog.text


def test_the_package_has_a_null_handler() -> None:
    handlers = logging.getLogger("pymprpc").handlers
    assert any(isinstance(h, logging.NullHandler) for h in handlers)
