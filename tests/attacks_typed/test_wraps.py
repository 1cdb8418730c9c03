"""Point 3 of the contract: a plain function registered with `register_function()` and
decorated with `functools.wraps` is called with what the decorated callable accepts. The
oracle is Python itself: the same arguments are applied to the decorated callable in the
test process, and the server must accept exactly the calls Python accepts (402 for the
others, never a 404 from inside the wrapper), returning the same value."""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pymprpc.client import RPC
from pymprpc.errors import ParamError

from .kit import new_server, served

F = Callable[..., Any]


def plain(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    return wrapper


def with_unit(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args: Any, unit: str = "", **kwargs: Any) -> Any:
        return [fn(*args, **kwargs), unit]

    return wrapper


def with_scale(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args: Any, scale: int, **kwargs: Any) -> Any:
        return [fn(*args, **kwargs), scale]

    return wrapper


def as_coroutine(fn: F) -> F:
    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    return wrapper


def positional_first(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(first: Any, *args: Any, **kwargs: Any) -> Any:
        return fn(first, *args, **kwargs)

    return wrapper


def plain_over_unit(fn: F) -> F:
    return plain(with_unit(fn))


def unit_over_plain(fn: F) -> F:
    return with_unit(plain(fn))


def scale_plain_unit(fn: F) -> F:
    return with_scale(plain(with_unit(fn)))


def first_over_unit(fn: F) -> F:
    return positional_first(with_unit(fn))


DECORATORS = {
    "plain": plain,
    "with_unit": with_unit,
    "with_scale": with_scale,
    "as_coroutine": as_coroutine,
    "positional_first": positional_first,
    "unit_over_plain": unit_over_plain,
    "plain_over_unit": plain_over_unit,
    "scale_plain_unit": scale_plain_unit,
    "first_over_unit": first_over_unit,
}


# Unannotated, as functions registered with register_function() usually are.
def target_a(a, b=2, *, c=3):  # type: ignore[no-untyped-def]
    return ["a", a, b, c]


def target_b(x, /, y, *rest, z, **more):  # type: ignore[no-untyped-def]
    return ["b", x, y, list(rest), z, sorted(more.items())]


def target_c():  # type: ignore[no-untyped-def]
    return ["c"]


TARGETS = {"a": target_a, "b": target_b, "c": target_c}


@pytest.fixture(scope="module")
def wrapped() -> Iterator[tuple[str, dict[str, F]]]:
    server = new_server(executor="thread")
    local: dict[str, F] = {}
    for dname, deco in DECORATORS.items():
        for tname, target in TARGETS.items():
            fn = deco(target)
            local[f"{dname}.{tname}"] = fn
            server.register_function(f"{dname}.{tname}")(fn)
    with served(server) as running:
        yield running.url, local


def local_outcome(fn: F, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, Any]:
    try:
        value = fn(*args, **kwargs)
        if inspect.iscoroutine(value):  # an async wrapper calls the target when awaited
            value = asyncio.run(value)
    except TypeError:
        return "refused", None
    return "ok", value


def remote_outcome(rpc: RPC, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    try:
        return "ok", rpc.method(name)(*args, **kwargs)
    except ParamError:
        return "refused", None


def tuples(value: Any) -> Any:
    """MessagePack turns tuples into lists: compare in that form."""
    if isinstance(value, list | tuple):
        return [tuples(v) for v in value]
    return value


arg_values = st.integers(-3, 3)
keywords = st.sampled_from(["a", "b", "c", "x", "y", "z", "unit", "scale", "first", "rest", "q"])
calls = st.tuples(
    st.lists(arg_values, max_size=4).map(tuple),
    st.dictionaries(keywords, arg_values, max_size=4),
)
SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.mark.parametrize("deco", sorted(DECORATORS))
@pytest.mark.parametrize("target", sorted(TARGETS))
@SETTINGS
@given(call=calls)
def test_server_accepts_what_the_decorated_callable_accepts(
    wrapped: tuple[str, dict[str, F]],
    deco: str,
    target: str,
    call: tuple[tuple[Any, ...], dict[str, Any]],
) -> None:
    url, local = wrapped
    name = f"{deco}.{target}"
    args, kwargs = call
    with RPC(url) as rpc:
        got = remote_outcome(rpc, name, args, kwargs)
    want = local_outcome(local[name], args, kwargs)
    assert got == (want[0], tuples(want[1])), (name, args, kwargs)


@pytest.mark.parametrize(
    ("name", "args", "kwargs"),
    [
        ("plain_over_unit.a", (1,), {"unit": "m"}),
        ("plain_over_unit.c", (), {"unit": "m"}),
        ("scale_plain_unit.a", (1,), {"unit": "m", "scale": 2}),
        ("scale_plain_unit.b", (1, 2, 3), {"z": 4, "unit": "m", "scale": 2, "q": 5}),
        ("first_over_unit.a", (1,), {"unit": "m", "c": 4}),
    ],
)
def test_calls_python_accepts_are_accepted_for_nested_decorators(
    wrapped: tuple[str, dict[str, F]], name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    url, local = wrapped
    want = local_outcome(local[name], args, kwargs)
    assert want[0] == "ok"
    with RPC(url) as rpc:
        assert remote_outcome(rpc, name, args, kwargs) == ("ok", tuples(want[1]))


def test_wrong_arguments_through_other_shapes_are_still_402(
    wrapped: tuple[str, dict[str, F]],
) -> None:
    url, _ = wrapped
    with RPC(url) as rpc:
        for name, args, kwargs in [
            ("positional_first.a", (), {}),
            ("plain_over_unit.a", (), {}),
            ("plain_over_unit.a", (1,), {"zz": 1}),
            ("plain_over_unit.a", (1,), {"unit": "m", "zz": 1}),
            ("scale_plain_unit.a", (1,), {"unit": "m"}),
            ("scale_plain_unit.c", (), {"scale": 1, "c": 2}),
            ("first_over_unit.c", (), {"unit": "m"}),
        ]:
            with pytest.raises(ParamError):
                rpc.method(name)(*args, **kwargs)


def test_method_signature_shows_what_a_caller_may_pass(
    wrapped: tuple[str, dict[str, F]],
) -> None:
    url, _ = wrapped
    with RPC(url) as rpc:
        sig = rpc.system.methodSignature
        assert sig("plain.a").endswith("(a, b=2, *, c=3)")
        assert sig("with_unit.a").endswith("(a, b=2, *, c=3, unit='')")
        assert sig("with_scale.c").endswith("(*, scale)")
        assert sig("unit_over_plain.b").endswith("(x, /, y, *rest, z, unit='', **more)")


def test_wrong_argument_through_a_positional_wrapper_is_402_not_404(
    wrapped: tuple[str, dict[str, F]],
) -> None:
    url, local = wrapped
    assert local_outcome(local["positional_first.c"], (1,), {})[0] == "refused"
    with RPC(url) as rpc, pytest.raises(ParamError):
        rpc.method("positional_first.c")(1)


@pytest.mark.parametrize(
    ("name", "args", "kwargs"),
    [
        ("positional_first.a", (1, 5), {}),
        ("positional_first.a", (1,), {"b": 5}),
        ("positional_first.a", (1,), {"c": 4}),
        ("positional_first.b", (1, 2), {"z": 3}),
    ],
)
def test_calls_through_a_positional_wrapper_are_what_python_accepts(
    wrapped: tuple[str, dict[str, F]], name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    url, local = wrapped
    want = local_outcome(local[name], args, kwargs)
    assert want[0] == "ok"
    with RPC(url) as rpc:
        assert remote_outcome(rpc, name, args, kwargs) == ("ok", tuples(want[1]))


def test_method_signature_of_nested_decorators_shows_added_keywords(
    wrapped: tuple[str, dict[str, F]],
) -> None:
    url, _ = wrapped
    with RPC(url) as rpc:
        sig = rpc.system.methodSignature
        assert sig("plain_over_unit.a").endswith("(a, b=2, *, c=3, unit='')")
        assert sig("scale_plain_unit.a").endswith("(a, b=2, *, c=3, unit='', scale)")
        assert sig("scale_plain_unit.b").endswith("(x, /, y, *rest, z, unit='', scale, **more)")


def stream_plain(fn: F) -> F:
    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        async for x in fn(*args, **kwargs):
            yield x

    return wrapper


def stream_unit(fn: F) -> F:
    @functools.wraps(fn)
    async def wrapper(*args: Any, unit: str = "", **kwargs: Any) -> Any:
        async for x in fn(*args, **kwargs):
            yield f"{x}{unit}"

    return wrapper


class Decorated:
    """Methods decorated with functools.wraps, served with register_instance()."""

    @plain
    def add(self, a: int, b: int = 1) -> int:
        return a + b

    @with_unit
    def label(self, a: int) -> int:
        return a


def test_decorated_streams_and_instance_methods() -> None:
    server = new_server(executor="thread")

    @server.register_function()
    @stream_plain
    async def count(n, step=1):  # type: ignore[no-untyped-def]
        for i in range(0, n, step):
            yield i

    @server.register_function()
    @stream_unit
    async def units(n):  # type: ignore[no-untyped-def]
        for i in range(n):
            yield i

    server.register_instance(Decorated())
    with served(server) as running, RPC(running.url) as rpc:
        assert list(rpc.count(3)) == [0, 1, 2]
        assert list(rpc.count(n=4, step=2)) == [0, 2]
        assert list(rpc.units(2, unit="m")) == ["0m", "1m"]
        assert rpc.add(1) == 2 and rpc.add(a=1, b=5) == 6
        assert rpc.label(3, unit="x") == [3, "x"]
        for name, args, kwargs in [
            ("count", (), {}),
            ("count", (1, 2, 3), {}),
            ("count", (1,), {"zz": 2}),
            ("units", (), {"unit": "m"}),
            ("add", (1, 2, 3), {}),
            ("label", (), {"unit": "x"}),
        ]:
            with pytest.raises(ParamError):
                result = rpc.method(name)(*args, **kwargs)
                if name in ("count", "units"):
                    list(result)
        assert rpc.system.methodSignature("units").endswith("(n, *, unit='')")
        assert rpc.system.methodSignature("label").startswith("label(a: int, *, unit='')")


# Python 3.13.0's inspect.Signature.bind() accepts f(x=0) for f(x, /, **more) (it puts x
# into more and does not report x missing); calling f refuses it on every Python.
@pytest.mark.parametrize("name", ["plain.b", "with_unit.b", "undecorated"])
def test_positional_only_name_by_keyword_is_402(
    wrapped: tuple[str, dict[str, F]], name: str
) -> None:
    url, local = wrapped
    server_name = "direct_b" if name == "undecorated" else name
    fn = target_b if name == "undecorated" else local[name]
    assert local_outcome(fn, (), {"x": 0, "y": 0, "z": 0})[0] == "refused"
    # With x given by position too, the keyword x goes into **more: Python accepts it.
    accepted = local_outcome(fn, (5,), {"x": 0, "y": 1, "z": 2})
    assert accepted[0] == "ok"
    server = new_server(executor="thread")
    server.register_function("direct_b")(target_b)
    with served(server) as running, RPC(running.url) as direct, RPC(url) as rpc:
        client = direct if name == "undecorated" else rpc
        with pytest.raises(ParamError, match=r"'x'"):
            client.method(server_name)(x=0, y=0, z=0)
        assert remote_outcome(client, server_name, (5,), {"x": 0, "y": 1, "z": 2}) == (
            "ok",
            tuples(accepted[1]),
        )
