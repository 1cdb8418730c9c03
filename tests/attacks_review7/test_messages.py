"""Error messages a user reads: they must not show a password, and must say what is
wrong in the user's own terms."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from types import ModuleType

import pytest

from attacks_review7.kit import warehouse_package
from pymprpc import RPC, AsyncRPC, Server
from pymprpc.errors import ConnectionLostError, NotFindError, RPCRuntimeError
from pymprpc.testing import serve_in_thread, sync_client_for

pytestmark = pytest.mark.timeout(30)

SECRET = "s3#cr:et"  # typed into the address unquoted, as users do


@pytest.mark.parametrize("client", [RPC, AsyncRPC])
@pytest.mark.parametrize(
    ("addr", "secret"),
    [
        (f"tcp://alice:{SECRET}@127.0.0.1:5000", "cr:et"),  # '#', ':' not percent-encoded
        ("tcp://alice:hunter2@127.0.0.1", "hunter2"),  # no port
        ("tcp://alice:hunter2@127.0.0.1:99999", "hunter2"),  # port out of range
        ("http://alice:hunter2@127.0.0.1:5000", "hunter2"),  # wrong scheme
    ],
)
def test_bad_address_error_does_not_show_the_password(client: type, addr: str, secret: str) -> None:
    with pytest.raises(ValueError) as info:
        client(addr)
    assert secret not in str(info.value)


def test_quoted_password_logs_in() -> None:
    """What the message should point to: a percent-encoded password works."""
    server = Server(("127.0.0.1", 0), auth=[("alice", SECRET)])

    @server.register_function(executor="inline")
    def whoami() -> str:
        from pymprpc import current_call

        user = current_call().user
        assert user is not None
        return user

    with serve_in_thread(server) as running, RPC(running.url_for("alice", SECRET)) as rpc:
        assert rpc.whoami() == "alice"


def fail_empty() -> None:
    raise ValueError()


@pytest.mark.logs_errors
def test_exception_without_message_reads_naturally() -> None:
    server = Server(("127.0.0.1", 0))
    server.register_function(executor="inline")(fail_empty)
    with sync_client_for(server, timeout=5) as rpc, pytest.raises(RPCRuntimeError) as info:
        rpc.fail_empty()
    assert info.value.exception == "ValueError"
    assert "RPCRuntimeError" not in str(info.value)


def test_unknown_method_hint_is_usable_without_introspection() -> None:
    server = Server(("127.0.0.1", 0))

    @server.register_function(executor="inline")
    def ping() -> str:
        return "pong"

    with sync_client_for(server, timeout=5) as rpc:
        with pytest.raises(NotFindError) as info:
            rpc.pnig()
        if "system.listMethods" in str(info.value):
            rpc.system.listMethods()  # the hint must work


@pytest.fixture
def pkg() -> Iterator[ModuleType]:
    with warehouse_package() as module:
        yield module


@pytest.fixture
def url() -> Iterator[str]:
    server = Server(("127.0.0.1", 0))
    with serve_in_thread(server) as running:
        yield running.url


def test_not_connected_message_names_the_typed_client(pkg: ModuleType, url: str) -> None:
    client = pkg.WarehouseClient(url)
    with pytest.raises(ConnectionLostError) as info:
        client.list()
    assert "WarehouseClient" in str(info.value)


def test_not_connected_message_names_the_async_typed_client(pkg: ModuleType, url: str) -> None:
    async def main() -> str:
        client = pkg.AsyncWarehouseClient(url)
        try:
            await client.list()
        except ConnectionLostError as exc:
            return str(exc)
        return "no error"

    assert "AsyncWarehouseClient" in asyncio.run(asyncio.wait_for(main(), 10))
