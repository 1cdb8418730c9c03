"""Method binding: the fast arity check never accepts what inspect.Signature.bind refuses."""

from __future__ import annotations

import functools
import inspect
import types
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


def _inner_po(x: int, /, b: int = 2, **more: Any) -> tuple[Any, ...]:
    # Calling refuses x=0 alone (x is missing; the keyword would go into more), though
    # Python 3.13.0's Signature.bind accepts it.
    return (x, b, more)


def _method(self: Any, a: int, b: int = 2, *, c: int = 3) -> tuple[Any, ...]:
    return (self, a, b, c)


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
    for inner in (_inner, _inner_kw, _inner_po)
]
# Decorators that pass arguments on, stacked over those above: two and three deep.
STACKABLE = [
    passing_on,
    adding_a_keyword,
    adding_a_required_keyword,
    reusing_a_name,
    passing_its_own_positional_on,
    keywords_only_on,
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


SHAPES = [*STACKABLE, fixed_wrapper]


@st.composite
def nested(draw: st.DrawFn) -> tuple[Any, list[str]]:
    """A function, or a method bound to an instance, under two or three decorators (the
    innermost of any shape, the others passing arguments on); with the names, innermost
    first, for failure messages."""
    inner = draw(st.sampled_from([_inner, _inner_kw, _inner_po, _method]))
    # (fixed_wrapper calls f(x): for a method, f(self) alone, a TypeError of its own.)
    decos = [draw(st.sampled_from(STACKABLE if inner is _method else SHAPES))]
    decos += draw(st.lists(st.sampled_from(STACKABLE), min_size=1, max_size=2))
    func: Any = inner
    for deco in decos:
        func = deco(func)
    if inner is _method:
        func = types.MethodType(func, object())
    return func, [inner.__name__, *(d.__name__ for d in decos)]


@settings(max_examples=400, deadline=None)
@given(
    nested(),
    st.lists(st.integers(0, 9), max_size=4),
    st.dictionaries(st.sampled_from(KEYS), st.integers(0, 9), max_size=3),
)
def test_nested_decorators_bind_what_calling_accepts(
    decorated: tuple[Any, list[str]], args: list[Any], kwargs: dict[str, Any]
) -> None:
    func, names = decorated
    method = make_method("m", func, key="m")
    try:
        method.bind(args, kwargs)
        bound = True
    except ParamError:
        bound = False
    assert bound is accepts(func, args, kwargs), (names, args, kwargs)
    if bound:  # introspection shows every keyword a caller may pass
        shown = call_signature(func).parameters
        named = {n for n, p in shown.items() if p.kind is not p.POSITIONAL_ONLY}
        if not any(p.kind is p.VAR_KEYWORD for p in shown.values()):
            assert set(kwargs) <= named, (names, kwargs, shown)


def test_keywords_added_at_any_depth_are_shown() -> None:
    def shown(func: Any) -> str:
        sig = call_signature(func, eval_str=True)
        return str(sig.replace(return_annotation=inspect.Signature.empty))

    two = passing_on(adding_a_keyword(_inner))
    assert shown(two) == "(a: int, b: int = 2, *, c: int = 3, unit='')"
    three = adding_a_required_keyword(passing_on(adding_a_keyword(_inner_kw)))
    assert shown(three) == "(a: int, *, unit='', token, **extra: Any)"
    method = types.MethodType(passing_on(adding_a_keyword(_method)), object())
    assert shown(method) == "(a: int, b: int = 2, *, c: int = 3, unit='')"


def test_a_wrapper_loop_is_not_followed_for_ever() -> None:
    func = adding_a_keyword(_inner)
    func.__wrapped__ = passing_on(func)
    method = make_method("m", func, key="m")
    assert method.signature is None and method.signature_text == "m(...)"


def test_a_chain_deeper_than_looked_through_binds_as_inspect_follows_it() -> None:
    func = adding_a_keyword(_inner)
    for _ in range(40):
        func = passing_on(func)
    method = make_method("m", func, key="m")
    assert method.bind([1], {}) == ([1], {})
    with pytest.raises(ParamError):
        method.bind([], {})


def test_a_positional_only_parameter_given_by_keyword_alone_is_refused() -> None:
    method = make_method("m", _inner_po, key="m")
    with pytest.raises(ParamError, match=r"^m\(\): .*'x'"):
        method.bind([], {"x": 0})
    assert method.bind([1], {"x": 0}) == ([1], {"x": 0})


def test_a_keyword_the_decorator_adds_is_shown_and_accepted() -> None:
    func = adding_a_keyword(_inner)
    # (functools.wraps copies the decorated function's annotations: `unit` has none.)
    shown = "(a: int, b: int = 2, *, c: int = 3, unit='') -> tuple[typing.Any, ...]"
    assert str(call_signature(func, eval_str=True)) == shown
    assert make_method("m", func, key="m").signature_text == f"m{shown}"
    # A decorator that passes everything on shows the decorated function's parameters.
    assert call_signature(passing_on(_inner)) == inspect.signature(_inner)


def test_layers_are_found_once_at_registration() -> None:
    # Per call, an undecorated function is bound by Signature.bind alone and each
    # wrapper taking arguments of its own adds one layer; pure pass-through ones none.
    assert make_method("m", _inner, key="m").passes_on is None
    assert make_method("m", passing_on(_inner), key="m").passes_on is None
    one = make_method("m", adding_a_keyword(_inner), key="m")
    assert one.passes_on == (inspect.signature(_inner),)
    deep = passing_on(adding_a_keyword(passing_on(adding_a_required_keyword(_inner))))
    layers = make_method("m", deep, key="m").passes_on
    assert layers is not None and len(layers) == 2


def test_registration_refuses_what_nobody_means_to_serve() -> None:
    """A class given for an instance (its methods would lack `self`), a plain value (its
    `bit_length`, `upper`... would be served) and a lambda without a name (served as
    "<lambda>") are mistakes, said at registration."""
    from pymprpc.server import Server

    class Counter:
        def add(self, n: int) -> int:
            return n

    server = Server(("127.0.0.1", 0))
    with pytest.raises(
        TypeError, match=r"takes an instance, got the class Counter: pass Counter\(\.\.\.\)"
    ):
        server.register_instance(Counter)
    for value in (5, "text", [1], {"a": 1}, None, 1.5, b"x"):
        with pytest.raises(TypeError, match="takes an object whose methods to serve"):
            server.register_instance(value)
    with pytest.raises(ValueError, match="a lambda has no name to be called by: pass name="):
        server.register_function(lambda a: a)
    server.register_function(name="echo")(lambda a: a)  # named: served
    server.register_function(name="to_int")(int)  # a class as a callable: a factory
    server.register_instance(Counter())
    assert {"echo", "to_int", "add"} <= set(server._core.method_names())


def test_typed_coroutines_of_plain_parameters_take_the_fast_lane() -> None:
    """A typed coroutine or plain function (which the lane runs on the process pool,
    when that is its executor) whose parameters each need one `type(x) is` check gets
    the server's fast lane (`plain_arity`: all of them given); one that needs
    conversion (a struct, a list) or mismatched names keeps the general path."""
    from pymprpc.schema import INT, STR, List, Param, Signature

    plain = Signature((Param("a", INT), Param("s", STR, "x")), INT)

    async def fast(a: int, s: str = "x") -> int:
        return a

    async def renamed(b: int, s: str = "x") -> int:
        return b

    async def more(a: int, s: str = "x", extra: int = 0) -> int:
        return a

    def sync(a: int, s: str = "x") -> int:
        return a

    assert make_method("f", fast, key="k", schema=plain).plain_arity == (2, 2)
    assert make_method("f", sync, key="k", schema=plain).plain_arity == (2, 2)
    assert make_method("f", more, key="k", schema=plain).plain_arity is None
    # Renamed: it could not take its arguments by name, as the server passes them.
    with pytest.raises(TypeError, match=r"cannot take the declared parameters \(a, s\)"):
        make_method("f", renamed, key="k", schema=plain)
    listed = Signature((Param("a", List(INT)),), INT)

    async def takes_list(a: list[int]) -> int:
        return 0

    assert make_method("f", takes_list, key="k", schema=listed).plain_arity is None


class _BrokenRepr:
    def __repr__(self) -> str:
        raise ValueError("no repr")


def _nested(levels: int) -> Any:
    value: Any = []
    for _ in range(levels):
        value = [value]
    return value


def test_a_default_whose_repr_fails_is_shown_as_dots_not_a_failed_registration() -> None:
    deep = _nested(5000)  # repr() raises RecursionError
    unshowable = _BrokenRepr()

    def broken(a: int, b: Any = unshowable, c: str = "z") -> int:
        return a

    def too_deep(a: Any = deep) -> Any:
        return a

    method = make_method("m", broken, key="m")
    assert method.signature_text == "m(a: int, b: Any = ..., c: str = 'z') -> int"
    assert method.bind([1], {}) == ([1], {})
    # (3.13's repr() takes 5,000 levels: then the default is shown as it is.)
    shown = make_method("d", too_deep, key="d").signature_text
    assert shown == "d(a: Any = ...) -> Any" or shown.startswith("d(a: Any = [[[")
