"""The same checks through the other ways of calling: by keyword, `with_options(...)`,
under a prefix, under a `@wire` name, and `RETURN: false` (`delay` + `system.getresult`):
wrong arguments and wrong results are refused and named alike."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from attacks_typed.kit import new_server, package, served

from pymprpc.client import RPC
from pymprpc.errors import MPRPCError, ParamError, RPCRuntimeError

IDL = """
struct Pt { x: float; }
service Forms {
    @wire("getUser") def get_user(p: Pt) -> int;
    def give(k: str) -> int;
    stream items(k: str) -> int;
}
"""


@pytest.fixture(scope="module")
def forms(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, str]]:
    with package(IDL, "forms_attack2", tmp_path_factory.mktemp("forms")) as mod:

        async def items(self: Any, k: str) -> AsyncIterator[Any]:
            yield 1
            yield int(k) if k.isdigit() else k

        methods = {
            "get_user": lambda self, p: 1 if p.x else "not an int",
            "give": lambda self, k: int(k) if k.isdigit() else k,
            "items": items,
        }
        server = new_server()
        mod.register_forms(server, type("F", (mod.FormsServicer,), methods)())
        mod.register_forms(server, type("F", (mod.FormsServicer,), methods)(), prefix="inv.")
        with served(server) as running:
            yield mod, running.url


def message(call: Any) -> str:
    with pytest.raises(MPRPCError) as info:
        call()
    return str(info.value)


def test_keyword_and_with_options_calls_are_checked(forms: tuple[Any, str]) -> None:
    mod, url = forms
    with mod.FormsClient(url) as client:
        assert client.give(k="7") == 7
        with pytest.raises(ParamError, match=r"^give\(\): k: expected str, got int"):
            client.give(k=7)
        with pytest.raises(ParamError, match=r"^getUser\(\): p\.x: expected float, got none"):
            client.with_options(timeout=5).get_user(p=mod.Pt(x=None))
        with pytest.raises(RPCRuntimeError, match=r"^ValidationError: give\(\): expected int"):
            client.with_options(timeout=5).give("x")


def test_results_kept_for_getresult_are_checked_too(forms: tuple[Any, str]) -> None:
    _, url = forms
    with RPC(url) as rpc:
        ids = [rpc.delay("give", "x"), rpc.delay("give", 5), rpc.delay("items", "x")]
        ids.append(rpc.delay("give", "8"))
        got = []
        for i in ids[:3]:
            with pytest.raises(MPRPCError) as info:
                rpc.system.getresult(i)
            got.append((type(info.value).__name__, info.value.exception, str(info.value)))
        assert rpc.system.getresult(ids[3]) == 8
    assert got == [
        ("RPCRuntimeError", "ValidationError", "ValidationError: give(): expected int, got str"),
        ("ParamError", "ParamError", "give(): k: expected str, got int"),
        (
            "RPCRuntimeError",
            "ValidationError",
            "ValidationError: items()[1]: expected int, got str",
        ),
    ]


def test_a_prefixed_service_refuses_like_the_plain_one(forms: tuple[Any, str]) -> None:
    mod, url = forms
    with mod.FormsClient(url, prefix="inv.") as client:
        assert client.give("3") == 3
        assert list(client.items("4")) == [1, 4]
        with pytest.raises(RPCRuntimeError, match=r"give\(\): expected int, got str"):
            client.give("x")
        with pytest.raises(RPCRuntimeError, match=r"items\(\)\[1\]: expected int, got str"):
            list(client.items("x"))


def test_client_and_server_name_a_wire_named_method_alike(forms: tuple[Any, str]) -> None:
    mod, url = forms
    with mod.FormsClient(url) as client, RPC(url) as rpc:
        from_client = message(lambda: client.get_user(mod.Pt(x="s")))
        from_server = message(lambda: rpc.getUser({"x": "s"}))
    assert from_client == from_server, (from_client, from_server)


def test_client_and_server_name_a_prefixed_method_alike(forms: tuple[Any, str]) -> None:
    mod, url = forms
    with mod.FormsClient(url, prefix="inv.") as client, RPC(url) as rpc:
        prefixed_client = message(lambda: client.get_user(mod.Pt(x="s")))
        prefixed_server = message(lambda: rpc.call("inv.getUser", {"x": "s"}))
    assert prefixed_client == prefixed_server, (prefixed_client, prefixed_server)
