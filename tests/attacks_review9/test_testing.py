"""pymprpc.testing and the pytest plugin's fixtures, with the production options."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from attacks_review9.kit import new_server
from pymprpc import RPC, AsyncRPC, Server, current_call
from pymprpc.errors import LoginError, RestrictAccessError
from pymprpc.interceptors import AccessControl
from pymprpc.pytest_plugin import mprpc_client, mprpc_serve
from pymprpc.testing import client_for, sync_client_for

__all__ = ["mprpc_client", "mprpc_serve"]

pytestmark = pytest.mark.timeout(30)


def build() -> Server:
    server = new_server(
        auth=[("alice", "a"), ("bob", "b")],
        interceptors=[
            AccessControl({"admin.*": ["admin"], "*": ["*"]}, roles={"alice": ["admin"]})
        ],
    )

    @server.register_function()
    async def whoami() -> Any:
        call = current_call()
        return [call.user, call.metadata.get("request-id")]

    @server.register_function("admin.reset")
    async def reset() -> str:
        return "reset"

    return server


def tag(ctx: Any, call_next: Any) -> Any:
    return call_next(ctx.replace(metadata={**ctx.metadata, "request-id": "r-1"}))


def test_plugin_fixtures(mprpc_client: Any, mprpc_serve: Any) -> None:
    rpc = mprpc_client(build(), user="bob", password="b", interceptors=[tag], timeout=5)
    assert rpc.whoami() == ["bob", "r-1"]
    with pytest.raises(RestrictAccessError):
        rpc.admin.reset()
    running = mprpc_serve(build())
    with RPC(running.url_for("alice", "a"), timeout=5) as alice:
        assert alice.admin.reset() == "reset"


def test_sync_client_for_bad_login_stops_the_server() -> None:
    server = build()
    with (
        pytest.raises(LoginError),
        sync_client_for(server, user="bob", password="wrong", timeout=5),
    ):
        pass
    assert not server.running


def test_client_for_with_async_interceptor() -> None:
    async def atag(ctx: Any, call_next: Any) -> Any:
        return await call_next(ctx.replace(metadata={"request-id": "a-1"}))

    async def main() -> None:
        async with client_for(
            build(), AsyncRPC, user="alice", password="a", interceptors=[atag]
        ) as rpc:
            assert await rpc.whoami() == ["alice", "a-1"]

    asyncio.run(main())
