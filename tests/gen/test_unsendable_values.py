"""A value MessagePack cannot carry inside an `any` (an integer past 64 bits, a set):
generated clients refuse the call before sending it with the ParamError a value of the
wrong type gets, naming the method as called (prefix included) and the parameter, on
every path a call takes (sync, async, with options, oneway, stream); the server answers
such a result or stream item with 405 naming the method. The connection stays usable."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from attacks_typed.kit import new_server, package, served

from pymprpc.client import RPC
from pymprpc.errors import LocalProtocolError, ParamError, ResultLimitError

IDL = """
struct Box { payload: any; }
service Loose {
    def echo(v: any) -> any;
    def boxed(b: Box) -> Box;
    def give(which: str) -> any;
    stream items(which: str) -> any;
    oneway def fire(v: any);
    def ok() -> int;
}
"""
HUGE = 2**64
UNSENDABLE = {"huge": [1, {"k": HUGE}], "set": {1, 2}}


class _Loose:
    def echo(self, v: Any) -> Any:
        return v

    def boxed(self, b: Any) -> Any:
        return b

    def give(self, which: str) -> Any:
        return UNSENDABLE[which]

    async def items(self, which: str) -> Any:
        yield 1
        yield UNSENDABLE[which]

    def fire(self, v: Any) -> None:
        return None

    def ok(self) -> int:
        return 41


@pytest.fixture(scope="module")
def loose(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, str]]:
    with package(IDL, "loose_values", tmp_path_factory.mktemp("loose")) as mod:
        server = new_server(executor="inline")
        servicer = type("L", (_Loose, mod.LooseServicer), {})()
        mod.register_loose(server, servicer)
        mod.register_loose(server, servicer, prefix="p.")
        with served(server) as running:
            yield mod, running.url


WHAT = {
    "huge": r"is the integer 18446744073709551616, outside MessagePack's 64-bit range",
    "set": r"is a set",
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("which", ["huge", "set"])
def test_sync_client_paths(loose: tuple[Any, str], which: str) -> None:
    mod, url = loose
    value = UNSENDABLE[which]
    with mod.LooseClient(url) as client, mod.LooseClient(url, prefix="p.") as prefixed:
        for call, start in (
            (lambda: client.echo(value), r"^echo\(\): v"),
            (lambda: client.with_options(timeout=5).echo(value), r"^echo\(\): v"),
            (lambda: prefixed.echo(value), r"^p\.echo\(\): v"),
            (lambda: client.boxed(mod.Box(payload=value)), r"^boxed\(\): b\['payload'\]"),
            (lambda: client.fire(value), r"^fire\(\): v"),  # oneway: not lost silently
        ):
            with pytest.raises(ParamError, match=start + r".*" + WHAT[which]):
                call()
        assert client.ok() == prefixed.ok() == 41  # nothing was sent


@pytest.mark.timeout(60)
@pytest.mark.parametrize("which", ["huge", "set"])
def test_async_client_paths(loose: tuple[Any, str], which: str) -> None:
    mod, url = loose
    value = UNSENDABLE[which]

    async def main() -> None:
        async with mod.AsyncLooseClient(url) as client:
            with pytest.raises(ParamError, match=r"^echo\(\): v.*" + WHAT[which]):
                await client.echo(value)  # the fast path: the client's own call
            with pytest.raises(ParamError, match=r"^echo\(\): v.*" + WHAT[which]):
                await client.with_options(timeout=5).echo(value)
            with pytest.raises(ParamError, match=r"^fire\(\): v"):
                await client.fire(value)
            assert await client.ok() == 41
        async with mod.AsyncLooseClient(url, prefix="p.") as prefixed:
            with pytest.raises(ParamError, match=r"^p\.echo\(\): v.*" + WHAT[which]):
                await prefixed.echo(value)

    asyncio.run(asyncio.wait_for(main(), 30))


@pytest.mark.timeout(60)
def test_an_untyped_client_still_raises_local_protocol_error(loose: tuple[Any, str]) -> None:
    _, url = loose
    with RPC(url) as rpc, pytest.raises(LocalProtocolError, match=r"is the integer"):
        rpc.echo([1, {"k": HUGE}])


@pytest.mark.timeout(60)
@pytest.mark.parametrize("which", ["huge", "set"])
def test_results_and_stream_items_name_the_method(loose: tuple[Any, str], which: str) -> None:
    mod, url = loose
    with mod.LooseClient(url) as client, mod.LooseClient(url, prefix="p.") as prefixed:
        with pytest.raises(ResultLimitError, match=r"^give\(\): result not delivered: .*"):
            client.give(which)
        with pytest.raises(ResultLimitError, match=r"^p\.give\(\): result not delivered"):
            prefixed.give(which)
        stream = client.items(which)
        assert next(stream) == 1
        with pytest.raises(ResultLimitError, match=r"^items\(\): stream item not delivered"):
            next(stream)
        assert client.ok() == 41
