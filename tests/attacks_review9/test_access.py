"""AccessControl: 403 by method pattern, user and role; no way around it by spelling."""

from __future__ import annotations

from typing import Any

import pytest

from attacks_review9.kit import Raw, new_server, serving
from pymprpc import RPC, Server
from pymprpc.errors import RestrictAccessError
from pymprpc.interceptors import AccessControl

pytestmark = pytest.mark.timeout(30)

USERS = [("alice", "a-pw"), ("bob", "b-pw"), ("a", "x"), ("carol", "c-pw")]


def build(access: AccessControl, **options: Any) -> Server:
    options.setdefault("auth", USERS)
    server = new_server(interceptors=[access], **options)

    @server.register_function("admin.reset")
    async def reset() -> str:
        return "reset"

    @server.register_function("public.info")
    async def info() -> str:
        return "info"

    @server.register_function("ünï.cødé")
    async def unicode() -> str:
        return "unicode"

    return server


def outcome(url: str, method: str) -> str:
    with RPC(url, timeout=5) as rpc:
        try:
            return str(rpc.method(method)())
        except RestrictAccessError:
            return "403"


def test_readme_rules() -> None:
    access = AccessControl({"admin.*": ["admin"], "*": ["*"]}, roles={"alice": ["admin"]})
    with serving(build(access)) as running:
        assert outcome(running.url_for("alice", "a-pw"), "admin.reset") == "reset"
        assert outcome(running.url_for("bob", "b-pw"), "admin.reset") == "403"
        assert outcome(running.url_for("bob", "b-pw"), "public.info") == "info"
        assert outcome(running.url_for("bob", "b-pw"), "ünï.cødé") == "unicode"


def test_first_matching_pattern_decides() -> None:
    access = AccessControl({"*": ["*"], "admin.*": ["admin"]}, roles={"alice": ["admin"]})
    with serving(build(access)) as running:
        # "*" comes first: the admin rule is never reached (documented: first match).
        assert outcome(running.url_for("bob", "b-pw"), "admin.reset") == "reset"


def test_anonymous_refused_by_any_matching_rule() -> None:
    access = AccessControl({"admin.*": ["*"]})
    with serving(build(access, auth=None)) as running:
        assert outcome(running.url, "admin.reset") == "403"
        assert outcome(running.url, "public.info") == "info"  # no rule, no default


def test_default_applies_when_no_rule_matches() -> None:
    access = AccessControl({"public.*": ["*"]}, default=["alice"])
    with serving(build(access)) as running:
        assert outcome(running.url_for("bob", "b-pw"), "admin.reset") == "403"
        assert outcome(running.url_for("alice", "a-pw"), "admin.reset") == "reset"
        assert outcome(running.url_for("bob", "b-pw"), "public.info") == "info"


@pytest.mark.parametrize(
    "name",
    [
        "ADMIN.RESET",
        "Admin.reset",
        " admin.reset",
        "admin.reset ",
        "admin..reset",
        "admin.reset\x00",
        "admin.reset\n",
        "admin.\u200breset",
        "admin\uff0ereset",  # fullwidth full stop
        "./admin.reset",
        "system.admin.reset",
    ],
)
def test_spelling_tricks_do_not_reach_a_protected_method(name: str) -> None:
    access = AccessControl({"admin.*": ["admin"], "*": ["*"]}, roles={"alice": ["admin"]})
    with serving(build(access)) as running, Raw(running.server.port) as raw:
        raw.login("bob", "b-pw")
        raw.call("x", name)
        reply = raw.recv()
        assert reply["CODE"] in (401, 403, 406), reply


def test_rule_given_as_a_string_does_not_allow_single_letter_users() -> None:
    try:
        access = AccessControl({"admin.*": "alice"})  # type: ignore[dict-item]
    except TypeError:
        return
    with serving(build(access)) as running:
        assert outcome(running.url_for("a", "x"), "admin.reset") == "403"
        assert outcome(running.url_for("alice", "a-pw"), "admin.reset") == "reset"


def test_system_methods_follow_the_rules() -> None:
    access = AccessControl({"system.*": ["admin"], "*": ["*"]}, roles={"alice": ["admin"]})
    with serving(build(access)) as running, RPC(running.url_for("bob", "b-pw"), timeout=5) as rpc:
        with pytest.raises(RestrictAccessError):
            rpc.system.health()
        kept = rpc.delay("public.info")
        with pytest.raises(RestrictAccessError):
            rpc.system.getresult(kept)
