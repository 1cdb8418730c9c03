"""Results and stream items of every declared type: enums come back as members, structs as
dataclasses, a wrong value fails the call with 404 whose EXCEPTION is `ValidationError`
naming the method (and the item index and path for streams) for every caller, and the
generated clients check what an unchecking server (hand-registered functions of the same
names) sends them. The server keeps serving throughout."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from attacks_typed.kit import new_server, package, served

from pymprpc.client import RPC, AsyncRPC
from pymprpc.errors import MPRPCError, RPCRuntimeError, ValidationError

TYPES = {
    "t_color": "Color",
    "t_pt": "Pt",
    "t_opt_pt": "Pt?",
    "t_pts": "list<Pt>",
    "t_map": "map<str, Pt?>",
    "t_colors": "list<Color?>",
    "t_bytes": "bytes",
    "t_none": "none",
    "t_nested": "map<str, list<map<str, Color>>>",
}
IDL = (
    "enum Color { RED = 1; GREEN = 2; }\n"
    "struct Pt { x: float; y: int = 0; }\n"
    "service Out {\n"
    + "".join(f"    def {m}() -> {t};\n" for m, t in TYPES.items())
    + "".join(f"    async def a{m}() -> {t};\n" for m, t in TYPES.items())
    + "".join(f"    stream s{m}() -> {t};\n" for m, t in TYPES.items() if t != "none")
    + "    def ok() -> int;\n}\n"
)


class Slot:
    """The value the handlers return next (each test sets it; tests in one process run
    one at a time)."""

    value: Any = None
    lock = threading.Lock()


def build(mod: Any, slot: Slot) -> Any:
    methods: dict[str, Any] = {"ok": lambda self: 41}
    for m in TYPES:

        async def coro(self: Any) -> Any:
            return slot.value

        async def gen(self: Any, _m: str = m) -> AsyncIterator[Any]:
            yield real(mod, first_item[_m], wire=False)
            yield slot.value

        methods[m] = lambda self: slot.value
        methods[f"a{m}"] = coro
        if m != "t_none":
            methods[f"s{m}"] = gen
    return type("O", (mod.OutServicer,), methods)()


# A good first item per method: the wrong one is then index [1].
first_item: dict[str, Any] = {}


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, str, Slot]]:
    slot = Slot()
    with package(IDL, "out_attack2", tmp_path_factory.mktemp("out")) as mod:
        first_item.update(
            t_color=mod.Color.RED,
            t_pt=P(x=1.0),
            t_opt_pt=None,
            t_pts=[],
            t_map={},
            t_colors=[None],
            t_bytes=b"",
            t_none=None,
            t_nested={"k": [{"c": mod.Color.GREEN}]},
        )
        server = new_server()
        mod.register_out(server, build(mod, slot))
        with served(server) as running:
            yield mod, running.url, slot


class P:
    """A Pt written in a table: a dataclass for the typed server, a map for the wire."""

    def __init__(self, **fields: Any) -> None:
        self.fields = fields

    def __repr__(self) -> str:  # test ids must be the same in every xdist worker
        return "P(" + ", ".join(f"{k}={v!r}" for k, v in self.fields.items()) + ")"


def real(mod: Any, v: Any, wire: bool) -> Any:
    """`v` with every P made a `Pt` (constructed unchecked) or, for the wire, a map."""
    if isinstance(v, P):
        return dict(v.fields) if wire else mod.Pt(**v.fields)
    if isinstance(v, list):
        return [real(mod, x, wire) for x in v]
    if isinstance(v, dict):
        return {k: real(mod, x, wire) for k, x in v.items()}
    return v


def goods(mod: Any) -> list[tuple[str, Any, Any]]:
    """(method, value returned, value the generated client must give back)."""
    pt = mod.Pt
    red, green = mod.Color.RED, mod.Color.GREEN
    return [
        ("t_color", 2, green),
        ("t_color", red, red),
        ("t_pt", P(x=1), pt(x=1.0)),
        ("t_opt_pt", None, None),
        ("t_opt_pt", P(x=0.5, y=2), pt(x=0.5, y=2)),
        ("t_pts", [P(x=1), P(x=2.0)], [pt(x=1.0), pt(x=2.0)]),
        ("t_map", {"a": None, "b": P(x=3)}, {"a": None, "b": pt(x=3.0)}),
        ("t_colors", [None, 1, green], [None, red, green]),
        ("t_bytes", b"\x00\xff", b"\x00\xff"),
        ("t_none", None, None),
        ("t_nested", {"a": [{"x": 1}, {}], "b": []}, {"a": [{"x": red}, {}], "b": []}),
    ]


def bads() -> list[tuple[str, Any, str]]:
    """(method, wrong value returned, where the message must point after `method()`)."""
    return [
        ("t_color", 3, ": 3 is not a Color"),
        ("t_color", True, ": expected Color, got bool"),
        ("t_color", 1.0, ": expected Color, got float"),
        ("t_color", "RED", ": expected Color, got str"),
        ("t_pt", P(x="1"), r"\.x: expected float, got str"),
        ("t_pt", [1.0, 0], ": expected Pt, got list"),
        ("t_pt", P(x=1, y=2**64), r"\.y: .*64-bit"),
        ("t_opt_pt", P(x=None), r"\.x: expected float, got none"),
        ("t_pts", [P(x=1), None], r"\[1\]: expected Pt, got none"),
        ("t_pts", P(x=1), ": expected list<Pt>, got (map|Pt)"),
        ("t_map", {"a": P(x=True)}, r"\['a'\]\.x: expected float, got bool"),
        ("t_map", {1: None}, r"\[1\]: map keys must be str, got int"),
        ("t_colors", [None, 0], r"\[1\]: 0 is not a Color"),
        ("t_bytes", "x", ": expected bytes, got str"),
        ("t_none", 0, ": expected none, got int"),
        ("t_none", {}, ": expected none, got map"),
        ("t_nested", {"a": [{"x": 2}, {"y": 3}]}, r"\['a'\]\[1\]\['y'\]: 3 is not a Color"),
    ]


def outcome(call: Any) -> tuple[str, str]:
    try:
        return "ok", repr(call())
    except MPRPCError as exc:
        return type(exc).__name__ + "/" + str(exc.exception), str(exc)


@pytest.mark.parametrize("kind", ["def", "async", "stream"])
def test_good_results_come_back_typed(out: tuple[Any, str, Slot], kind: str) -> None:
    mod, url, slot = out
    with mod.OutClient(url) as client:
        for method, value, want in goods(mod):
            slot.value = real(mod, value, wire=False)
            if kind == "def":
                got = getattr(client, method)()
            elif kind == "async":
                got = getattr(client, f"a{method}")()
            elif method == "t_none":
                continue  # a stream declares an item type
            else:
                got = list(getattr(client, f"s{method}")())[1]
            assert got == want, (method, value, got)
            assert type(got) is type(want), (method, value, got)


@pytest.mark.parametrize("kind", ["def", "async"])
@pytest.mark.parametrize(
    ("method", "value", "where"), bads(), ids=[f"{b[0]}-{b[1]!r}" for b in bads()]
)
def test_wrong_results_are_404_validation_errors_for_every_caller(
    out: tuple[Any, str, Slot], kind: str, method: str, value: Any, where: str
) -> None:
    mod, url, slot = out
    name = method if kind == "def" else f"a{method}"
    slot.value = real(mod, value, wire=False)
    pattern = rf"^ValidationError: {name}\(\){where}"
    with mod.OutClient(url) as client, RPC(url) as rpc:
        for caller in (client, rpc):
            with pytest.raises(RPCRuntimeError, match=pattern) as info:
                getattr(caller, name)()
            assert info.value.exception == "ValidationError"
        assert client.ok() == 41


STREAM_BADS = [b for b in bads() if b[0] != "t_none"]


@pytest.mark.parametrize(
    ("method", "value", "where"), STREAM_BADS, ids=[f"{b[0]}-{b[1]!r}" for b in STREAM_BADS]
)
def test_wrong_stream_items_are_404_validation_errors_with_their_index(
    out: tuple[Any, str, Slot], method: str, value: Any, where: str
) -> None:
    mod, url, slot = out
    slot.value = real(mod, value, wire=False)
    pattern = rf"^ValidationError: s{method}\(\)\[1\]{where}"
    with mod.OutClient(url) as client, RPC(url) as rpc:
        got: list[Any] = []
        with pytest.raises(RPCRuntimeError, match=pattern) as info:
            got.extend(getattr(client, f"s{method}")())
        assert info.value.exception == "ValidationError"
        assert got == [
            real(mod, first_item[method], wire=False)
        ]  # the good item before it was delivered
        with pytest.raises(RPCRuntimeError, match=pattern):
            list(getattr(rpc, f"s{method}")())
        assert client.ok() == 41


def test_the_async_clients_see_the_same_result_errors(out: tuple[Any, str, Slot]) -> None:
    mod, url, slot = out

    async def main() -> list[str]:
        seen = []
        async with mod.AsyncOutClient(url) as client, AsyncRPC(url) as arpc:
            for method, value, _ in bads():
                slot.value = real(mod, value, wire=False)
                for caller, name in ((client, method), (client, f"a{method}"), (arpc, method)):
                    try:
                        await getattr(caller, name)()
                    except RPCRuntimeError as exc:
                        assert exc.exception == "ValidationError"
                        seen.append(str(exc))
                if method == "t_none":
                    continue
                try:
                    _ = [x async for x in getattr(client, f"s{method}")()]
                except RPCRuntimeError as exc:
                    seen.append(str(exc))
            assert await client.ok() == 41
        return seen

    seen = asyncio.run(asyncio.wait_for(main(), 30))
    assert len(seen) == 3 * len(bads()) + len(STREAM_BADS), seen


@pytest.fixture(scope="module")
def unchecked(out: tuple[Any, str, Slot]) -> Iterator[tuple[Any, str, Slot]]:
    """A server that answers the same method names with plain functions: no result types."""
    mod, _, _ = out
    slot = Slot()
    server = new_server()
    for m in TYPES:
        server.register_function(m, executor="thread")(lambda: slot.value)
        if m == "t_none":
            continue

        async def gen(_m: str = m) -> AsyncIterator[Any]:
            yield real(mod, first_item[_m], wire=True)
            yield slot.value

        server.register_function(f"s{m}")(gen)
    with served(server) as running:
        yield mod, running.url, slot


@pytest.mark.parametrize(
    ("method", "value", "where"), bads(), ids=[f"{b[0]}-{b[1]!r}" for b in bads()]
)
def test_generated_clients_check_results_of_an_unchecking_server(
    unchecked: tuple[Any, str, Slot], method: str, value: Any, where: str
) -> None:
    mod, url, slot = unchecked
    if "64-bit" in where:  # the unchecking server could not send it
        return
    slot.value = real(mod, value, wire=True)
    with mod.OutClient(url) as client:
        with pytest.raises(ValidationError, match=rf"^{method}\(\){where}"):
            getattr(client, method)()
        if method != "t_none":
            with pytest.raises(ValidationError, match=rf"^s{method}\(\)\[1\]{where}"):
                list(getattr(client, f"s{method}")())

    async def main() -> None:
        async with mod.AsyncOutClient(url) as client:
            with pytest.raises(ValidationError, match=rf"^{method}\(\){where}"):
                await getattr(client, method)()
            if method != "t_none":
                with pytest.raises(ValidationError, match=rf"^s{method}\(\)\[1\]{where}"):
                    _ = [x async for x in getattr(client, f"s{method}")()]

    asyncio.run(asyncio.wait_for(main(), 20))


def test_generated_clients_accept_good_results_of_an_unchecking_server(
    unchecked: tuple[Any, str, Slot],
) -> None:
    mod, url, slot = unchecked
    with mod.OutClient(url) as client:
        for method, value, want in goods(mod):
            slot.value = real(mod, value, wire=True)
            got = getattr(client, method)()
            assert got == want and type(got) is type(want), (method, value, got)


def test_a_plain_answer_to_a_stream_call_is_a_validation_error(
    out: tuple[Any, str, Slot],
) -> None:
    mod, _, _ = out
    server = new_server()
    server.register_function("st_color", executor="thread")(lambda: 1)
    seen: list[str] = []
    with served(server) as running, mod.OutClient(running.url) as client:
        try:
            list(client.st_color())
        except (MPRPCError, TypeError) as exc:
            seen.append(f"{type(exc).__name__}: {exc}")

        async def main() -> None:
            async with mod.AsyncOutClient(running.url) as aclient:
                try:
                    _ = [x async for x in aclient.st_color()]
                except (MPRPCError, TypeError) as exc:
                    seen.append(f"{type(exc).__name__}: {exc}")

        asyncio.run(asyncio.wait_for(main(), 20))
    assert len(seen) == 2 and all(s.startswith("ValidationError: st_color()") for s in seen), seen


def test_a_stream_answer_to_a_unary_call_is_a_validation_error(
    out: tuple[Any, str, Slot],
) -> None:
    mod, _, _ = out
    server = new_server()

    async def colors() -> AsyncIterator[int]:
        for _ in range(3):
            yield 1

    server.register_function("t_color")(colors)
    server.register_function("t_bytes", executor="thread")(lambda: b"ok")
    with served(server) as running, mod.OutClient(running.url) as client:
        with pytest.raises(ValidationError, match=r"^t_color\(\): expected Color, got "):
            client.t_color()
        assert client.t_bytes() == b"ok"  # the connection goes on

        async def main() -> bytes:
            async with mod.AsyncOutClient(running.url) as aclient:
                with pytest.raises(ValidationError, match=r"^t_color\(\): expected Color"):
                    await aclient.t_color()
                return bytes(await aclient.t_bytes())

        assert asyncio.run(asyncio.wait_for(main(), 20)) == b"ok"
