"""Review 21: what a first-day user reads for an introspection call the server did not
enable. README: `system.listServices()` answers once `register_introspection_functions()`
was called (a server without it answers 406). Real servers on 127.0.0.1."""

from __future__ import annotations

import pytest

from pymprpc import RPC, Server
from pymprpc.errors import UnsupportSysMethodError
from pymprpc.testing import sync_client_for

pytestmark = pytest.mark.timeout(20)


def test_introspection_after_registering_it_answers() -> None:
    server = Server(("127.0.0.1", 0), grace_period=0.5)
    server.register_introspection_functions()
    with sync_client_for(server, RPC) as rpc:
        assert "system.listMethods" in rpc.system.listMethods()


@pytest.mark.parametrize("method", ["listMethods", "listServices", "methodHelp"])
def test_introspection_not_enabled_is_406(method: str) -> None:
    server = Server(("127.0.0.1", 0), grace_period=0.5)
    with sync_client_for(server, RPC) as rpc, pytest.raises(UnsupportSysMethodError) as caught:
        rpc.method(f"system.{method}")()
    assert caught.value.code == 406


def test_introspection_not_enabled_says_what_to_do() -> None:
    server = Server(("127.0.0.1", 0), grace_period=0.5)
    with sync_client_for(server, RPC) as rpc, pytest.raises(UnsupportSysMethodError) as caught:
        rpc.system.listMethods()
    assert "register_introspection_functions" in str(caught.value)
