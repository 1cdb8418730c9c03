"""README "Running in production": the shipped interceptors `AccessControl` ("403 by
method pattern, user and role") and `RateLimit` ("token bucket per user or peer; 503
with `RETRY_AFTER` in `DATA`"), as the README's example configures them."""

from __future__ import annotations

import time
from typing import Any

import pytest

from pymprpc import RPC, Server, current_call
from pymprpc.errors import RestrictAccessError, RpcUnavailableException
from pymprpc.interceptors import AccessControl, RateLimit
from pymprpc.testing import serve_in_thread

from .kit import Raw

ACCOUNTS = [("alice", "a-pw"), ("bob", "b-pw"), ("carol", "c-pw")]


def _server(*interceptors: Any) -> Server:
    server = Server(("127.0.0.1", 0), auth=ACCOUNTS, interceptors=list(interceptors))

    @server.register_function()
    async def whoami() -> Any:
        return current_call().user

    @server.register_function("admin.reset")
    async def reset() -> str:
        return "reset"

    return server


def _readme_acl() -> AccessControl:
    return AccessControl({"admin.*": ["admin"], "*": ["*"]}, roles={"alice": ["admin"]})


def test_readme_rules_role_user_and_anonymous() -> None:
    """The README example: alice (role admin) may call `admin.reset`; bob may not (403);
    any authenticated user may call the rest."""
    server = _server(_readme_acl())
    with serve_in_thread(server) as running:
        with RPC(running.url_for("alice", "a-pw"), timeout=5) as rpc:
            assert rpc.admin.reset() == "reset"
            assert rpc.whoami() == "alice"
        with RPC(running.url_for("bob", "b-pw"), timeout=5) as rpc:
            with pytest.raises(RestrictAccessError) as exc:
                rpc.admin.reset()
            assert exc.value.code == 403
            assert rpc.whoami() == "bob"


def test_anonymous_refused_by_any_user_rule() -> None:
    """ "`*` any authenticated user": an anonymous connection (on a server without
    accounts) gets 403 for a method the `"*": ["*"]` rule covers."""
    server = Server(("127.0.0.1", 0), interceptors=[_readme_acl()])

    @server.register_function()
    async def whoami() -> Any:
        return current_call().user

    with (
        serve_in_thread(server) as running,
        RPC(running.url, timeout=5) as rpc,
        pytest.raises(RestrictAccessError),
    ):
        rpc.whoami()


def test_rule_by_user_name() -> None:
    """ "403 by method pattern, user and role": a rule naming a user directly."""
    server = _server(AccessControl({"admin.*": ["carol"], "*": ["*"]}))
    with serve_in_thread(server) as running:
        with RPC(running.url_for("carol", "c-pw"), timeout=5) as rpc:
            assert rpc.admin.reset() == "reset"
        with (
            RPC(running.url_for("alice", "a-pw"), timeout=5) as rpc,
            pytest.raises(RestrictAccessError),
        ):
            rpc.admin.reset()


def test_rules_as_one_string_refused() -> None:
    """A list of names given as one string is refused (its letters would be names)."""
    with pytest.raises(TypeError):
        AccessControl({"admin.*": "admin"})  # type: ignore[dict-item]


def test_ratelimit_503_with_retry_after_in_data() -> None:
    """ "`RateLimit` (token bucket per user or peer; 503 with `RETRY_AFTER` in `DATA`)",
    and waiting RETRY_AFTER seconds lets the next call through."""
    server = _server(RateLimit(rate=5, burst=1, per="user"))
    with serve_in_thread(server) as running, RPC(running.url_for("bob", "b-pw"), timeout=5) as rpc:
        assert rpc.whoami() == "bob"
        with pytest.raises(RpcUnavailableException) as exc:
            rpc.whoami()
        assert exc.value.code == 503
        retry = exc.value.data["RETRY_AFTER"]
        assert isinstance(retry, (int, float)) and 0 < retry <= 0.2
        time.sleep(retry)
        assert rpc.whoami() == "bob"


def test_ratelimit_retry_after_reaches_mprpc01_client() -> None:
    """The 503's DATA reaches a plain MPRPC 0.1 peer too (no features)."""
    server = _server(RateLimit(rate=1, burst=1))
    with serve_in_thread(server), Raw(server.port) as raw:
        raw.login("bob", "b-pw")
        assert raw.call("1", "whoami")["CODE"] == 200
        reply = raw.call("2", "whoami")
    assert reply["CODE"] == 503
    assert 0 < reply["MESSAGE"]["DATA"]["RETRY_AFTER"] <= 1.0


def test_ratelimit_per_user_buckets_are_separate() -> None:
    """ "per user": bob's empty bucket does not limit alice (same peer address)."""
    server = _server(RateLimit(rate=0.5, burst=1, per="user"))
    with (
        serve_in_thread(server) as running,
        RPC(running.url_for("bob", "b-pw"), timeout=5) as bob,
        RPC(running.url_for("alice", "a-pw"), timeout=5) as alice,
    ):
        assert bob.whoami() == "bob"
        with pytest.raises(RpcUnavailableException):
            bob.whoami()
        assert alice.whoami() == "alice"


def test_ratelimit_per_peer_shares_a_bucket_across_users() -> None:
    """ "per ... peer": two users from one address share one bucket."""
    server = _server(RateLimit(rate=0.5, burst=1, per="peer"))
    with (
        serve_in_thread(server) as running,
        RPC(running.url_for("bob", "b-pw"), timeout=5) as bob,
        RPC(running.url_for("alice", "a-pw"), timeout=5) as alice,
    ):
        assert bob.whoami() == "bob"
        with pytest.raises(RpcUnavailableException):
            alice.whoami()


def test_ratelimit_refusal_kept_for_getresult_with_retry_after() -> None:
    """A RETURN-false call over the limit keeps its 503 (with RETRY_AFTER) for
    `system.getresult` (docs/protocol.md: the outcome is kept)."""
    server = _server(RateLimit(rate=1, burst=1))
    with serve_in_thread(server) as running, RPC(running.url_for("bob", "b-pw"), timeout=5) as rpc:
        assert rpc.whoami() == "bob"
        call_id = rpc.delay("whoami")
        with pytest.raises(RpcUnavailableException) as exc:
            rpc.system.getresult(call_id)
    assert exc.value.data and "RETRY_AFTER" in exc.value.data


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rate": 0},
        {"rate": -1},
        {"rate": float("nan")},
        {"rate": float("inf")},
        {"rate": 1, "burst": 0.5},
        {"rate": 1, "per": "host"},
        {"rate": 1, "max_keys": 0},
    ],
)
def test_ratelimit_bad_options_refused(kwargs: dict[str, Any]) -> None:
    """Its documented ValueErrors (a rate that is not a positive finite number, burst
    under 1, per neither "user" nor "peer", max_keys under 1)."""
    with pytest.raises(ValueError):
        RateLimit(**kwargs)


def test_ratelimit_fake_clock_retry_after_exact() -> None:
    """RETRY_AFTER is when a token is back: with a fake clock, a caller that waits that
    long is let through, one a millisecond early is not."""
    now = [1000.0]
    limit = RateLimit(rate=4, burst=1, clock=lambda: now[0])
    assert limit.take("k") == 0.0
    wait = limit.take("k")
    assert wait == pytest.approx(0.25)
    now[0] += 0.24
    assert limit.take("k") > 0
    now[0] += 0.25
    assert limit.take("k") == 0.0
