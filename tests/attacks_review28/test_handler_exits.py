"""README "### Server": "No handler can stop the server: `sys.exit()`, `KeyboardInterrupt`
or a stray `CancelledError` raised by a method ... fails that call only (404; 407 for a
`CancelledError` when `cancel` is negotiated)." Checked on every executor kind."""

from __future__ import annotations

import asyncio
import sys

import pytest

from pymprpc import RPC, Server
from pymprpc.errors import CancelledError, RPCRuntimeError
from pymprpc.testing import sync_client_for

EXITS = {
    "SystemExit": lambda: sys.exit(3),
    "KeyboardInterrupt": lambda: (_ for _ in ()).throw(KeyboardInterrupt()),
}


def _server(executor: str) -> Server:
    server = Server(("127.0.0.1", 0), max_workers=1)

    def do_exit() -> None:
        sys.exit(3)

    def do_kbi() -> None:
        raise KeyboardInterrupt

    def do_cancel() -> None:
        raise asyncio.CancelledError

    def ok() -> str:
        return "ok"

    if executor == "coroutine":

        async def a_exit() -> None:
            sys.exit(3)

        async def a_kbi() -> None:
            raise KeyboardInterrupt

        async def a_cancel() -> None:
            raise asyncio.CancelledError

        async def a_ok() -> str:
            return "ok"

        server.register_function("do_exit")(a_exit)
        server.register_function("do_kbi")(a_kbi)
        server.register_function("do_cancel")(a_cancel)
        server.register_function("ok")(a_ok)
    else:
        for f in (do_exit, do_kbi, do_cancel, ok):
            server.register_function(executor=executor)(f)
    return server


@pytest.mark.logs_errors
@pytest.mark.parametrize("executor", ["coroutine", "inline", "thread", "process"])
def test_sys_exit_and_keyboard_interrupt_fail_one_call(executor: str) -> None:
    """ "`sys.exit()`, `KeyboardInterrupt` ... raised by a method ... fails that call
    only (404...)" and the server keeps serving the same connection."""
    with sync_client_for(_server(executor), timeout=10) as rpc:
        with pytest.raises(RPCRuntimeError) as exc:
            rpc.do_exit()
        assert exc.value.exception == "SystemExit"
        assert rpc.ok() == "ok"
        with pytest.raises(RPCRuntimeError) as exc:
            rpc.do_kbi()
        assert exc.value.exception == "KeyboardInterrupt"
        assert rpc.ok() == "ok"


@pytest.mark.logs_errors
@pytest.mark.parametrize("executor", ["coroutine", "inline", "thread"])
def test_stray_cancelled_error_is_407_with_cancel(executor: str) -> None:
    """ "a stray `CancelledError` raised by a method ... fails that call only (404; 407
    for a `CancelledError` when `cancel` is negotiated)" (our clients negotiate it)."""
    with sync_client_for(_server(executor), timeout=10) as rpc:
        with pytest.raises(CancelledError) as exc:
            rpc.do_cancel()
        assert exc.value.code == 407
        assert rpc.ok() == "ok"


@pytest.mark.logs_errors
@pytest.mark.parametrize("executor", ["coroutine", "inline", "thread"])
def test_stray_cancelled_error_is_404_without_cancel(executor: str) -> None:
    """Without the `cancel` feature a stray `CancelledError` fails the call with 404."""
    with sync_client_for(_server(executor), timeout=10, features=[]) as rpc:
        with pytest.raises(RPCRuntimeError) as exc:
            rpc.do_cancel()
        assert exc.value.code == 404
        assert rpc.ok() == "ok"


@pytest.mark.logs_errors
def test_worker_sys_exit_keeps_worker() -> None:
    """The process pool: "`sys.exit()` or `KeyboardInterrupt` in a function fails that
    call with 404 (`exception: "SystemExit"` or `"KeyboardInterrupt"`); the worker and the
    server keep going." (same worker pid before and after)."""
    server = Server(("127.0.0.1", 0), max_workers=1)

    @server.register_function()
    def pid() -> int:
        import os

        return os.getpid()

    @server.register_function()
    def do_exit() -> None:
        sys.exit(0)

    with sync_client_for(server, RPC, timeout=10) as rpc:
        before = rpc.pid()
        with pytest.raises(RPCRuntimeError) as exc:
            rpc.do_exit()
        assert exc.value.exception == "SystemExit"
        assert rpc.pid() == before
