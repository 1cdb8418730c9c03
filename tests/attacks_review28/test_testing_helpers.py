"""README **Testing**: "`pymprpc.testing.client_for(server, client)` starts the server on
the running loop (give it port 0) and yields a connected `AsyncRPC` or generated
`AsyncTypedClient`, as above; `sync_client_for(server, RPC)` does the same for blocking
clients, serving in a thread. With pytest, `pytest_plugins = ["pymprpc.pytest_plugin"]` in
`conftest.py` adds the `mprpc_client(server, client=RPC, **options)` and
`mprpc_serve(server)` fixtures." (tests/conftest.py enables the plugin.)"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from pymprpc import RPC, AsyncRPC, Server, current_call
from pymprpc.errors import LoginError
from pymprpc.testing import client_for, sync_client_for

from .kit import run


def _server(**options: Any) -> Server:
    server = Server(("127.0.0.1", 0), **options)

    @server.register_function()
    async def where() -> Any:
        return {"thread": threading.current_thread().name, "user": current_call().user}

    return server


def test_client_for_serves_on_running_loop_and_closes_after() -> None:
    """ "starts the server on the running loop ... and yields a connected `AsyncRPC`"."""
    server = _server()

    async def main() -> Any:
        async with client_for(server) as rpc:
            assert isinstance(rpc, AsyncRPC)
            assert server.running
            got = await rpc.where()
        return got, server.running

    got, running_after = run(main())
    assert got["thread"] == threading.current_thread().name
    assert running_after is False


def test_client_for_leaves_an_already_running_server_running() -> None:
    """A server the test started itself is left running (client_for started nothing)."""
    server = _server()

    async def main() -> bool:
        await server.start()
        try:
            async with client_for(server) as rpc:
                await rpc.where()
            return server.running
        finally:
            await server.close()

    assert run(main()) is True


def test_client_for_with_options_and_credentials() -> None:
    """Client options pass through, and user/password log in."""
    server = _server(auth=[("bob", "pw")])

    async def main() -> Any:
        async with client_for(server, user="bob", password="pw", timeout=5) as rpc:
            return await rpc.where()

    assert run(main())["user"] == "bob"


def test_client_for_wrong_password_raises_and_server_closed() -> None:
    """A failed login raises LoginError, and the server client_for started is closed."""
    server = _server(auth=[("bob", "pw")])

    async def main() -> None:
        async with client_for(server, user="bob", password="nope"):
            pass

    with pytest.raises(LoginError):
        run(main())
    assert not server.running


def test_sync_client_for_serves_in_a_thread() -> None:
    """ "`sync_client_for(server, RPC)` does the same for blocking clients, serving in a
    thread"."""
    server = _server()
    with sync_client_for(server, RPC) as rpc:
        assert isinstance(rpc, RPC)
        got = rpc.where()
    assert got["thread"] != threading.current_thread().name
    assert not server.running


def test_plugin_mprpc_client_fixture(mprpc_client: Any) -> None:
    """ "`mprpc_client(server, client=RPC, **options)`": a connected blocking client."""
    rpc = mprpc_client(_server(auth=[("bob", "pw")]), RPC, user="bob", password="pw", timeout=5)
    assert rpc.where()["user"] == "bob"


def test_plugin_mprpc_serve_fixture(mprpc_serve: Any) -> None:
    """ "`mprpc_serve(server)`": serves it; the test connects itself."""
    server = _server()
    running = mprpc_serve(server)
    with RPC(running.url, timeout=5) as rpc:
        assert rpc.where()["user"] is None


def test_plugin_two_servers_in_one_test(mprpc_client: Any) -> None:
    """The fixtures are factories: two servers in one test."""
    a = mprpc_client(_server())
    b = mprpc_client(_server())
    assert a.where() and b.where()


def test_client_for_typed_async_client() -> None:
    """ "yields a connected `AsyncRPC` or generated `AsyncTypedClient`"."""
    import sys
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[2])
    sys.path.insert(0, root)
    try:
        from generated_examples.calculator.client import (  # type: ignore[import-not-found]
            AsyncCalculatorClient,
        )
    finally:
        sys.path.remove(root)
    server = Server(("127.0.0.1", 0))

    @server.register_function()
    async def add(a: int, b: int) -> int:
        return a + b

    async def main() -> int:
        async with client_for(server, AsyncCalculatorClient) as calc:
            return await calc.add(2, 3)

    assert run(main()) == 5


def test_client_for_cancelled_body_closes_server() -> None:
    """A test body that is cancelled (a timeout) still closes the server it started."""
    server = _server()

    async def main() -> None:
        async with client_for(server):
            await asyncio.sleep(30)

    async def bounded() -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(main(), 0.5)

    asyncio.run(bounded())
    assert not server.running
