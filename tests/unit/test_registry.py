"""Method binding: the fast arity check never accepts what inspect.Signature.bind refuses."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from pymprpc.errors import ParamError
from pymprpc.server.registry import FastBind, make_method


def f(a: int, b: int = 2, c: int = 3) -> None: ...


def g(a: int, *rest: int) -> None: ...


def h(*, key: int) -> None: ...


CASES: list[tuple[list[Any], dict[str, Any]]] = [
    ([], {}),
    ([1], {}),
    ([1, 2, 3], {}),
    ([1, 2, 3, 4], {}),
    ([], {"a": 1}),
    ([1], {"a": 1}),
    ([1], {"c": 1}),
    ([1], {"d": 1}),
    ([], {"b": 1}),
    ([], {"a": 1, "b": 2, "c": 3}),
]


@pytest.mark.parametrize(("args", "kwargs"), CASES)
def test_fast_bind_agrees_with_inspect(args: list[Any], kwargs: dict[str, Any]) -> None:
    fast = FastBind.of(inspect.signature(f))
    assert fast is not None
    try:
        inspect.signature(f).bind(*args, **kwargs)
        ok = True
    except TypeError:
        ok = False
    assert fast.accepts(args, kwargs) == ok


def test_fast_bind_only_for_plain_signatures() -> None:
    assert FastBind.of(inspect.signature(g)) is None
    assert FastBind.of(inspect.signature(h)) is None


@pytest.mark.parametrize(("args", "kwargs"), CASES)
def test_method_bind_refuses_with_param_error(args: list[Any], kwargs: dict[str, Any]) -> None:
    method = make_method("f", f, key="k")
    try:
        inspect.signature(f).bind(*args, **kwargs)
    except TypeError:
        with pytest.raises(ParamError, match=r"^f\(\): "):
            method.bind(args, kwargs)
    else:
        assert method.bind(args, kwargs) == (args, kwargs)
