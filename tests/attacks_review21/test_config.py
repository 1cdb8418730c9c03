"""Review 21: options a first-day user gets wrong (a value read from an environment
variable is a string; "no limit" written as infinity or -1; one account written as a
pair rather than a list of pairs). What they read should say which option is wrong, when
the server or client is made, not a traceback or a protocol error at every connection.
Real servers on 127.0.0.1 (ephemeral ports)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from pymprpc import RPC, AsyncRPC, Server
from pymprpc.errors import MPRPCError
from pymprpc.testing import client_for, sync_client_for

pytestmark = pytest.mark.timeout(20)


def serve_one_call(**options: Any) -> Any:
    """Make a server with `options` and call it once; what happened, as text."""
    try:
        server = Server(("127.0.0.1", 0), grace_period=0.5, **options)
    except (TypeError, ValueError) as exc:
        return ("refused", str(exc))

    async def sub(a: int, b: int) -> int:
        return a - b

    server.register_function("sub")(sub)
    try:
        with sync_client_for(server, RPC, connect_timeout=3) as rpc:
            return ("value", rpc.sub(3, 1))
    except MPRPCError as exc:
        return ("call failed", f"{type(exc).__name__}: {exc}")


def assert_named_or_served(outcome: Any, option: str) -> None:
    """Either the server refused the option at once naming it, or it serves."""
    kind, detail = outcome
    if kind == "refused":
        assert option in detail, outcome
    else:
        assert outcome == ("value", 2)


@pytest.mark.logs_errors
@pytest.mark.parametrize("option", ["idle_timeout", "max_inflight", "auth_timeout"])
def test_a_string_number_is_refused_when_the_server_is_made(option: str) -> None:
    outcome = serve_one_call(**{option: "30"})
    assert outcome[0] == "refused", outcome
    assert option in outcome[1]


@pytest.mark.parametrize("value", [float("inf"), -1.0, float("nan")])
def test_idle_timeout_the_server_accepts_is_one_its_clients_accept(value: float) -> None:
    assert_named_or_served(serve_one_call(idle_timeout=value), "idle_timeout")


def test_idle_timeout_none_and_zero_disable_it() -> None:
    assert serve_one_call(idle_timeout=None) == ("value", 2)
    assert serve_one_call(idle_timeout=0) == ("value", 2)


@pytest.mark.parametrize(
    "auth",
    [("admin", "pw"), {"admin": "pw"}, [("admin", None)], [("admin", 5)]],
    ids=["one-pair", "dict", "none-password", "int-password"],
)
def test_a_malformed_auth_is_refused_naming_auth(auth: Any) -> None:
    with pytest.raises((TypeError, ValueError)) as caught:
        Server(("127.0.0.1", 0), auth=auth)
    assert "auth" in str(caught.value)


def test_a_list_of_pairs_is_the_documented_auth() -> None:
    outcome = serve_one_call(auth=[("admin", "pw")])
    # Anonymous: refused at login, as the table says.
    assert outcome[0] == "call failed"


@pytest.mark.parametrize("option", ["timeout", "heart_beat", "connect_timeout"])
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_client_option_given_as_a_string_names_the_option(option: str, kind: str) -> None:
    server = Server(("127.0.0.1", 0), grace_period=0.5)

    async def sub(a: int, b: int) -> int:
        return a - b

    server.register_function("sub")(sub)
    with pytest.raises((TypeError, ValueError)) as caught:
        if kind == "sync":
            with sync_client_for(server, RPC, **{option: "5"}) as rpc:
                rpc.sub(3, 1)
        else:

            async def main() -> None:
                async with client_for(server, AsyncRPC, **{option: "5"}) as rpc:
                    await rpc.sub(3, 1)

            asyncio.run(main())
    assert option in str(caught.value)


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_heart_beat_zero_is_refused_naming_it(kind: str) -> None:
    client = RPC if kind == "sync" else AsyncRPC
    with pytest.raises(ValueError, match="heart_beat"):
        client("tcp://127.0.0.1:1", heart_beat=0)
