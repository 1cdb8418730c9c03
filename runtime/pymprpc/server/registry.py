"""The table of callable methods: registration, lookup (dotted names too) and binding."""

from __future__ import annotations

import contextlib
import enum
import functools
import inspect
import itertools
import logging
import types
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import NotFindError, ParamError, UnsupportSysMethodError, ValidationError, quoted
from ..schema import Signature
from ..services import INTROSPECTION_METHODS, ServiceInfo
from .executors import ExecutorChoice, ExecutorKind
from .workers import TargetTable

log = logging.getLogger(__name__)

_SYSTEM_PREFIX = "system."
_server_ids = itertools.count(1)


class Kind(enum.StrEnum):
    """How a method produces its outcome."""

    FUNCTION = "function"  # plain callable, run by an executor
    COROUTINE = "coroutine"  # awaited on the event loop
    STREAM = "stream"  # async generator: 201, 202..., 206


def _code_of(func: Callable[..., Any]) -> Callable[..., Any]:
    """The function whose code decides what calling `func` returns: `func` itself, what a
    `functools.partial` wraps, or a callable object's `__call__`.

    `inspect.iscoroutinefunction` looks through partials and bound methods but not through
    an object with an `async def __call__`: such an object would be taken for a plain
    callable, run on an executor, and its call answered with an unencodable coroutine.
    """
    while isinstance(func, functools.partial):
        func = func.func
    if inspect.isfunction(func) or inspect.ismethod(func) or inspect.isclass(func):
        return func
    call = inspect.getattr_static(type(func), "__call__", None)
    return call if inspect.isfunction(call) else func


def kind_of(func: Callable[..., Any]) -> Kind:
    code = _code_of(func)
    # `func` itself too: Python 3.12's inspect.markcoroutinefunction marks the object.
    if inspect.isasyncgenfunction(func) or inspect.isasyncgenfunction(code):
        return Kind.STREAM
    if inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(code):
        return Kind.COROUTINE
    if inspect.isgeneratorfunction(code):
        raise TypeError(
            f"{getattr(code, '__qualname__', code)!r} is a generator function: "
            "streams must be async generator functions (async def ... yield)"
        )
    return Kind.FUNCTION


def holds_state(func: Callable[..., Any]) -> bool:
    """Whether `func` carries an object whose state its calls may read or change.

    True for bound methods (a servicer's or a registered instance's), methods of builtin
    objects and callable instances; False for plain functions, whose state is module-level.
    A `functools.partial` is judged by what it wraps.
    """
    while isinstance(func, functools.partial):
        func = func.func
    if inspect.isfunction(func) or inspect.isclass(func):
        return False
    if inspect.ismethod(func):
        return True
    if inspect.isbuiltin(func):
        owner = getattr(func, "__self__", None)
        return owner is not None and not inspect.ismodule(owner)
    return True  # a callable object: its instance is its state


_VAR_POSITIONAL = inspect.Parameter.VAR_POSITIONAL
_VAR_KEYWORD = inspect.Parameter.VAR_KEYWORD
_POSITIONAL_ONLY = inspect.Parameter.POSITIONAL_ONLY
_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
_EMPTY = inspect.Parameter.empty

# Decorators looked through one by one; the rest of a deeper chain is taken as passing
# every argument on (as inspect.signature takes a whole chain).
_MAX_LAYERS = 16

# What register_instance refuses: values, whose public methods (`bit_length`, `upper`,
# `append`...) nobody means to serve.
_PLAIN_VALUES = frozenset(
    {
        int,
        float,
        complex,
        bool,
        str,
        bytes,
        bytearray,
        list,
        tuple,
        dict,
        set,
        frozenset,
        type(None),
    }
)


def _bind_skips_positional_only() -> bool:
    """Whether this Python's `Signature.bind` accepts `f(x=0)` for `f(x, /, **more)`.

    Calling `f(x=0)` raises TypeError (x is missing: the keyword goes into `more`) on
    every Python; `Signature.bind` says so on 3.11 and 3.12 but not on 3.13.0, which
    puts x into `more` and forgets x itself. Probed, not read off the version, so a
    Python that fixes it costs nothing.
    """

    def probe(x: object, /, **more: object) -> None: ...

    try:
        inspect.signature(probe).bind(x=0)
    except TypeError:
        return False
    return True


_BIND_SKIPS_POSITIONAL_ONLY = _bind_skips_positional_only()


def _needs_positional_only_check(signature: inspect.Signature) -> bool:
    """Whether `signature.bind` alone may accept a call that calling refuses: on a Python
    whose bind forgets a required positional-only parameter passed by keyword (see
    `_bind_skips_positional_only`), for a signature with one and a `**kwargs`."""
    if not _BIND_SKIPS_POSITIONAL_ONLY:
        return False
    params = signature.parameters.values()
    return any(p.kind is _VAR_KEYWORD for p in params) and any(
        p.kind is _POSITIONAL_ONLY and p.default is _EMPTY for p in params
    )


def _refuse_missing_positional_only(
    signature: inspect.Signature, bound: inspect.BoundArguments
) -> None:
    """TypeError, as calling raises, for a required positional-only parameter that a
    call gave by keyword only (a bind that skips it, see `_bind_skips_positional_only`)."""
    for param in signature.parameters.values():
        if param.kind is not _POSITIONAL_ONLY:
            return
        if param.default is _EMPTY and param.name not in bound.arguments:
            raise TypeError(
                f"missing a required positional argument: {param.name!r} (it is "
                "positional-only: pass it by position, not by keyword)"
            )


def _layers(func: Callable[..., Any], eval_str: bool) -> list[inspect.Signature]:
    """The signatures a call of `func` is bound through, outermost first: one per
    decorator's wrapper (`functools.wraps` sets `__wrapped__`) that takes arguments of
    its own and passes the rest on, then the function they end at (see `bind_through`).
    Raises what `inspect.signature` raises (ValueError for a `__wrapped__` loop).

    `inspect.signature` follows `__wrapped__` to the innermost function: the contract of
    wrappers that pass every argument on (`wrapper(*args, **kwargs)`, skipped here), but
    not of one that also takes keywords of its own (`wrapper(*args, unit="", **kwargs)`,
    at any depth: `plain(with_unit(f))` takes `unit`), nor of one that passes nothing on
    as it came (`wrapper(x)`: its own parameters decide, and the walk ends there).
    A wrapper with a `__signature__` declares its contract: the walk ends there too.
    """
    owner: Any = None
    current: Any = func
    if inspect.ismethod(func):
        # A decorated method: each layer's signature is taken as bound to the instance
        # (its first positional parameter, or a slot of *args, is the instance).
        owner, current = func.__self__, func.__func__

    def signature_of(obj: Any, follow_wrapped: bool) -> inspect.Signature:
        target = obj if owner is None else types.MethodType(obj, owner)
        return inspect.signature(target, follow_wrapped=follow_wrapped, eval_str=eval_str)

    # A `__wrapped__` loop raises ValueError here, before signatures with eval_str look at
    # annotations (inspect.get_annotations follows `__wrapped__` without a loop check).
    inspect.unwrap(current)
    layers: list[inspect.Signature] = []
    for depth in range(_MAX_LAYERS):
        wrapped = getattr(current, "__wrapped__", None)
        if wrapped is None or hasattr(current, "__signature__"):
            break
        if depth and isinstance(current, types.MethodType):
            break  # a bound method in the chain: inspect.signature stops there too
        try:
            own = signature_of(current, False)
        except (TypeError, ValueError):
            own = None  # no signature of its own (a builtin wrapper): taken as passing on
        if own is not None:
            kinds = [p.kind for p in own.parameters.values()]
            if _VAR_POSITIONAL not in kinds and _VAR_KEYWORD not in kinds:
                layers.append(own)  # it passes nothing on as it came: it decides
                return layers
            if kinds != [_VAR_POSITIONAL, _VAR_KEYWORD]:
                layers.append(own)  # arguments of its own, and the rest passed on
        current = wrapped
    layers.append(signature_of(current, True))
    return layers


def bind_through(
    outer: inspect.Signature,
    inners: tuple[inspect.Signature, ...],
    args: list[Any],
    kwargs: dict[str, Any],
    check_positional_only: bool = False,
) -> None:
    """Bind a call of a wrapper (`outer`) and, layer after layer, what each one's
    positional parameters and `*args`/`**kwargs` pass on to the next (`inners`, down to
    the decorated function); TypeError, as `Signature.bind`, if any refuses.

    `check_positional_only`: check each layer as `Signature.bind` misses on this Python
    (`_refuse_missing_positional_only`); `inners` may then be empty (`outer` alone).
    """
    bound = outer.bind(*args, **kwargs)
    if check_positional_only:
        _refuse_missing_positional_only(outer, bound)
    for inner in inners:
        rest: list[Any] = []
        named: dict[str, Any] = {}
        for param in outer.parameters.values():
            if param.kind in _POSITIONAL:
                # `wrapper(first, *args, **kwargs)` mostly passes `first` on too (a method
                # decorator's `self`, say); its keyword-only parameters it keeps.
                if param.name in bound.arguments:
                    rest.append(bound.arguments[param.name])
            elif param.kind is _VAR_POSITIONAL:
                rest.extend(bound.arguments.get(param.name, ()))
            elif param.kind is _VAR_KEYWORD:
                named = bound.arguments.get(param.name, {})
        bound = inner.bind(*rest, **named)
        if check_positional_only:
            _refuse_missing_positional_only(inner, bound)
        outer = inner


def _shown_through(outer: inspect.Signature, inner: inspect.Signature) -> inspect.Signature:
    """What a caller may pass to a wrapper (`outer`) that passes the rest on to a callable
    whose calls accept `inner`: `inner` with the keywords the wrapper adds."""
    own = [p for p in outer.parameters.values() if p.kind not in (_VAR_POSITIONAL, _VAR_KEYWORD)]
    kinds = {p.kind for p in outer.parameters.values()}
    if kinds & set(_POSITIONAL):
        return inner  # positional parameters of its own, passed on: shown as inspect does
    if kinds != {_VAR_POSITIONAL, _VAR_KEYWORD, inspect.Parameter.KEYWORD_ONLY}:
        return outer
    taken = set(inner.parameters)
    params = [p for p in inner.parameters.values() if p.kind is not _VAR_KEYWORD]
    rest = [p for p in inner.parameters.values() if p.kind is _VAR_KEYWORD]
    added = [p for p in own if p.name not in taken]
    try:
        return inner.replace(parameters=[*params, *added, *rest])
    except ValueError:  # not a valid signature once merged: the wrapper's own
        return outer


def call_signature(func: Callable[..., Any], *, eval_str: bool = False) -> inspect.Signature:
    """The arguments a call of `func` accepts, as one signature (what introspection
    shows): for decorators' wrappers that add keywords of their own and pass the rest
    on, at any depth, the decorated function's parameters with those keywords added.
    Raises what `inspect.signature` raises."""
    layers = _layers(func, eval_str)
    shown = layers[-1]
    for outer in reversed(layers[:-1]):
        shown = _shown_through(outer, shown)
    return shown


def describe_signature(name: str, func: Callable[..., Any]) -> str:
    """`name` and the arguments `func` accepts, as introspection shows them."""
    try:
        # eval_str shows `int`, not `'int'`, for modules using postponed annotations.
        return f"{name}{_signature_text(call_signature(func, eval_str=True))}"
    except (NameError, SyntaxError, AttributeError):
        pass
    except (TypeError, ValueError):
        return f"{name}(...)"
    try:
        return f"{name}{_signature_text(call_signature(func))}"
    except (TypeError, ValueError):
        return f"{name}(...)"


class _Unshown:
    """A default value whose repr() failed, shown as `...`."""

    def __repr__(self) -> str:
        return "..."


def _repr_works(value: Any) -> bool:
    try:
        repr(value)
    except Exception:  # noqa: BLE001 - user code
        return False
    return True


def _signature_text(signature: inspect.Signature) -> str:
    """`str(signature)`; a default whose repr() raises (user code: a value nested too
    deep, a broken `__repr__`) is shown as `...` rather than failing the registration."""
    try:
        return str(signature)
    except Exception:  # noqa: BLE001 - any error of a default's or annotation's repr
        pass
    unshown = _Unshown()
    params = [
        p
        if p.default is inspect.Parameter.empty or _repr_works(p.default)
        else p.replace(default=unshown)
        for p in signature.parameters.values()
    ]
    try:
        return str(signature.replace(parameters=params))
    except Exception:  # noqa: BLE001 - an annotation's repr, then
        return "(...)"


@dataclass(frozen=True, slots=True)
class Method:
    """One callable method as the server sees it."""

    name: str
    func: Callable[..., Any]
    kind: Kind
    executor: ExecutorChoice | None  # None: the server's default (plain functions only)
    deprecated: bool
    signature: inspect.Signature | None
    signature_text: str
    doc: str
    key: str  # process-pool target key
    path: tuple[str, ...] = ()  # attribute path from the target to the function
    schema: Signature[Any] | None = None  # declared types (mprpcgen): checked and converted
    fast_bind: FastBind | None = None  # quick arity check for plain signatures
    # (fewest, most) positional arguments of a coroutine or plain function without
    # schema whose call with just those needs no binding: awaited as it is, or run on the
    # process pool if that is its executor (the server's fast lane). None: bind.
    plain_arity: tuple[int, int] | None = None
    # Typed and on the fast lane: the one type a result is sent as it is with (an int
    # within 64 bits); anything else goes through `Dispatcher.encode_result`. None: always.
    plain_result: type | None = None
    # With a schema: whether calling `func` with the checked arguments by position binds
    # them as by name (its first parameters are the schema's, in order, all ordinary).
    positional: bool = False
    # A decorator's wrapper taking arguments of its own (`signature`): the signatures of
    # the wrappers and function it passes its `*args`/`**kwargs` on to, in turn, which
    # must accept them too (see bind_through). None: `signature.bind` decides alone.
    passes_on: tuple[inspect.Signature, ...] | None = None
    # Whether bind_through checks what this Python's Signature.bind misses (a required
    # positional-only parameter given by keyword into **kwargs): a layer may need it.
    check_positional_only: bool = False

    def bind(self, args: list[Any], kwargs: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
        """The arguments to call with; ParamError (402) if they do not fit."""
        if self.schema is not None:
            if self.positional and not kwargs and self.schema._fits(args):
                # What decode_args checks and returns by name, kept by position (no map).
                return args, kwargs
            try:
                return [], self.schema.decode_args(args, kwargs)
            except ValidationError as exc:
                raise ParamError(f"{self.name}(): {exc}") from None
        if self.fast_bind is not None and self.fast_bind.accepts(args, kwargs):
            return args, kwargs
        if self.signature is not None:
            try:
                if self.passes_on is None:  # one signature, which bind judges right
                    self.signature.bind(*args, **kwargs)
                else:
                    bind_through(
                        self.signature,
                        self.passes_on,
                        args,
                        kwargs,
                        self.check_positional_only,
                    )
            except TypeError as exc:
                raise ParamError(f"{self.name}(): {exc}") from None
        return args, kwargs


@dataclass(frozen=True, slots=True)
class FastBind:
    """Arity check for signatures made only of ordinary parameters.

    `inspect.Signature.bind` costs more than a small call itself; this answers the common
    "fits" case in a few comparisons and leaves every refusal (and its message) to bind.
    """

    names: tuple[str, ...]
    required: int  # the first `required` names have no default

    @classmethod
    def of(cls, signature: inspect.Signature | None) -> FastBind | None:
        if signature is None:
            return None
        names, required, seen_default = [], 0, False
        for p in signature.parameters.values():
            if p.kind is not inspect.Parameter.POSITIONAL_OR_KEYWORD:
                return None
            names.append(p.name)
            if p.default is inspect.Parameter.empty:
                if seen_default:
                    return None
                required += 1
            else:
                seen_default = True
        return cls(tuple(names), required)

    def accepts(self, args: list[Any], kwargs: dict[str, Any]) -> bool:
        n = len(args)
        names = self.names
        if n > len(names):
            return False
        if not kwargs:
            return n >= self.required
        for key in kwargs:
            try:
                index = names.index(key)
            except ValueError:
                return False
            if index < n:
                return False
        return all(name in kwargs for name in names[n : self.required])


def make_method(
    name: str,
    func: Callable[..., Any],
    *,
    key: str,
    path: tuple[str, ...] = (),
    executor: ExecutorChoice | None = None,
    deprecated: bool = False,
    signature: str | None = None,
    doc: str | None = None,
    schema: Signature[Any] | None = None,
) -> Method:
    passes_on: tuple[inspect.Signature, ...] | None = None
    check_positional_only = False
    sig: inspect.Signature | None
    try:
        sig, *inners = _layers(func, False)
    except (TypeError, ValueError):
        sig = None
    else:
        check_positional_only = any(map(_needs_positional_only_check, [sig, *inners]))
        if inners or check_positional_only:
            passes_on = tuple(inners)
    kind = kind_of(func)
    fast_bind = FastBind.of(sig)
    names = tuple(p.name for p in schema.params) if schema is not None else ()
    if schema is not None and sig is not None:
        _check_takes_by_name(name, func, sig, names)
    positional = fast_bind is not None and fast_bind.names[: len(names)] == names
    plain_arity = None
    plain_result = None
    if kind is not Kind.STREAM and fast_bind is not None:
        if schema is None:
            plain_arity = (fast_bind.required, len(fast_bind.names))
        elif positional and schema._exact is not None and len(fast_bind.names) == len(names):
            # Typed, each parameter of one plain type: called with every argument given,
            # the server's fast lane checks them with the signature's compiled `fits`
            # (one `type(x) is` each) and encodes the result as `_execute` does.
            plain_arity = (len(names), len(names))
            if not schema.stream and isinstance(schema._result_exact, type):
                plain_result = schema._result_exact
    return Method(
        name=name,
        func=func,
        kind=kind,
        executor=executor,
        deprecated=deprecated,
        signature=sig,
        signature_text=signature or describe_signature(name, func),
        doc=inspect.cleandoc(doc) if doc is not None else _doc_of(func),
        key=key,
        path=path,
        schema=schema,
        fast_bind=fast_bind,
        plain_arity=plain_arity,
        plain_result=plain_result,
        positional=positional,
        passes_on=passes_on,
        check_positional_only=check_positional_only,
    )


def _check_takes_by_name(
    name: str, func: Callable[..., Any], sig: inspect.Signature, names: tuple[str, ...]
) -> None:
    """Refuse, at registration, a typed method whose handler cannot take the declared
    parameters by name (as the server passes them): renamed, positional-only, missing.
    Every call to it would otherwise fail with a TypeError (404)."""
    try:
        sig.bind(**dict.fromkeys(names))
    except TypeError as exc:
        shown = getattr(func, "__qualname__", None) or repr(func)
        raise TypeError(
            f"{name}: {shown}{sig} cannot take the declared parameters "
            f"({', '.join(names) or 'none'}) by name, as the server passes them ({exc}): "
            "name its parameters as the interface declares them"
        ) from None


def _doc_of(func: Callable[..., Any]) -> str:
    """`func`'s docstring; a `functools.partial`'s is the function's, not partial's own."""
    while isinstance(func, functools.partial):
        func = func.func
    return (inspect.getdoc(func) or "").strip()


def _describe(func: Callable[..., Any]) -> str:
    while isinstance(func, functools.partial):
        func = func.func
    return str(getattr(func, "__qualname__", None) or repr(func))


def _restore(table: dict[Any, Any], before: dict[Any, Any]) -> None:
    """Make `table` equal `before` again, touching only the entries that differ."""
    for key in [k for k in table if k not in before]:
        del table[key]
    for key, value in before.items():
        if table.get(key) is not value:
            table[key] = value


class DuplicateMethodError(ValueError):
    """A registration would replace a method already registered under the same name."""


class DuplicateServiceError(ValueError):
    """A service is already registered under the same name and prefix."""


def _owner_name(func: Callable[..., Any]) -> str:
    while isinstance(func, functools.partial):
        func = func.func
    owner = getattr(func, "__self__", func)
    return f"its {type(owner).__name__} instance"


class Registry:
    """Names -> methods for one server."""

    def __init__(
        self,
        function_executor: ExecutorChoice = ExecutorKind.PROCESS,
        method_executor: ExecutorChoice = ExecutorKind.THREAD,
    ) -> None:
        """`function_executor` runs plain functions that were registered without an
        `executor=`; `method_executor` runs bound methods and other callables that hold
        state (a servicer's, a registered instance's), so that calls share that state."""
        self.function_executor = function_executor
        self.method_executor = method_executor
        self._prefix = f"srv{next(_server_ids)}:"
        # What this server's process workers can call: filled here, forked by the pool.
        self.targets = TargetTable()
        self._methods: dict[str, Method] = {}
        # Read-only, for lookups by exact name on the hot path (no call frame of ours).
        self.methods: Mapping[str, Method] = types.MappingProxyType(self._methods)
        # (key, instance allowing dotted names or None, executor asked for at registration)
        self._dotted: list[tuple[str, Any, ExecutorChoice | None]] = []
        # (name, prefix) -> the service's entry: one per mount of a service.
        self._services: dict[tuple[str, str], ServiceInfo] = {}

    def names(self) -> list[str]:
        return sorted(self._methods)

    @contextlib.contextmanager
    def atomic(self) -> Iterator[None]:
        """Within the block, registrations are all-or-nothing: if it raises, every method
        and service it added or replaced is as it was before the block.

        Only what changed is put back, entry by entry, so a server already serving keeps
        answering the names the block did not touch while it unwinds.
        """
        methods = dict(self._methods)
        services = dict(self._services)
        dotted = len(self._dotted)
        try:
            yield
        except BaseException:
            _restore(self._methods, methods)
            _restore(self._services, services)
            del self._dotted[dotted:]
            # Targets published for the removed methods stay in the table: their keys
            # are reachable only through a registered method, so they are never called.
            raise

    def add_service(self, info: ServiceInfo, *, replace: bool = False) -> ServiceInfo:
        """Record that `info`'s methods, already registered, form a service.

        Raises:
            ValueError: a method of `info` is not registered (or is named twice), or the
                name is empty.
            DuplicateServiceError: a service of that name is already registered under
                that prefix, and `replace` is false.
        """
        if not info.name:
            raise ValueError("a service needs a name")
        doubled = sorted({m for m in info.methods if info.methods.count(m) > 1})
        if doubled:
            raise ValueError(f"service {info.name!r} names {', '.join(map(repr, doubled))} twice")
        missing = [n for n in info.wire_names if n not in self._methods]
        if missing:
            raise ValueError(
                f"service {info.name!r} lists {', '.join(map(repr, missing))}, which "
                f"{'is' if len(missing) == 1 else 'are'} not registered: register the "
                "methods first (register_function, register_instance), with the prefix"
            )
        key = (info.name, info.prefix)
        if not replace and key in self._services:
            where = f"under prefix {info.prefix!r}" if info.prefix else "without a prefix"
            raise DuplicateServiceError(
                f"service {info.name!r} is already registered {where}; serve it again "
                "under another prefix, or pass replace=True"
            )
        self._services[key] = info
        return info

    def services(self) -> list[ServiceInfo]:
        """Every registered service, by name then prefix."""
        return [self._services[key] for key in sorted(self._services)]

    def add_function(
        self,
        func: Callable[..., Any],
        name: str | None = None,
        *,
        executor: ExecutorChoice | None = None,
        deprecated: bool = False,
        signature: str | None = None,
        doc: str | None = None,
        schema: Signature[Any] | None = None,
        replace: bool = False,
    ) -> Method:
        name = name or getattr(func, "__name__", None)
        if not name or not isinstance(name, str):
            raise ValueError(f"cannot infer a method name for {func!r}: pass name=")
        if name == "<lambda>":
            # Served as "<lambda>", every lambda would share one name no client means.
            raise ValueError("a lambda has no name to be called by: pass name=")
        if not replace:
            self._refuse_replacing(name, func)
        key = self._prefix + name
        method = make_method(
            name,
            func,
            key=key,
            executor=self._executor_for(name, func, executor),
            deprecated=deprecated,
            signature=signature,
            doc=doc,
            schema=schema,
        )
        self._methods[name] = method
        if method.executor is ExecutorKind.PROCESS:
            self.targets.publish(key, func)
        return method

    def add_instance(
        self,
        obj: Any,
        allow_dotted_names: bool = False,
        *,
        executor: ExecutorChoice | None = None,
        replace: bool = False,
    ) -> list[Method]:
        if isinstance(obj, type):
            # Its methods would be served unbound: every call would lack `self`.
            raise TypeError(
                f"register_instance() takes an instance, got the class {obj.__name__}: "
                f"pass {obj.__name__}(...)"
            )
        if type(obj) in _PLAIN_VALUES:
            raise TypeError(
                f"register_instance() takes an object whose methods to serve, got "
                f"{type(obj).__name__} {obj!r:.40}"
            )
        if not replace:
            for attr in dir(obj):
                func = getattr(obj, attr, None) if not attr.startswith("_") else None
                if callable(func) and not inspect.isclass(func):
                    self._refuse_replacing(attr, func)
        key = self._prefix + f"instance{len(self._dotted)}:{type(obj).__name__}"
        added = []
        for attr in dir(obj):
            if attr.startswith("_"):
                continue
            func = getattr(obj, attr, None)
            if not callable(func) or inspect.isclass(func):
                continue
            method = make_method(
                attr,
                func,
                key=key,
                path=(attr,),
                executor=self._executor_for(attr, func, executor, stateful=True, quiet=True),
            )
            self._methods[attr] = method
            added.append(method)
        forked = [m.name for m in added if m.executor is ExecutorKind.PROCESS]
        dotted_forked = (
            allow_dotted_names and (executor or self.method_executor) is ExecutorKind.PROCESS
        )
        if forked or dotted_forked:
            self.targets.publish(key, obj)
        if forked:
            log.info(
                "%s of %s run in the process pool: each worker process holds its own copy of "
                "the instance, so changes one call makes to it are not seen by other calls",
                ", ".join(forked),
                type(obj).__name__,
            )
        self._dotted.append((key, obj if allow_dotted_names else None, executor))
        return added

    def _refuse_replacing(self, name: str, func: Callable[..., Any]) -> None:
        """Two services with a method of the same name must not silently replace each
        other (`Customers.get` answering as `Invoices.get`)."""
        existing = self._methods.get(name)
        if existing is not None:
            raise DuplicateMethodError(
                f"method {name!r} is already registered ({_describe(existing.func)}); "
                f"registering {_describe(func)} would replace it. Pass replace=True to "
                "replace it, or serve one service under a prefix "
                '(register_<service>(server, servicer, prefix="name."))'
            )

    def add_method(self, method: Method) -> None:
        self._methods[method.name] = method
        if method.kind is Kind.FUNCTION and method.executor is ExecutorKind.PROCESS:
            self.targets.publish(method.key, method.func)

    def _executor_for(
        self,
        name: str,
        func: Callable[..., Any],
        asked: ExecutorChoice | None,
        *,
        stateful: bool | None = None,
        quiet: bool = False,
    ) -> ExecutorChoice | None:
        """Where `func` runs if it is a plain callable (None for coroutines and streams).

        A callable holding state (a bound method, a callable object) runs where it shares
        that state unless the caller asked for another executor: a forked worker would
        mutate its own copy, and the server would silently lose the write.
        """
        if kind_of(func) is not Kind.FUNCTION:
            return None  # coroutines and streams run on the event loop
        if stateful is None:
            stateful = holds_state(func)
        if asked is None:
            asked = self.method_executor if stateful else self.function_executor
        if stateful and asked is ExecutorKind.PROCESS and not quiet:
            log.info(
                "%s runs in the process pool: each worker process holds its own copy of "
                "%s, so changes one call makes to it are not seen by other calls",
                name,
                _owner_name(func),
            )
        return asked

    def uses_executor(self, kind: ExecutorKind) -> bool:
        """Whether any registered plain function runs on executor `kind`."""
        return any(m.kind is Kind.FUNCTION and m.executor is kind for m in self._methods.values())

    def get(self, name: str) -> Method | None:
        return self._methods.get(name)

    def resolve(self, name: str) -> Method:
        """The method called `name`; NotFindError (401) or UnsupportSysMethodError (406)."""
        method = self._methods.get(name)
        if method is not None:
            return method
        if name.startswith(_SYSTEM_PREFIX):
            if name in INTROSPECTION_METHODS:
                raise UnsupportSysMethodError(
                    f"system method {quoted(name)} is not enabled on this server: its "
                    "owner enables introspection with server.register_introspection_functions()"
                )
            raise UnsupportSysMethodError(f"unsupported system method {quoted(name)}")
        if "." in name:
            found = self._resolve_dotted(name)
            if found is not None:
                return found
        if "system.listMethods" in self._methods:  # introspection is registered
            raise NotFindError(f"no method named {quoted(name)} (system.listMethods lists them)")
        raise NotFindError(
            f"no method named {quoted(name)}: check its spelling, and that this server registers it"
        )

    def _resolve_dotted(self, name: str) -> Method | None:
        parts = tuple(name.split("."))
        if any(not p or p.startswith("_") for p in parts):
            return None  # private attributes are never reachable
        for key, obj, asked in self._dotted:
            if obj is None:
                continue
            target: Any = obj
            try:
                for part in parts:
                    target = getattr(target, part)
            except AttributeError:
                continue
            if callable(target) and not inspect.isclass(target):
                # Reached through the instance, so it shares the instance's state.
                executor = self._executor_for(name, target, asked, stateful=True, quiet=True)
                return make_method(name, target, key=key, path=parts, executor=executor)
        return None
