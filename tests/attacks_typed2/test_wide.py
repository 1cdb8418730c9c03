"""Wide values: a list of 100,000 ints or a map of 20,000 structs is checked on both sides
in memory proportional to nothing more than the value (tracemalloc, generous bounds, no
timing); a wrong element at the far end is named by its index; an error naming a huge map
key stays short, on the client and in the server's 402."""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest
from attacks_typed.kit import new_server, package, served

from pymprpc.client import RPC
from pymprpc.errors import MPRPCError, ParamError

IDL = """
struct Pt { x: float; y: int = 0; }
service Wide {
    def count(v: list<int>) -> int;
    def count_pts(m: map<str, Pt>) -> int;
    def keyed(m: map<str, map<str, list<int>>>) -> int;
    def make(n: int) -> list<int>;
    stream many(n: int) -> int;
    def ok() -> int;
}
"""
N = 100_000
MiB = 1 << 20


@pytest.fixture(scope="module")
def wide(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, str]]:
    with package(IDL, "wide_attack2", tmp_path_factory.mktemp("wide")) as mod:

        async def many(self: Any, n: int) -> Any:
            for i in range(n):
                yield i
            yield "x"

        methods = {
            "many": many,
            "count": lambda self, v: len(v),
            "count_pts": lambda self, m: sum(p.y for p in m.values()),
            "keyed": lambda self, m: len(m),
            "make": lambda self, n: [*range(-n - 1), "x"] if n < 0 else list(range(n)),
            "ok": lambda self: 41,
        }
        server = new_server()
        mod.register_wide(server, type("W", (mod.WideServicer,), methods)())
        with served(server) as running:
            yield mod, running.url


def peak_of(call: Any) -> tuple[Any, int]:
    """(what `call` returned or raised, peak bytes traced during it)."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        try:
            got: Any = call()
        except ParamError as exc:
            got = exc
        peak = tracemalloc.get_traced_memory()[1]
        print(f"peak {peak / MiB:.1f} MiB")  # shown with -s: the figures of the report
        return got, peak
    finally:
        tracemalloc.stop()


def test_a_wrong_last_element_of_a_wide_list_is_named_without_copying_much(
    wide: tuple[Any, str],
) -> None:
    mod, url = wide
    values: list[Any] = list(range(N))
    values[-1] = "x"
    with mod.WideClient(url) as client:
        got, peak = peak_of(lambda: client.count(values))
        assert client.ok() == 41
    assert isinstance(got, ParamError) and str(got) == (
        f"count(): v[{N - 1}]: expected int, got str"
    )
    assert peak < 4 * MiB, peak  # the list itself is ~0.8 MB of pointers and not copied


def test_a_wide_list_round_trips_in_bounded_memory(wide: tuple[Any, str]) -> None:
    mod, url = wide
    values = list(range(N))
    with mod.WideClient(url) as client, RPC(url) as rpc:
        # Client check, encoding, the server's decode and check (same process), and back.
        got, peak = peak_of(lambda: client.count(values))
        assert got == N
        assert peak < 64 * MiB, peak
        got, peak = peak_of(lambda: client.make(N))
        assert got == values
        assert peak < 64 * MiB, peak
        with pytest.raises(ParamError, match=rf"^count\(\): v\[{N - 1}\]: expected int, got str"):
            rpc.count([*range(N - 1), "x"])
        with pytest.raises(Exception, match=rf"make\(\)\[{N - 1}\]: expected int, got str"):
            client.make(-N)


def test_a_long_stream_fails_at_its_wrong_item_after_delivering_the_rest(
    wide: tuple[Any, str],
) -> None:
    mod, url = wide
    n = 10_000
    with mod.WideClient(url) as client, RPC(url) as rpc:
        for caller in (client, rpc):
            got: list[int] = []
            with pytest.raises(MPRPCError, match=rf"many\(\)\[{n}\]: expected int, got str"):
                got.extend(caller.many(n))
            assert got == list(range(n))
        assert client.ok() == 41


def test_a_wide_map_of_structs(wide: tuple[Any, str]) -> None:
    mod, url = wide
    pts = {f"k{i}": mod.Pt(x=i, y=1) for i in range(20_000)}
    with mod.WideClient(url) as client, RPC(url) as rpc:
        assert client.count_pts(pts) == 20_000
        pts["k19999"] = mod.Pt(x=1, y=True)
        with pytest.raises(ParamError, match=r"^count_pts\(\): m\['k19999'\]\.y: expected int"):
            client.count_pts(pts)
        wire = {f"k{i}": {"x": i, "y": 1} for i in range(20_000)}
        wire["k7"] = {"x": "7"}
        with pytest.raises(ParamError, match=r"^count_pts\(\): m\['k7'\]\.x: expected float"):
            rpc.count_pts(wire)


@pytest.mark.parametrize("size", [1_000, 1_000_000])
def test_messages_naming_huge_keys_stay_short(wide: tuple[Any, str], size: int) -> None:
    mod, url = wide
    k1, k2 = "a" * size, "\u00e9" * size
    bad = {k1: {k2: [1, 2, "x"]}}
    with mod.WideClient(url) as client, RPC(url) as rpc:
        messages = []
        for caller in (client, rpc):
            with pytest.raises(ParamError, match=r"^keyed\(\): m\[") as info:
                caller.keyed(bad)
            messages.append(str(info.value))
        # A key that is not a string is named too, and as briefly.
        with pytest.raises(ParamError, match=r"^keyed\(\): m\[") as info:
            rpc.keyed({b"b" * size: {}})
        messages.append(str(info.value))
        assert client.ok() == 41
    assert messages[0] == messages[1], messages  # client and server say the same
    assert messages[0].endswith("[2]: expected int, got str"), messages[0][-80:]
    assert all(len(m) < 500 for m in messages), [len(m) for m in messages]


MANY = 500
MANY_IDL = (
    "enum Many { "
    + "".join(f"M{i:03d}_{'X' * 30} = {i}; " for i in range(1, MANY + 1))
    + "}\nservice Pick { def pick(m: Many) -> Many; def give(k: int) -> Many; }\n"
)


def test_a_wrong_value_of_a_large_enum_has_a_short_message(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    with package(MANY_IDL, "many_attack2", tmp_path_factory.mktemp("many")) as mod:
        server = new_server()
        impl = type("P", (mod.PickServicer,), {"pick": lambda s, m: m, "give": lambda s, k: k})
        mod.register_pick(server, impl())
        with served(server) as running:
            client, rpc = mod.PickClient(running.url), RPC(running.url)
            with client, rpc:
                messages = []
                for call in (lambda: client.pick(0), lambda: rpc.pick(0), lambda: client.give(0)):
                    with pytest.raises(MPRPCError, match=r"0 is not a Many") as info:
                        call()
                    messages.append(str(info.value))
                assert client.pick(mod.Many(MANY)) == mod.Many(MANY)
    assert all(len(m) <= 2000 for m in messages), [len(m) for m in messages]
