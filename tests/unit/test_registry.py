"""Method binding: the fast arity check never accepts what inspect.Signature.bind refuses."""

from __future__ import annotations

import functools
import inspect
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pymprpc.errors import ParamError
from pymprpc.server.registry import FastBind, call_signature, make_method


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


# -- decorated functions: binding follows what a call of the decorated function accepts --


def _inner(a: int, b: int = 2, *, c: int = 3) -> tuple[Any, ...]:
    return (a, b, c)


def _inner_kw(a: int, **extra: Any) -> tuple[Any, ...]:
    return (a, extra)


def passing_on(f: Any) -> Any:
    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return f(*args, **kwargs)

    return wrapper


def adding_a_keyword(f: Any) -> Any:
    @functools.wraps(f)
    def wrapper(*args: Any, unit: str = "", **kwargs: Any) -> Any:
        return (f(*args, **kwargs), unit)

    return wrapper


def adding_a_required_keyword(f: Any) -> Any:
    @functools.wraps(f)
    def wrapper(*args: Any, token: str, **kwargs: Any) -> Any:
        return (f(*args, **kwargs), token)

    return wrapper


def reusing_a_name(f: Any) -> Any:
    # The wrapper's own `c` shadows the decorated function's: f never receives it.
    @functools.wraps(f)
    def wrapper(*args: Any, c: int = 0, **kwargs: Any) -> Any:
        return (f(*args, **kwargs), c)

    return wrapper


def passing_its_own_positional_on(f: Any) -> Any:
    # Like a method decorator's `self`: taken, then passed on. (One that keeps it for
    # itself cannot be told apart; both are bound as the decorated function.)
    @functools.wraps(f)
    def wrapper(first: Any, *args: Any, **kwargs: Any) -> Any:
        return f(first, *args, **kwargs)

    return wrapper


def fixed_wrapper(f: Any) -> Any:
    @functools.wraps(f)
    def wrapper(x: int) -> Any:
        return f(x)

    return wrapper


def keywords_only_on(f: Any) -> Any:
    # Passes positionals on, but no keywords: the decorated function's keywords are gone.
    @functools.wraps(f)
    def wrapper(*args: Any, unit: str = "") -> Any:
        return f(*args)

    return wrapper


DECORATED = [
    deco(inner)
    for deco in (
        passing_on,
        adding_a_keyword,
        adding_a_required_keyword,
        reusing_a_name,
        passing_its_own_positional_on,
        fixed_wrapper,
        keywords_only_on,
    )
    for inner in (_inner, _inner_kw)
]
KEYS = ["a", "b", "c", "unit", "token", "scale", "x", "other"]


def accepts(func: Any, args: list[Any], kwargs: dict[str, Any]) -> bool:
    """Whether calling `func` itself binds these arguments (its TypeError says not)."""
    try:
        func(*args, **kwargs)
    except TypeError:
        return False
    return True


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(DECORATED),
    st.lists(st.integers(0, 9), max_size=4),
    st.dictionaries(st.sampled_from(KEYS), st.integers(0, 9), max_size=3),
)
def test_a_decorated_function_binds_what_calling_it_accepts(
    func: Any, args: list[Any], kwargs: dict[str, Any]
) -> None:
    method = make_method("m", func, key="m")
    try:
        method.bind(args, kwargs)
        bound = True
    except ParamError:
        bound = False
    assert bound is accepts(func, args, kwargs), (func.__qualname__, args, kwargs)


def test_a_keyword_the_decorator_adds_is_shown_and_accepted() -> None:
    func = adding_a_keyword(_inner)
    # (functools.wraps copies the decorated function's annotations: `unit` has none.)
    shown = "(a: int, b: int = 2, *, c: int = 3, unit='') -> tuple[typing.Any, ...]"
    assert str(call_signature(func, eval_str=True)) == shown
    assert make_method("m", func, key="m").signature_text == f"m{shown}"
    # A decorator that passes everything on shows the decorated function's parameters.
    assert call_signature(passing_on(_inner)) == inspect.signature(_inner)
