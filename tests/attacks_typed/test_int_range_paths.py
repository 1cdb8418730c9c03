"""The int range of typed calls on every path: since the server's fast lane leaves the
range test to MessagePack (it decodes nothing out of range) and the async typed client
leaves an out-of-range int to the packer (re-deriving the error afterwards), every client
shape (blocking, asyncio, prefix, with_options, interceptors, not yet connected) must still
refuse an int outside [-2**63, 2**64-1] with the same ParamError text, before anything is
sent, naming the method as called and the parameter; the server must still refuse what
untyped MessagePack and JSON clients send; `Signature`'s public methods must agree.
Signatures of 0, 1, 2, 16 (compiled, unrolled), 17 and 20 (checked in a loop) parameters."""

from __future__ import annotations

import asyncio
import enum
import json
import socket
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pymprpc.client import RPC, AsyncRPC
from pymprpc.errors import (
    ParamError,
    RemoteProtocolError,
    ResultLimitError,
    RPCRuntimeError,
    ValidationError,
)
from pymprpc.protocol.codec import shared_codec

from .kit import SEP, new_server, package, served

pytestmark = pytest.mark.timeout(60)

I64_MIN, U64_MAX = -(2**63), 2**64 - 1
RANGE = f"integer out of MessagePack's 64-bit range [{I64_MIN}, {U64_MAX}]"
OUT = [U64_MAX + 1, I64_MIN - 1, 2**100, 10**400]  # under the 4300 digits str() allows
HUGE = 10**5000  # str() of it raises ValueError (Python 3.11+'s int_max_str_digits)
SIZES = [1, 2, 16, 17, 20]


def _params(n: int) -> str:
    return ", ".join(f"p{i}: int" for i in range(n))


IDL = (
    """
enum Color { RED = 1; GREEN = 2; }
struct Pt { x: float; y: int = 0; }
service Ranges {
    def z() -> int;
"""
    + "".join(f"    def i{n}({_params(n)}) -> int;\n" for n in SIZES)
    + """
    def mix(a: int, b: float, c: str, d: bytes, e: bool, f: any, g: list<int>, h: int?,
            p: Pt, col: Color, k: int = 7) -> str;
    def anyp(v: any) -> str;
    def jmix(a: int, g: list<int>, h: int?, p: Pt, col: Color, f: any, k: int = 7) -> str;
    def res(kind: int) -> int;
    stream count(n: int) -> int;
    def ex(a: int, b: any, c: float, d: str, e: bytes, f: bool, g: int) -> str;
    def dflt(a: int, b: int = 5, c: float = 1.5, d: int? = none) -> str;
    oneway def note(n: int);
}
"""
)


# What `res(kind)` returns: none of it is a valid `int` result.
class Color(enum.IntEnum):
    RED = 1
    BIG = 2**64  # an IntEnum member out of the wire's range


class MyInt(int):
    pass


BAD_RESULTS: list[Any] = [U64_MAX + 1, I64_MIN - 1, 10**400, True, "3", 3.0, None, [3]]
BAD_RESULTS += [Color.BIG, MyInt(U64_MAX + 1), MyInt(I64_MIN - 1)]
# Results of int subclasses in range: the client gets a plain int of the same value.
GOOD_RESULTS: list[Any] = [Color.RED, MyInt(5), MyInt(U64_MAX), MyInt(I64_MIN)]


_SERVICERS: dict[str, Any] = {}  # the fixture's servicer, for servers of a test's own


@pytest.fixture(scope="module")
def ranges(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, str]]:
    directory = tmp_path_factory.mktemp("ranges")
    with package(IDL, "int_ranges", directory) as mod:
        methods: dict[str, Any] = {"z": lambda self: 0}
        for n in SIZES:
            # The last argument, so that arguments swapped or lost show.
            names = ", ".join(f"p{i}" for i in range(n))
            methods[f"i{n}"] = _handler(f"def f(self, {names}):\n    return p{n - 1}\n")
        methods["mix"] = _handler(
            "def f(self, a, b, c, d, e, f, g, h, p, col, k=7):\n"
            "    return repr((a, b, c, d, e, f, g, h, p.x, p.y, int(col), k))[:200]\n"
        )
        methods["jmix"] = _handler(
            "def f(self, a, g, h, p, col, f, k=7):\n"
            "    return repr((a, g, h, p.y, int(col), f, k))\n"
        )
        methods["anyp"] = lambda self, v: repr(v)[:80]
        methods["res"] = lambda self, kind: (
            BAD_RESULTS[kind] if kind >= 0 else GOOD_RESULTS[-kind - 1]
        )
        methods["count"] = _handler(
            "async def f(self, n):\n    for i in range(n):\n        yield i\n"
        )
        methods["note"] = lambda self, n: None
        methods["ex"] = _handler(
            "def f(self, a, b, c, d, e, f, g):\n"
            "    return repr([(type(v).__name__, v) for v in (a, b, c, d, e, f, g)])\n"
        )
        methods["dflt"] = _handler(
            "def f(self, a, b=99, c=99.0, d=99):\n"
            "    return repr([(type(v).__name__, v) for v in (a, b, c, d)])\n"
        )
        servicer = type("RangesImpl", (mod.RangesServicer,), methods)()
        _SERVICERS[mod.__name__] = servicer
        server = new_server()
        mod.register_ranges(server, servicer)
        mod.register_ranges(server, servicer, prefix="pre.")
        with served(server) as running:
            yield mod, running.url


def _handler(source: str) -> Any:
    namespace: dict[str, Any] = {}
    exec(source, namespace)  # our own source: handlers with explicit parameter names
    return namespace["f"]


def good_args(n: int) -> list[int]:
    return list(range(n))


async def _through(ctx: Any, call_next: Any) -> Any:
    return await call_next(ctx)


def _sync_outcome(call: Any) -> tuple[str, Any]:
    try:
        return "ok", call()
    except ParamError as exc:
        return "param", str(exc)


async def _async_outcome(call: Any) -> tuple[str, Any]:
    try:
        return "ok", await call()
    except ParamError as exc:
        return "param", str(exc)


# How an async typed client is made: "timeout" (a client-wide deadline: the call's map is
# packed whole) and "zlib" (compression: the codec's general path) keep the plain call.
ASYNC_SHAPES = [
    "plain",
    "prefix",
    "with_options",
    "interceptor",
    "prefix+with_options",
    "timeout",
    "zlib",
]
_OPTIONS: dict[str, dict[str, Any]] = {
    "interceptor": {"interceptors": [_through]},
    "timeout": {"timeout": 5},
    "zlib": {"compression": "zlib"},
    "json": {"debug": True},
}


def _async_client(mod: Any, url: str, shape: str) -> tuple[Any, str]:
    prefix = "pre." if "prefix" in shape else ""
    return mod.AsyncRangesClient(url, prefix=prefix, **_OPTIONS.get(shape, {})), prefix


def _view(client: Any, shape: str) -> Any:
    return client.with_options(timeout=5) if "with_options" in shape else client


# -- 1. typed clients: out-of-range ints -------------------------------------------------


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("value", OUT, ids=["2**64", "-2**63-1", "2**100", "1e400"])
def test_blocking_and_async_clients_refuse_an_out_of_range_int_alike(
    ranges: tuple[Any, str], n: int, value: int
) -> None:
    mod, url = ranges
    positions = sorted({0, n // 2, n - 1})
    sync_got = {}
    with mod.RangesClient(url) as client:
        for at in positions:
            args = good_args(n)
            args[at] = value
            sync_got[at] = _sync_outcome(lambda: getattr(client, f"i{n}")(*args))  # noqa: B023
            assert sync_got[at] == ("param", f"i{n}(): p{at}: {RANGE}")
        assert getattr(client, f"i{n}")(*good_args(n)) == n - 1  # the connection goes on

    async def run(shape: str) -> None:
        client, prefix = _async_client(mod, url, shape)
        async with client:
            view = _view(client, shape)
            for at in positions:
                args = good_args(n)
                args[at] = value
                got = await _async_outcome(lambda: getattr(view, f"i{n}")(*args))  # noqa: B023
                want = sync_got[at][1].replace(f"i{n}()", f"{prefix}i{n}()")
                assert got == ("param", want), shape
                assert not client.rpc._pending, "a refused call left an ID awaiting a reply"
            assert await getattr(view, f"i{n}")(*good_args(n)) == n - 1

    async def main() -> None:
        for shape in ASYNC_SHAPES:
            await run(shape)

    asyncio.run(main())


@pytest.mark.parametrize("value", [I64_MIN, U64_MAX, 0, -1, 2**63 - 1, 2**63])
@pytest.mark.parametrize("n", SIZES)
def test_edges_go_through_every_client_shape(ranges: tuple[Any, str], n: int, value: int) -> None:
    mod, url = ranges
    args = good_args(n)
    args[-1] = value
    with mod.RangesClient(url) as client:
        assert getattr(client, f"i{n}")(*args) == value

    async def main() -> None:
        for shape in ASYNC_SHAPES:
            client, _ = _async_client(mod, url, shape)
            async with client:
                got = await getattr(_view(client, shape), f"i{n}")(*args)
                assert type(got) is int and got == value, shape

    asyncio.run(main())


def test_mixed_signature_names_the_int_parameter_out_of_range(ranges: tuple[Any, str]) -> None:
    mod, url = ranges
    base: dict[str, Any] = dict(
        a=1, b=1.5, c="s", d=b"b", e=True, f=[1], g=[1], h=None, p=mod.Pt(x=1.0, y=2), col=1
    )
    cases = [("a", U64_MAX + 1, "a"), ("h", I64_MIN - 1, "h"), ("k", 10**400, "k")]
    cases += [("b", 10**400, "b")]  # a float parameter: an int too large for a float
    for name, value, where in cases:
        kwargs = {**base, name: value}
        with mod.RangesClient(url) as client:
            sync_got = _sync_outcome(lambda: client.mix(**kwargs))  # noqa: B023
        assert sync_got[0] == "param" and sync_got[1].startswith(f"mix(): {where}"), sync_got

        async def main(kwargs: dict[str, Any] = kwargs) -> tuple[str, Any]:
            async with mod.AsyncRangesClient(url) as client:
                got = await _async_outcome(lambda: client.mix(**kwargs))
                assert await client.mix(**base) == await client.mix(**base)
                return got

        assert asyncio.run(main()) == sync_got


def test_out_of_range_ints_in_a_list_param_and_a_struct_field(ranges: tuple[Any, str]) -> None:
    mod, url = ranges
    base: dict[str, Any] = dict(
        a=1, b=1.5, c="s", d=b"b", e=True, f=None, g=[1], h=None, p=mod.Pt(x=1.0, y=2), col=1
    )
    for patch, where in [
        ({"g": [0, U64_MAX + 1]}, "mix(): g[1]"),
        ({"p": mod.Pt(x=1.0, y=I64_MIN - 1)}, "mix(): p.y"),
    ]:
        kwargs = {**base, **patch}
        with mod.RangesClient(url) as client:
            sync_got = _sync_outcome(lambda: client.mix(**kwargs))  # noqa: B023
        assert sync_got[0] == "param" and sync_got[1].startswith(where), sync_got

        async def main(kwargs: dict[str, Any] = kwargs) -> tuple[str, Any]:
            async with mod.AsyncRangesClient(url) as client:
                return await _async_outcome(lambda: client.mix(**kwargs))

        assert asyncio.run(main()) == sync_got


def test_out_of_range_int_inside_an_any_param(ranges: tuple[Any, str]) -> None:
    mod, url = ranges
    for value in [U64_MAX + 1, {"k": [0, I64_MIN - 1]}, 10**400]:
        with mod.RangesClient(url) as client:
            sync_got = _sync_outcome(lambda: client.anyp(value))  # noqa: B023
            assert client.anyp(5) == "5"
        assert sync_got[0] == "param" and sync_got[1].startswith("anyp(): v"), sync_got

        async def main(value: Any = value) -> tuple[str, Any]:
            async with mod.AsyncRangesClient(url) as client:
                got = await _async_outcome(lambda: client.anyp(value))
                assert not client.rpc._pending
                assert await client.anyp(5) == "5"
                return got

        assert asyncio.run(main()) == sync_got


@pytest.mark.parametrize("n", SIZES)
def test_int_beyond_str_digits_limit_blocking_client(ranges: tuple[Any, str], n: int) -> None:
    mod, url = ranges
    args = good_args(n)
    args[-1] = HUGE
    with mod.RangesClient(url) as client:
        assert _sync_outcome(lambda: getattr(client, f"i{n}")(*args)) == (
            "param",
            f"i{n}(): p{n - 1}: {RANGE}",
        )


@pytest.mark.parametrize("shape", ["with_options", "interceptor"])
def test_int_beyond_str_digits_limit_async_checked_shapes(
    ranges: tuple[Any, str], shape: str
) -> None:
    mod, url = ranges

    async def main() -> tuple[str, Any]:
        client, _ = _async_client(mod, url, shape)
        async with client:
            return await _async_outcome(lambda: _view(client, shape).i1(HUGE))

    assert asyncio.run(main()) == ("param", f"i1(): p0: {RANGE}")


@pytest.mark.parametrize("n", [1, 2, 16])
@pytest.mark.parametrize("shape", ["plain", "prefix", "timeout", "zlib"])
def test_int_beyond_str_digits_limit_async_plain_client(
    ranges: tuple[Any, str], n: int, shape: str
) -> None:
    mod, url = ranges
    args = good_args(n)
    args[0] = HUGE

    async def main() -> tuple[str, Any]:
        client, prefix = _async_client(mod, url, shape)
        async with client:
            got = await _async_outcome(lambda: getattr(client, f"i{n}")(*args))
            assert got == ("param", f"{prefix}i{n}(): p0: {RANGE}")
            return got

    asyncio.run(main())


@pytest.mark.parametrize("client_kind", ["blocking", "async", "unsendable"])
def test_int_beyond_str_digits_limit_inside_any(ranges: tuple[Any, str], client_kind: str) -> None:
    mod, url = ranges
    if client_kind == "unsendable":
        error = mod.RangesClient._methods.anyp.unsendable([[HUGE]], "anyp")
        assert isinstance(error, ParamError) and str(error).startswith("anyp(): v[0]")
        return
    if client_kind == "blocking":
        with mod.RangesClient(url) as client, pytest.raises(ParamError, match=r"anyp\(\): v"):
            client.anyp([HUGE])
        return

    async def main() -> None:
        async with mod.AsyncRangesClient(url) as client:
            with pytest.raises(ParamError, match=r"anyp\(\): v"):
                await client.anyp([HUGE])

    asyncio.run(main())


def test_async_client_not_connected_refuses_a_wrong_type_with_param_error(
    ranges: tuple[Any, str],
) -> None:
    # The control for the next test: a value of the wrong type is refused before the
    # client even looks at its connection.
    mod, url = ranges

    async def main() -> None:
        client = mod.AsyncRangesClient(url)
        with pytest.raises(ParamError, match=r"i1\(\): p0: "):
            await client.i1("1")

    asyncio.run(main())


@pytest.mark.parametrize("value", [U64_MAX + 1, I64_MIN - 1])
def test_async_client_not_connected_refuses_an_out_of_range_int_with_param_error(
    ranges: tuple[Any, str], value: int
) -> None:
    mod, url = ranges

    async def main() -> None:
        client = mod.AsyncRangesClient(url)
        with pytest.raises(ParamError, match=r"i1\(\): p0: integer out of"):
            await client.i1(value)

    asyncio.run(main())


def _untyped_server() -> Any:
    # The typed methods' names served without their types (an older or untyped server):
    # what reaches it is answered, so a value the client should have refused shows.
    server = new_server()
    for n in SIZES:
        names = ", ".join(f"p{i}" for i in range(n))
        func = _handler(f"async def f({names}):\n    return 0\n")  # no worker process
        func.__name__ = func.__qualname__ = f"i{n}"
        server.register_function(func)
    return server


@pytest.mark.parametrize("n", [1, 2, 17])
@pytest.mark.parametrize("value", [U64_MAX + 1, I64_MIN - 1, 10**30])
def test_blocking_json_client_refuses_out_of_range_before_sending(
    ranges: tuple[Any, str], n: int, value: int
) -> None:
    mod, _ = ranges
    args = good_args(n)
    args[-1] = value
    with served(_untyped_server()) as running, mod.RangesClient(running.url, debug=True) as c:
        assert _sync_outcome(lambda: getattr(c, f"i{n}")(*args)) == (
            "param",
            f"i{n}(): p{n - 1}: {RANGE}",
        )
        assert getattr(c, f"i{n}")(*good_args(n)) == 0


@pytest.mark.parametrize("n", [1, 2, 16])
@pytest.mark.parametrize("value", [U64_MAX + 1, I64_MIN - 1, 10**30])
def test_async_json_client_refuses_out_of_range_before_sending(
    ranges: tuple[Any, str], n: int, value: int
) -> None:
    mod, _ = ranges
    args = good_args(n)
    args[-1] = value

    async def main(url: str) -> None:
        async with mod.AsyncRangesClient(url, debug=True) as client:
            got = await _async_outcome(lambda: getattr(client, f"i{n}")(*args))
            assert got == ("param", f"i{n}(): p{n - 1}: {RANGE}")

    with served(_untyped_server()) as running:
        asyncio.run(main(running.url))


@pytest.mark.parametrize("n", [17, 20])
def test_async_json_client_refuses_out_of_range_for_17_params_and_more(
    ranges: tuple[Any, str], n: int
) -> None:
    # The loop-checked signatures keep the range test: refused before sending.
    mod, _ = ranges
    args = good_args(n)
    args[-1] = U64_MAX + 1

    async def main(url: str) -> None:
        async with mod.AsyncRangesClient(url, debug=True) as client:
            got = await _async_outcome(lambda: getattr(client, f"i{n}")(*args))
            assert got == ("param", f"i{n}(): p{n - 1}: {RANGE}")
            assert await getattr(client, f"i{n}")(*good_args(n)) == 0

    with served(_untyped_server()) as running:
        asyncio.run(main(running.url))


def test_lone_surrogate_in_a_str_param_is_refused_alike(ranges: tuple[Any, str]) -> None:
    # The other value MessagePack refuses in a parameter the async client passes as is.
    mod, url = ranges
    base: dict[str, Any] = dict(
        a=1, b=1.5, c="\ud800", d=b"b", e=True, f=None, g=[1], h=None, p=mod.Pt(x=1.0), col=1
    )
    with mod.RangesClient(url) as client:
        sync_got = _sync_outcome(lambda: client.mix(**base))
    assert sync_got[0] == "param" and sync_got[1].startswith("mix(): c"), sync_got

    async def main() -> None:
        for shape in ASYNC_SHAPES:
            client, prefix = _async_client(mod, url, shape)
            async with client:
                got = await _async_outcome(lambda: _view(client, shape).mix(**base))  # noqa: B023
                assert got == ("param", sync_got[1].replace("mix()", f"{prefix}mix()")), shape

    asyncio.run(main())


def _ranges_server(mod: Any, **options: Any) -> Any:
    server = new_server(**options)
    mod.register_ranges(server, _SERVICERS[mod.__name__])
    return server


@pytest.mark.parametrize(
    "value",
    [
        "1",
        U64_MAX + 1,
    ],
    ids=["wrong-type", "2**64"],
)
def test_async_client_whose_server_went_away_refuses_bad_args_with_param_error(
    ranges: tuple[Any, str], value: Any
) -> None:
    mod, _ = ranges

    async def main() -> None:
        with served(_ranges_server(mod)) as running:
            client = mod.AsyncRangesClient(running.url)
            await client.connect()
            assert await client.i1(4) == 4
            blocking = mod.RangesClient(running.url)
            blocking.connect()
        try:
            for _ in range(500):  # the server's close reaches the client
                if not client.rpc.connected:
                    break
                await asyncio.sleep(0.01)
            assert _sync_outcome(lambda: blocking.i1(value))[0] == "param"
            with pytest.raises(ParamError, match=r"i1\(\): p0: "):
                await client.i1(value)
        finally:
            blocking.close()
            await client.close()

    asyncio.run(main())


# -- 2. wrong types and int subclasses ---------------------------------------------------

WRONG = [True, False, "1", 1.5, None, b"1", [1]]


@pytest.mark.parametrize("n", SIZES)
def test_wrong_types_give_the_same_param_error_from_both_clients(
    ranges: tuple[Any, str], n: int
) -> None:
    mod, url = ranges
    cases = []
    for value in WRONG:
        for at in sorted({0, n - 1}):
            args: list[Any] = good_args(n)
            args[at] = value
            cases.append((at, args))
    with mod.RangesClient(url) as client:
        sync_got = [_sync_outcome(lambda: getattr(client, f"i{n}")(*a)) for _, a in cases]  # noqa: B023
    for (at, _), got in zip(cases, sync_got, strict=True):
        assert got[0] == "param" and got[1].startswith(f"i{n}(): p{at}: "), got

    async def main() -> list[tuple[str, Any]]:
        async with mod.AsyncRangesClient(url) as client:
            return [await _async_outcome(lambda: getattr(client, f"i{n}")(*a)) for _, a in cases]  # noqa: B023

    assert asyncio.run(main()) == sync_got


@pytest.mark.parametrize("n", SIZES)
def test_wrong_argument_counts_through_the_untyped_async_path_of_the_typed_signature(
    ranges: tuple[Any, str], n: int
) -> None:
    # The compiled check unpacks in a try: a count off by one either way is refused,
    # by encode_args on the client and by the server for an untyped caller.
    mod, url = ranges
    sig = getattr(mod.RangesClient._methods, f"i{n}")
    for count in (n - 1, n + 1):
        with pytest.raises(ParamError, match=rf"i{n}\(\): takes {n} argument"):
            sig.encode_args(*range(count), method=f"i{n}")
        with RPC(url) as rpc, pytest.raises(ParamError):
            rpc.call(f"i{n}", *range(count))


def test_int_subclasses_convert_or_are_refused_alike(ranges: tuple[Any, str]) -> None:
    mod, url = ranges
    values: list[Any] = [Color.RED, MyInt(7), MyInt(U64_MAX), Color.BIG, MyInt(I64_MIN - 1)]
    with mod.RangesClient(url) as client:
        sync_got = [_sync_outcome(lambda: client.i2(0, v)) for v in values]  # noqa: B023
    assert sync_got[:3] == [("ok", 1), ("ok", 7), ("ok", U64_MAX)]
    assert sync_got[3:] == [("param", f"i2(): p1: {RANGE}")] * 2

    async def main() -> list[tuple[str, Any]]:
        async with mod.AsyncRangesClient(url) as client:
            out = [await _async_outcome(lambda: client.i2(0, v)) for v in values]  # noqa: B023
            for got in out:
                assert got[0] != "ok" or type(got[1]) is int
            return out

    assert asyncio.run(main()) == sync_got


# -- 3. the server, whatever client sent the call ----------------------------------------


@pytest.mark.parametrize("n", SIZES)
def test_untyped_msgpack_clients_get_the_servers_checks(ranges: tuple[Any, str], n: int) -> None:
    _, url = ranges

    async def main() -> None:
        async with AsyncRPC(url) as rpc:
            for at in sorted({0, n - 1}):
                for value in [I64_MIN, U64_MAX]:
                    args: list[Any] = good_args(n)
                    args[at] = value
                    assert await rpc.call(f"i{n}", *args) == args[-1]
                    kwargs = {f"p{i}": v for i, v in enumerate(args)}
                    assert await rpc.call(f"i{n}", **kwargs) == args[-1]
                for value in [*WRONG, 1.0]:
                    args = good_args(n)
                    args[at] = value
                    with pytest.raises(ParamError, match=rf"i{n}\(\): p{at}: "):
                        await rpc.call(f"i{n}", *args)
                    kwargs = {f"p{i}": v for i, v in enumerate(args)}
                    with pytest.raises(ParamError, match=rf"i{n}\(\): p{at}: "):
                        await rpc.call(f"i{n}", **kwargs)
            with pytest.raises(ParamError):
                await rpc.call(f"i{n}", *good_args(n + 1))
            with pytest.raises(ParamError):
                await rpc.call(f"i{n}", *good_args(n - 1))
            assert await rpc.call(f"i{n}", *good_args(n)) == n - 1

    asyncio.run(main())


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("value", [U64_MAX + 1, I64_MIN - 1, 10**400, -(10**400)])
def test_json_clients_ints_beyond_64_bits_are_refused(
    ranges: tuple[Any, str], n: int, value: int
) -> None:
    _, url = ranges
    with RPC(url, debug=True) as rpc:
        for at in sorted({0, n // 2, n - 1}):
            args = good_args(n)
            args[at] = value
            with pytest.raises(ParamError, match=rf"i{n}\(\): p{at}: "):
                rpc.call(f"i{n}", *args)
            kwargs = {f"p{i}": v for i, v in enumerate(args)}
            with pytest.raises(ParamError, match=rf"i{n}\(\): p{at}: "):
                rpc.call(f"i{n}", **kwargs)
        edges = good_args(n)
        edges[0], edges[-1] = I64_MIN, U64_MAX
        assert rpc.call(f"i{n}", *edges) == U64_MAX


def test_json_client_huge_ints_in_list_optional_struct_enum(ranges: tuple[Any, str]) -> None:
    _, url = ranges
    base: dict[str, Any] = dict(a=1, g=[1], h=None, p={"x": 1.0}, col=1, f=None)
    with RPC(url, debug=True) as rpc:
        assert rpc.call("jmix", **base) == repr((1, [1], None, 0, 1, None, 7))
        edges = {**base, "g": [I64_MIN, U64_MAX], "h": U64_MAX, "k": I64_MIN}
        assert rpc.call("jmix", **edges) == repr(
            (1, [I64_MIN, U64_MAX], U64_MAX, 0, 1, None, I64_MIN)
        )
        for patch, where in [
            ({"a": 10**30}, "a"),
            ({"g": [0, 10**30]}, r"g\[1\]"),
            ({"h": -(10**30)}, "h"),
            ({"k": U64_MAX + 1}, "k"),
            ({"p": {"x": 1.0, "y": 2**64}}, r"p\.y"),
            ({"col": 2**64 + 1}, "col"),
        ]:
            with pytest.raises(ParamError, match=rf"jmix\(\): {where}"):
                rpc.call("jmix", **{**base, **patch})
            args = list({**base, **patch}.values())
            with pytest.raises(ParamError, match=rf"jmix\(\): {where}"):
                rpc.call("jmix", *args)
        # An `any` parameter takes whatever JSON carries; the handler sees it unchanged.
        assert rpc.call("jmix", **{**base, "f": 10**30}) == repr((1, [1], None, 0, 1, 10**30, 7))


def _json_call_frames(url: str, calls: list[tuple[str, str]]) -> list[Any]:
    """Send JSON calls whose arguments are written as raw JSON text (ints of any number
    of digits) on one connection; the replies as decoded, or "EOF" once it closed."""
    port = int(url.rsplit(":", 1)[1])
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    buf = b""

    def recv() -> Any:
        nonlocal buf
        while SEP not in buf:
            try:
                chunk = sock.recv(1 << 20)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                return "EOF"
            buf += chunk
        frame, _, buf = buf.partition(SEP)
        return json.loads(frame)

    try:
        login = {"MPRPC": "0.1", "AUTH": {"USERNAME": None, "PASSWORD": None}}
        sock.sendall(json.dumps(login).encode() + SEP)
        assert recv()["CODE"] == 100
        out = []
        for i, (method, args) in enumerate(calls):
            frame = f'{{"MPRPC":"0.1","ID":"c{i}","METHOD":"{method}","ARGS":[{args}]}}'
            try:
                sock.sendall(frame.encode() + SEP)
            except OSError:
                out.append("EOF")
                continue
            out.append(recv())
        return out
    finally:
        sock.close()


def test_json_ints_of_thousands_of_digits_get_402_and_the_connection_goes_on(
    ranges: tuple[Any, str],
) -> None:
    _, url = ranges
    big = "9" * 4000  # within Python's int_max_str_digits (4300)
    replies = _json_call_frames(
        url, [("i1", big), ("i1", "-" + big), ("i2", f"1, {big}"), ("i1", "7")]
    )
    for reply in replies[:3]:
        assert reply["CODE"] == 402, reply
    assert replies[3]["CODE"] == 200 and replies[3]["MESSAGE"]["RESULT"] == 7


def test_json_ints_beyond_python_str_digits_limit_are_invalid_json(
    ranges: tuple[Any, str],
) -> None:
    # docs/protocol.md: a JSON number of more digits than Python converts is invalid
    # JSON (506, then the connection closes), whatever its place; the reply says why.
    _, url = ranges
    replies = _json_call_frames(url, [("i1", "1" + "0" * 5000), ("i1", "7")])
    assert replies[0] != "EOF" and replies[0]["CODE"] == 506, replies[0]
    assert replies[1] == "EOF"
    # What the server logs says what is wrong, not how to reconfigure the server.
    with pytest.raises(RemoteProtocolError, match=r"number has more than 4300 digits$"):
        shared_codec(True, None, 1 << 20, 1 << 20).decode(b"[1" + b"0" * 5000 + b"]")


def test_untyped_blocking_client_refuses_out_of_range_locally(ranges: tuple[Any, str]) -> None:
    _, url = ranges
    with RPC(url) as rpc:
        with pytest.raises(Exception) as info:
            rpc.call("i1", U64_MAX + 1)
        assert not isinstance(info.value, AssertionError)
        assert rpc.call("i1", U64_MAX) == U64_MAX


EX_GOOD: list[Any] = [1, None, 1.5, "s", b"b", True, 2]
# (position, value) pairs each of the wrong type or out of range for `ex`.
EX_BAD: list[tuple[int, Any]] = [
    (0, True),
    (0, 1.0),
    (2, "1"),
    (2, None),
    (3, b"s"),
    (4, "b"),
    (5, 1),
    (5, None),
    (6, False),
    (6, "7"),
]


def _described(values: list[Any]) -> str:
    return repr([(type(v).__name__, v) for v in values])


def test_mixed_exact_signature_on_the_server_fast_lane(ranges: tuple[Any, str]) -> None:
    # int, any, float, str, bytes, bool, int: every position is checked by type alone on
    # the fast lane; a float parameter takes an int widened; `any` takes what it gets.
    _, url = ranges
    names = "abcdefg"

    async def main() -> None:
        async with AsyncRPC(url) as rpc:
            assert await rpc.call("ex", *EX_GOOD) == _described(EX_GOOD)
            edges = [I64_MIN, U64_MAX, U64_MAX, "", b"", False, U64_MAX]
            want = _described([I64_MIN, U64_MAX, float(U64_MAX), "", b"", False, U64_MAX])
            assert await rpc.call("ex", *edges) == want
            for b in [U64_MAX, I64_MIN, [I64_MIN, {"k": U64_MAX}], True, 1.5]:
                args = [*EX_GOOD[:1], b, *EX_GOOD[2:]]
                assert await rpc.call("ex", *args) == _described(args)
            for at, value in EX_BAD:
                args = list(EX_GOOD)
                args[at] = value
                with pytest.raises(ParamError, match=rf"ex\(\): {names[at]}: "):
                    await rpc.call("ex", *args)
                with pytest.raises(ParamError, match=rf"ex\(\): {names[at]}: "):
                    await rpc.call("ex", **dict(zip(names, args, strict=True)))
            got = await asyncio.gather(
                *(rpc.call("ex", *EX_GOOD) for _ in range(32)), return_exceptions=True
            )
            assert got == [_described(EX_GOOD)] * 32

    asyncio.run(main())


def test_mixed_exact_signature_typed_clients_agree(ranges: tuple[Any, str]) -> None:
    mod, url = ranges
    cases = [*EX_BAD, (0, U64_MAX + 1), (6, I64_MIN - 1), (1, U64_MAX + 1), (1, [10**400])]
    with mod.RangesClient(url) as client:
        sync_got = []
        for at, value in cases:
            args = list(EX_GOOD)
            args[at] = value
            sync_got.append(_sync_outcome(lambda: client.ex(*args)))  # noqa: B023
    for got in sync_got:
        assert got[0] == "param", got

    async def main() -> None:
        for shape in ASYNC_SHAPES:
            client, prefix = _async_client(mod, url, shape)
            async with client:
                for (at, value), want in zip(cases, sync_got, strict=True):
                    args = list(EX_GOOD)
                    args[at] = value
                    got = await _async_outcome(lambda: _view(client, shape).ex(*args))  # noqa: B023
                    assert got == ("param", want[1].replace("ex()", f"{prefix}ex()")), shape
                assert await _view(client, shape).ex(*EX_GOOD) == _described(EX_GOOD)

    asyncio.run(main())


def test_defaults_by_untyped_callers_and_typed_clients(ranges: tuple[Any, str]) -> None:
    mod, url = ranges

    async def main() -> None:
        async with AsyncRPC(url) as rpc:
            assert await rpc.call("dflt", 1) == _described([1, 5, 1.5, None])
            assert await rpc.call("dflt", U64_MAX, I64_MIN) == _described(
                [U64_MAX, I64_MIN, 1.5, None]
            )
            assert await rpc.call("dflt", 1, d=U64_MAX) == _described([1, 5, 1.5, U64_MAX])
            assert await rpc.call("dflt", 1, 2, 3) == _described([1, 2, 3.0, None])
            for args, kwargs, where in [
                ((), {}, "a"),
                ((1, True), {}, "b"),
                ((1,), {"d": True}, "d"),
                ((1,), {"d": 1.0}, "d"),
                ((1, 2, 3, 4, 5), {}, ""),
            ]:
                with pytest.raises(ParamError, match=rf"dflt\(\): {where}"):
                    await rpc.call("dflt", *args, **kwargs)
        async with mod.AsyncRangesClient(url) as client:
            assert await client.dflt(1) == _described([1, 5, 1.5, None])
            assert await client.dflt(1, d=I64_MIN) == _described([1, 5, 1.5, I64_MIN])
            for kwargs in [{"b": U64_MAX + 1}, {"d": I64_MIN - 1}]:
                with pytest.raises(ParamError, match=rf"dflt\(\): {next(iter(kwargs))}: "):
                    await client.dflt(1, **kwargs)

    with RPC(url, debug=True) as rpc:
        with pytest.raises(ParamError, match=r"dflt\(\): d: "):
            rpc.call("dflt", 1, d=10**30)
        assert rpc.call("dflt", 1) == _described([1, 5, 1.5, None])

    asyncio.run(main())


edge_ints = st.sampled_from(
    [I64_MIN - 1, I64_MIN, -1, 0, 1, 2**63 - 1, 2**63, U64_MAX, U64_MAX + 1, 10**400]
)
scalars = st.one_of(
    edge_ints,
    st.integers(),
    st.booleans(),
    st.floats(allow_nan=False),
    st.text(max_size=3),
    st.binary(max_size=3),
    st.none(),
)
drawn_values = st.one_of(scalars, st.lists(scalars, max_size=3))


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(args=st.lists(drawn_values, min_size=7, max_size=7), n=st.sampled_from([2, 17]))
def test_drawn_arguments_get_the_same_outcome_from_both_clients(
    ranges: tuple[Any, str], args: list[Any], n: int
) -> None:
    # `ex` (mixed exact types, compiled check) and i2/i17 (ints; compiled and loop): the
    # blocking client's outcome is the contract, the async client's must equal it.
    mod, url = ranges
    calls: list[tuple[str, list[Any]]] = [("ex", args)]
    ints = (args * 3)[:n]
    calls.append((f"i{n}", ints))
    with mod.RangesClient(url) as client:
        want = [_sync_outcome(lambda: getattr(client, m)(*a)) for m, a in calls]  # noqa: B023

    async def main() -> list[tuple[str, Any]]:
        async with mod.AsyncRangesClient(url) as client:
            got = [await _async_outcome(lambda: getattr(client, m)(*a)) for m, a in calls]  # noqa: B023
            assert not client.rpc._pending
            return got

    assert asyncio.run(main()) == want


async def _server_passthrough(ctx: Any, call_next: Any) -> Any:
    return await call_next(ctx)


def test_a_server_with_an_interceptor_checks_the_same(ranges: tuple[Any, str]) -> None:
    # Every call on the general path (no fast lane): the same answers as above.
    mod, _ = ranges
    with served(_ranges_server(mod, interceptors=[_server_passthrough])) as running:
        url = running.url
        with RPC(url, debug=True) as rpc:
            for n in SIZES:
                args = good_args(n)
                args[-1] = U64_MAX + 1
                with pytest.raises(ParamError, match=rf"i{n}\(\): p{n - 1}: "):
                    rpc.call(f"i{n}", *args)
                args[-1] = U64_MAX
                assert rpc.call(f"i{n}", *args) == U64_MAX

        async def main() -> None:
            async with AsyncRPC(url) as rpc:
                for at, value in EX_BAD:
                    args = list(EX_GOOD)
                    args[at] = value
                    with pytest.raises(ParamError, match=rf"ex\(\): {'abcdefg'[at]}: "):
                        await rpc.call("ex", *args)
                assert await rpc.call("ex", *EX_GOOD) == _described(EX_GOOD)
                for kind in range(len(BAD_RESULTS)):
                    with pytest.raises(RPCRuntimeError, match="ValidationError"):
                        await rpc.call("res", kind)
            async with mod.AsyncRangesClient(url) as client:
                got = await asyncio.gather(
                    *(
                        _async_outcome(lambda v=v: client.i2(0, v))
                        for v in [1, U64_MAX + 1, "x"] * 20
                    )
                )
                assert [g[0] for g in got] == ["ok", "param", "param"] * 20

        asyncio.run(main())


# -- 4. results --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", range(len(BAD_RESULTS)))
def test_bad_int_results_are_errors_for_both_clients(ranges: tuple[Any, str], kind: int) -> None:
    mod, url = ranges
    with mod.RangesClient(url) as client:
        with pytest.raises((RPCRuntimeError, ValidationError)) as info:
            client.res(kind)
        assert "ValidationError" in str(info.value) or isinstance(info.value, ValidationError)
        assert "res" in str(info.value)
        assert client.i1(3) == 3

    async def main() -> None:
        async with mod.AsyncRangesClient(url) as client:
            with pytest.raises((RPCRuntimeError, ValidationError)) as info:
                await client.res(kind)
            assert "res" in str(info.value)
            assert await client.i1(3) == 3
        async with AsyncRPC(url) as rpc:
            with pytest.raises(RPCRuntimeError, match="ValidationError"):
                await rpc.call("res", kind)

    asyncio.run(main())


@pytest.mark.parametrize("i", range(len(GOOD_RESULTS)))
def test_int_subclass_results_in_range_come_back_as_ints(ranges: tuple[Any, str], i: int) -> None:
    mod, url = ranges
    want = int(GOOD_RESULTS[i])
    with mod.RangesClient(url) as client:
        got = client.res(-i - 1)
        assert type(got) is int and got == want

    async def main() -> None:
        async with mod.AsyncRangesClient(url) as client:
            got = await client.res(-i - 1)
            assert type(got) is int and got == want

    asyncio.run(main())


# What an untyped (or older) server answers for `res`: the typed clients check it.
UNCHECKED_RESULTS: list[Any] = [U64_MAX + 1, I64_MIN - 1, 10**30, True, 1.5, "1", None]


# A server that cannot encode what its handler returned says so (ResultLimitError).
REFUSED = (ValidationError, RPCRuntimeError, ResultLimitError)


def _unchecked_server() -> Any:
    server = new_server()

    async def res(kind: int) -> Any:
        return UNCHECKED_RESULTS[kind]

    server.register_function(res)
    return server


@pytest.mark.parametrize("debug", [False, True], ids=["msgpack", "json"])
@pytest.mark.parametrize("kind", range(len(UNCHECKED_RESULTS)))
def test_typed_clients_refuse_bad_results_from_an_unchecking_server(
    ranges: tuple[Any, str], kind: int, debug: bool
) -> None:
    mod, _ = ranges
    with served(_unchecked_server()) as running:
        with (
            mod.RangesClient(running.url, debug=debug) as client,
            pytest.raises(REFUSED) as sync_info,
        ):
            client.res(kind)

        async def main() -> None:
            async with mod.AsyncRangesClient(running.url, debug=debug) as client:
                with pytest.raises(REFUSED) as info:
                    await client.res(kind)
                assert type(info.value) is type(sync_info.value)
                assert str(info.value) == str(sync_info.value)

        asyncio.run(main())


@pytest.mark.parametrize("value", [U64_MAX + 1, I64_MIN - 1, 10**400, True, "1"])
def test_streams_and_oneway_refuse_bad_ints_alike(ranges: tuple[Any, str], value: Any) -> None:
    mod, url = ranges
    with mod.RangesClient(url) as client:
        with pytest.raises(ParamError) as stream_err:
            list(client.count(value))
        with pytest.raises(ParamError) as note_err:
            client.note(value)
        assert str(stream_err.value).startswith("count(): n: ")
        assert str(note_err.value).startswith("note(): n: ")
        assert list(client.count(3)) == [0, 1, 2]

    async def main() -> None:
        for shape in ASYNC_SHAPES:
            client, prefix = _async_client(mod, url, shape)
            async with client:
                view = _view(client, shape)
                with pytest.raises(ParamError) as info:
                    async for _ in view.count(value):
                        pass
                assert str(info.value) == str(stream_err.value).replace("count", f"{prefix}count")
                with pytest.raises(ParamError) as info:
                    await view.note(value)
                assert str(info.value) == str(note_err.value).replace("note", f"{prefix}note")
                assert [x async for x in view.count(3)] == [0, 1, 2]

    asyncio.run(main())


# -- 5. pipelined --------------------------------------------------------------------------


def test_64_pipelined_typed_calls_good_and_bad(ranges: tuple[Any, str]) -> None:
    mod, url = ranges
    values: list[Any] = []
    for i in range(64):
        values.append(
            [i, U64_MAX + 1, I64_MIN - 1, "x", True, U64_MAX, I64_MIN, 1.5][i % 8] if i % 3 else i
        )

    def want(v: Any) -> tuple[str, Any]:
        if type(v) is int and I64_MIN <= v <= U64_MAX:
            return "ok", v
        return "param", None

    async def one(client: Any, v: Any) -> tuple[str, Any]:
        got = await _async_outcome(lambda: client.i2(1, v))
        return (got[0], got[1] if got[0] == "ok" else None)

    async def raw(rpc: Any, v: Any) -> tuple[str, Any]:
        try:
            return "ok", await rpc.call("i2", 1, v)
        except ParamError:
            return "param", None

    async def main() -> None:
        async with mod.AsyncRangesClient(url) as client:
            for _ in range(3):
                got = await asyncio.gather(*(one(client, v) for v in values))
                assert got == [want(v) for v in values]
                assert not client.rpc._pending
        # Untyped: the MessagePack-carried wrong types reach the server, pipelined.
        sendable = [v for v in values if not (type(v) is int and not I64_MIN <= v <= U64_MAX)]
        async with AsyncRPC(url) as rpc:
            got = await asyncio.gather(*(raw(rpc, v) for v in sendable))
            assert got == [want(v) for v in sendable]

    asyncio.run(main())


# -- 6. Signature's public methods ----------------------------------------------------------


@pytest.mark.parametrize("n", [0, *SIZES])
def test_signature_public_methods_agree_on_the_int_range(ranges: tuple[Any, str], n: int) -> None:
    mod, _ = ranges
    sig = getattr(mod.RangesClient._methods, f"i{n}" if n else "z")
    assert sig.fits(good_args(n)) is True
    assert list(sig.wire_args(good_args(n))) == good_args(n)
    if n:
        edges = good_args(n)
        edges[0], edges[-1] = I64_MIN, U64_MAX
        assert sig.fits(edges) is True
        assert list(sig.wire_args(edges)) == edges == sig.encode_args(*edges)
    for at in range(n):
        for value in [*OUT, HUGE]:
            args = good_args(n)
            args[at] = value
            assert sig.fits(args) is False
            assert sig.fits(tuple(args)) is False
            with pytest.raises(ParamError) as by_encode:
                sig.encode_args(*args, method=f"x.i{n}")
            assert str(by_encode.value) == f"x.i{n}(): p{at}: {RANGE}"
            with pytest.raises(ParamError) as by_wire:
                sig.wire_args(args)
            assert str(by_wire.value) == f"i{n}(): p{at}: {RANGE}"
            with pytest.raises(ValidationError):
                sig.decode_args(args, {})
            with pytest.raises(ValidationError):
                sig.decode_args([], {f"p{i}": v for i, v in enumerate(args)})
            error = sig.unsendable(args, f"x.i{n}")
            assert isinstance(error, ParamError) and str(error) == str(by_encode.value)
    # Wrong counts: not fitting, and a ParamError from both.
    for count in {max(n - 1, 0), n + 1} - {n}:
        args = good_args(count)
        assert sig.fits(args) is False
        with pytest.raises(ParamError):
            sig.wire_args(args)
        with pytest.raises(ParamError):
            sig.encode_args(*args)


@pytest.mark.parametrize("n", SIZES)
def test_signature_on_what_msgpack_decodes(ranges: tuple[Any, str], n: int) -> None:
    mod, _ = ranges
    sig = getattr(mod.RangesClient._methods, f"i{n}")
    for value in [I64_MIN, U64_MAX, True, 1.0, "1", None]:
        args = good_args(n)
        args[-1] = value
        decoded = msgpack.unpackb(msgpack.packb(args))
        fits = sig.fits(decoded)
        assert fits is (type(value) is int)
        if fits:
            assert sig.decode_args(decoded, {}) == {f"p{i}": v for i, v in enumerate(args)}
        else:
            with pytest.raises(ValidationError):
                sig.decode_args(decoded, {})
