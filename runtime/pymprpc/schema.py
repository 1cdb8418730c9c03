"""Typed wire schemas: validate and convert values between the wire and Python types.

This is the one place mapping interface types to Python: mprpcgen's generated code
declares its structs, enums and method signatures with these schemas, and the server uses
them to check arguments before an implementation runs (402 naming the bad value's path,
e.g. `shape.points[2].x: expected float, got str`).

| IDL          | Python           | wire                        |
|--------------|------------------|-----------------------------|
| `bool`       | `bool`           | boolean                     |
| `int`        | `int`            | integer (not a boolean)     |
| `float`      | `float`          | number (an int is widened)  |
| `str`        | `str`            | string                      |
| `bytes`      | `bytes`          | MessagePack bin             |
| `any`        | `Any`            | anything                    |
| `none`       | `None`           | null                        |
| `list<T>`    | `list[T]`        | array                       |
| `map<str,T>` | `dict[str, T]`   | map with string keys        |
| `T?`         | `T | None`       | `T` or null                 |
| `struct S`   | dataclass `S`    | map of field name → value   |
| `enum E`     | `IntEnum` `E`    | the member's integer        |
"""

from __future__ import annotations

import copy
import dataclasses
import enum
import functools
import warnings
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Generator,
    Iterator,
    Mapping,
    Sequence,
)
from typing import Any, Generic, TypeVar

from .errors import ExpireWarning, ValidationError

T = TypeVar("T")
E = TypeVar("E", bound=enum.IntEnum)

__all__ = [
    "ANY",
    "BOOL",
    "BYTES",
    "FLOAT",
    "INT",
    "INT_MAX",
    "INT_MIN",
    "NONE",
    "PRIMITIVES",
    "STR",
    "Enum",
    "List",
    "Map",
    "Optional",
    "Param",
    "Schema",
    "Signature",
    "Struct",
    "ValidationError",
    "decode_async_stream",
    "decode_stream",
]


def _kind(value: Any) -> str:
    if value is None:
        return "none"
    return {
        bool: "bool",
        int: "int",
        float: "float",
        str: "str",
        bytes: "bytes",
        list: "list",
        tuple: "list",
        dict: "map",
    }.get(type(value), type(value).__name__)


class Schema(Generic[T]):
    """Converts one declared type: `decode` checks a wire value, `encode` makes one."""

    name = "any"

    def decode(self, value: Any, path: str) -> T:
        """Check a value received from the wire and convert it to the Python type.

        Args:
            value: the decoded MessagePack/JSON value.
            path: where the value sits, for the error (e.g. `shape.points[2].x`).

        Raises:
            ValidationError: the value does not match the declared type.
        """
        raise NotImplementedError

    def encode(self, value: T) -> Any:
        """The wire form of a Python value of the declared type (unchecked)."""
        return value

    def _fail(self, value: Any, path: str) -> ValidationError:
        return ValidationError(path, f"expected {self.name}, got {_kind(value)}")


class _Any(Schema[Any]):
    def decode(self, value: Any, path: str) -> Any:
        return value


class _Exact(Schema[T]):
    def __init__(self, name: str, type_: type[T]) -> None:
        self.name = name
        self._type = type_

    def decode(self, value: Any, path: str) -> T:
        # Exact type: bool is an int subclass but not an int on the wire.
        if type(value) is not self._type:
            raise self._fail(value, path)
        return value


class _Float(Schema[float]):
    name = "float"

    def decode(self, value: Any, path: str) -> float:
        if type(value) is float:
            return value
        if type(value) is int:
            try:
                return float(value)
            except OverflowError:  # past 1.8e308 (a JSON peer may send such an int)
                raise ValidationError(
                    path, "expected float, got an int too large for one"
                ) from None
        raise self._fail(value, path)


class _None(Schema[None]):
    name = "none"

    def decode(self, value: Any, path: str) -> None:
        if value is not None:
            raise self._fail(value, path)


# MessagePack integers: int64 or uint64.
INT_MIN = -(2**63)
INT_MAX = 2**64 - 1


class _Int(_Exact[int]):
    """An integer MessagePack can carry: refused beyond 64 bits on both ways."""

    def __init__(self) -> None:
        super().__init__("int", int)

    def decode(self, value: Any, path: str) -> int:
        result = super().decode(value, path)
        if not INT_MIN <= result <= INT_MAX:
            raise _out_of_range(path)
        return result

    def encode(self, value: int) -> Any:
        if type(value) is int and not INT_MIN <= value <= INT_MAX:
            raise _out_of_range("value")
        return value


def _out_of_range(path: str) -> ValidationError:
    return ValidationError(
        path, f"integer out of MessagePack's 64-bit range [{INT_MIN}, {INT_MAX}]"
    )


ANY: Schema[Any] = _Any()
BOOL: Schema[bool] = _Exact("bool", bool)
INT: Schema[int] = _Int()
FLOAT: Schema[float] = _Float()
STR: Schema[str] = _Exact("str", str)
BYTES: Schema[bytes] = _Exact("bytes", bytes)
NONE: Schema[None] = _None()

# IDL primitive name -> (Python annotation, schema constant name in this module).
PRIMITIVES: dict[str, tuple[str, str]] = {
    "bool": ("bool", "BOOL"),
    "int": ("int", "INT"),
    "float": ("float", "FLOAT"),
    "str": ("str", "STR"),
    "bytes": ("bytes", "BYTES"),
    "any": ("Any", "ANY"),
    "none": ("None", "NONE"),
}


class List(Schema[list[T]]):
    """`list<T>`: an array whose items all match `item`."""

    def __init__(self, item: Schema[T]) -> None:
        self.item = item
        self.name = f"list<{item.name}>"

    def decode(self, value: Any, path: str) -> list[T]:
        """A list of decoded items (ValidationError naming the first bad item)."""
        if not isinstance(value, list | tuple):
            raise self._fail(value, path)
        item = self.item
        return [item.decode(v, f"{path}[{i}]") for i, v in enumerate(value)]

    def encode(self, value: list[T]) -> Any:
        """An array of encoded items."""
        item = self.item
        return [item.encode(v) for v in value]


class Map(Schema[dict[str, T]]):
    """`map<str, T>`: a map with string keys whose values all match `value`."""

    def __init__(self, value: Schema[T]) -> None:
        self.value = value
        self.name = f"map<str, {value.name}>"

    def decode(self, value: Any, path: str) -> dict[str, T]:
        """A dict of decoded values (ValidationError for a non-string key or a bad value)."""
        if not isinstance(value, dict):
            raise self._fail(value, path)
        out = {}
        for k, v in value.items():
            if type(k) is not str:
                raise ValidationError(f"{path}[{k!r}]", f"map keys must be str, got {_kind(k)}")
            out[k] = self.value.decode(v, f"{path}[{k!r}]")
        return out

    def encode(self, value: dict[str, T]) -> Any:
        """A map of encoded values."""
        enc = self.value.encode
        return {k: enc(v) for k, v in value.items()}


class Optional(Schema[T | None]):
    """`T?`: null, or a value matching `inner`."""

    def __init__(self, inner: Schema[T]) -> None:
        self.inner = inner
        self.name = f"{inner.name}?"

    def decode(self, value: Any, path: str) -> T | None:
        """None for null, else the inner schema's decoding."""
        return None if value is None else self.inner.decode(value, path)

    def encode(self, value: T | None) -> Any:
        """Null for None, else the inner schema's encoding."""
        return None if value is None else self.inner.encode(value)


class Enum(Schema[E]):
    """An IntEnum travelling as its integer value."""

    def __init__(self, cls: type[E]) -> None:
        self.cls = cls
        self.name = cls.__name__

    def decode(self, value: Any, path: str) -> E:
        """The member with this integer value (ValidationError listing the members)."""
        if type(value) is not int:
            raise self._fail(value, path)
        try:
            return self.cls(value)
        except ValueError:
            allowed = ", ".join(f"{m.name}={m.value}" for m in self.cls)
            raise ValidationError(
                path, f"{value} is not a {self.name} (one of {allowed})"
            ) from None

    def encode(self, value: E) -> Any:
        """The member's integer value."""
        return int(value)


class Struct(Schema[T]):
    """A dataclass travelling as a map of its fields.

    `fields` is a callable so that structs may refer to each other (and to themselves,
    through list/optional/map) before all are defined.
    """

    def __init__(self, cls: type[T], fields: Callable[[], Mapping[str, Schema[Any]]]) -> None:
        self.cls = cls
        self.name = cls.__name__
        self._fields_factory = fields
        self._fields: Mapping[str, Schema[Any]] | None = None
        self._required: frozenset[str] = frozenset(
            f.name
            for f in dataclasses.fields(cls)  # type: ignore[arg-type]
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        )

    @property
    def fields(self) -> Mapping[str, Schema[Any]]:
        """Field name -> schema, resolved on first use."""
        if self._fields is None:
            self._fields = self._fields_factory()
        return self._fields

    def decode(self, value: Any, path: str) -> T:
        """An instance built from a map (or the instance itself).

        Unknown keys are ignored; a missing required field or a bad field value raises
        ValidationError with the field's path.
        """
        if isinstance(value, self.cls):
            return value
        if not isinstance(value, dict):
            raise self._fail(value, path)
        kwargs = {}
        for name, schema in self.fields.items():
            if name in value:
                kwargs[name] = schema.decode(value[name], f"{path}.{name}")
            elif name in self._required:
                raise ValidationError(f"{path}.{name}", "missing required field")
        # Unknown keys are ignored, so a peer with a newer struct can still talk to us.
        return self.cls(**kwargs)

    def encode(self, value: T) -> Any:
        """A map of every field's encoded value."""
        return {name: schema.encode(getattr(value, name)) for name, schema in self.fields.items()}


_REQUIRED: Any = object()
_NOT_EXACT: Any = object()


def _exact_type(schema: Schema[Any]) -> type | Any | None:
    """The one type a value of `schema` has on the wire and in Python alike (None: any
    value), or _NOT_EXACT when decoding may convert or look inside it."""
    if type(schema) is _Any:
        return None
    if type(schema) is _Exact or type(schema) is _Int:
        return schema._type  # an int is range-checked by the fast path too
    if type(schema) is _Float:
        return float  # an int is widened by the full path
    if type(schema) is _None:
        return type(None)
    return _NOT_EXACT


@dataclasses.dataclass(frozen=True, slots=True)
class Param:
    """One declared parameter (without a `default`, it is required)."""

    name: str
    schema: Schema[Any]
    default: Any = _REQUIRED

    @property
    def required(self) -> bool:
        """Whether the parameter has no default."""
        return self.default is _REQUIRED


R = TypeVar("R")


@dataclasses.dataclass(frozen=True, slots=True)
class Signature(Generic[R]):
    """A method's declared parameters and result (the item type, for a stream).

    `name` is the method's Python name (used in error paths, `add()`), `wire` the name
    clients call (mprpcgen's `@wire`); both are optional for hand-written schemas.
    """

    params: tuple[Param, ...]
    result: Schema[R]
    name: str = ""
    wire: str = ""

    # Precomputed from `params`: the cost of checking a call then follows what its values
    # need, and plain values (ints, strs...) are checked with one `type(x) is` each.
    _names: tuple[str, ...] = dataclasses.field(init=False, repr=False, compare=False)
    # Per parameter, the one type its value must have (None: anything), or None when some
    # parameter needs more than a type check (conversion, containers, structs).
    _exact: tuple[type | None, ...] | None = dataclasses.field(
        init=False, repr=False, compare=False
    )
    _plain_encode: bool = dataclasses.field(init=False, repr=False, compare=False)
    # The one type a result must have to be returned as it is (None: anything), or
    # _NOT_EXACT when checking it needs the schema (conversion, containers, structs).
    _result_exact: Any = dataclasses.field(init=False, repr=False, compare=False)
    # `fits` and `wire_args` compiled for these parameters (see _compile_fits): what the
    # server and the async client call per call, with no loop and no frame of `self`.
    _fits: Callable[[Sequence[Any]], bool] = dataclasses.field(
        init=False, repr=False, compare=False
    )
    _wire_args: Callable[[Sequence[Any]], Sequence[Any]] = dataclasses.field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        exact: list[type | None] | None = []
        for param in self.params:
            kind = _exact_type(param.schema)
            if kind is _NOT_EXACT or exact is None:
                exact = None
            else:
                exact.append(kind)
        object.__setattr__(self, "_names", tuple(p.name for p in self.params))
        object.__setattr__(self, "_result_exact", _exact_type(self.result))
        object.__setattr__(self, "_exact", None if exact is None else tuple(exact))
        object.__setattr__(
            self,
            "_plain_encode",
            # Sent as they are (an int is range-checked on the fast path).
            all(
                type(p.schema).encode is Schema.encode or type(p.schema) is _Int
                for p in self.params
            ),
        )
        object.__setattr__(self, "_fits", _compile_fits(self._exact))
        object.__setattr__(
            self,
            "_wire_args",
            _compile_wire_args(len(self.params), self.encode_args)
            if self._plain_encode
            else self._encoded_args,
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuilt from the declared fields: the compiled checks are not picklable.
        return (type(self), (self.params, self.result, self.name, self.wire))

    @property
    def path(self) -> str:
        """Where a result error points: the method as called, e.g. `add()`."""
        return f"{self.name}()"

    def decode_result(self, value: Any) -> R:
        """The result checked against the declared type (ValidationError naming it)."""
        kind = self._result_exact
        if kind is None:
            return value  # type: ignore[no-any-return]  # Any
        if type(value) is kind and (kind is not int or INT_MIN <= value <= INT_MAX):
            return value  # type: ignore[no-any-return]
        return self.result.decode(value, self.path)

    def decode_stream(self, stream: Iterator[Any]) -> Iterator[R]:
        """The items of a blocking stream, each checked; closing it cancels the stream."""
        return decode_stream(stream, self.result, self.path)

    async def open_stream(
        self,
        call: Callable[[str, list[Any]], Awaitable[AsyncIterator[Any]]],
        args: list[Any],
        prefix: str = "",
    ) -> AsyncIterator[R]:
        """Call `prefix + wire` when iteration starts and yield its checked items, so that
        a client writes `async for item in client.count(3)` (no await before the stream)."""
        stream = await call(prefix + self.wire, args)
        items = decode_async_stream(stream, self.result, self.path)
        try:
            async for item in items:
                yield item
        finally:
            await items.aclose()  # cancels the call if the caller stopped early

    def warn_deprecated(self) -> None:
        """Warn at the caller's caller that a deprecated oneway method was called (no reply
        comes back to carry the server's 300, so the client says it)."""
        warnings.warn(f"{self.wire or self.name}() is deprecated", ExpireWarning, stacklevel=3)

    def fits(self, args: Sequence[Any]) -> bool:
        """Whether `args`, one positional value per parameter, are already what
        `decode_args` makes of them: values of the declared types that need no converting
        (ints in range, strs...). False says nothing: `decode_args` decides (and explains)."""
        return self._fits(args)

    def decode_args(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """Bind wire arguments to parameters and check their types (ValidationError)."""
        if not kwargs and self._fits(args):
            return dict(zip(self._names, args, strict=True))
        params = self.params
        if len(args) > len(params):
            raise ValidationError("arguments", f"takes {len(params)} argument(s), got {len(args)}")
        bound: dict[str, Any] = {}
        for param, value in zip(params, args, strict=False):
            bound[param.name] = value
        names = {p.name for p in params}
        for name, value in kwargs.items():
            if name not in names:
                raise ValidationError(name, "unexpected argument")
            if name in bound:
                raise ValidationError(name, "given both by position and by name")
            bound[name] = value
        out: dict[str, Any] = {}
        for param in params:
            if param.name in bound:
                out[param.name] = param.schema.decode(bound[param.name], param.name)
            elif param.required:
                raise ValidationError(param.name, "missing required argument")
            else:
                # The declared default, whatever the handler's own says (a copy: an
                # IDL's `[]`/`{}` must not be shared between calls).
                default = param.default
                out[param.name] = copy.copy(default) if type(default) in (list, dict) else default
        return out

    def encode_args(self, *args: Any) -> list[Any]:
        """Positional wire arguments for the given Python values, in declared order."""
        if self._plain_encode and len(args) == len(self.params):
            for value in args:
                if type(value) is int and not INT_MIN <= value <= INT_MAX:
                    break  # the full path says which value is out of range
            else:
                return list(args)
        return [p.schema.encode(v) for p, v in zip(self.params, args, strict=True)]

    def wire_args(self, args: Sequence[Any]) -> Sequence[Any]:
        """`encode_args(*args)`, as a sequence: `args` itself (not copied) when its values
        go on the wire as they are."""
        return self._wire_args(args)

    def _encoded_args(self, args: Sequence[Any]) -> list[Any]:
        return self.encode_args(*args)


# Signatures with more parameters than this check them in a loop (`_fits_loop`): the
# compiled function's size follows the parameters' count.
_UNROLL_MAX = 16


def _fits_never(args: Sequence[Any]) -> bool:
    return False


def _fits_loop(exact: tuple[type | None, ...], args: Sequence[Any]) -> bool:
    if len(args) != len(exact):
        return False
    for kind, value in zip(exact, args, strict=True):
        if kind is not None and type(value) is not kind:
            return False
        if kind is int and not INT_MIN <= value <= INT_MAX:
            return False
    return True


def _compile(source: str, namespace: dict[str, Any]) -> Callable[..., Any]:
    # The source is built from parameter positions alone (a0, k0...): no name or text
    # from a schema reaches it, whatever the IDL declared.
    exec(compile(source, "<pymprpc.schema>", "exec"), namespace)
    return namespace["f"]  # type: ignore[no-any-return]


def _compile_fits(exact: tuple[type | None, ...] | None) -> Callable[[Sequence[Any]], bool]:
    """`Signature.fits` for parameters whose values need one exact type each (`exact`):
    one `type(x) is` (and, for an int, a range check) per value, unrolled."""
    if exact is None:
        return _fits_never
    if len(exact) > _UNROLL_MAX:
        return functools.partial(_fits_loop, exact)
    namespace: dict[str, Any] = {"MIN": INT_MIN, "MAX": INT_MAX}
    tests = []
    for i, kind in enumerate(exact):
        if kind is not None:
            namespace[f"k{i}"] = kind
            tests.append(f"type(a{i}) is k{i}")
            if kind is int:
                tests.append(f"MIN <= a{i} <= MAX")
    names = "".join(f"a{i}, " for i in range(len(exact)))
    source = (
        f"def f(args):\n"
        f"    if len(args) != {len(exact)}:\n"
        f"        return False\n"
        + (f"    {names}= args\n" if exact else "")
        + f"    return {' and '.join(tests) or 'True'}\n"
    )
    return _compile(source, namespace)


def _compile_wire_args(
    count: int, encode_args: Callable[..., list[Any]]
) -> Callable[[Sequence[Any]], Sequence[Any]]:
    """`Signature.wire_args` for `count` parameters that go on the wire as they are: the
    arguments themselves unless one is an int out of range (`encode_args` says which)."""
    if count > _UNROLL_MAX:
        return functools.partial(_wire_args_loop, count, encode_args)
    namespace: dict[str, Any] = {"MIN": INT_MIN, "MAX": INT_MAX, "encode": encode_args}
    tests = " and ".join(f"(type(a{i}) is not int or MIN <= a{i} <= MAX)" for i in range(count))
    names = "".join(f"a{i}, " for i in range(count))
    source = (
        f"def f(args):\n"
        f"    if len(args) == {count}:\n"
        + (f"        {names}= args\n" if count else "")
        + f"        if {tests or 'True'}:\n"
        f"            return args\n"
        f"    return encode(*args)\n"
    )
    return _compile(source, namespace)


def _wire_args_loop(
    count: int, encode_args: Callable[..., list[Any]], args: Sequence[Any]
) -> Sequence[Any]:
    if len(args) == count:
        for value in args:
            if type(value) is int and not INT_MIN <= value <= INT_MAX:
                break  # encode_args says which value is out of range
        else:
            return args
    return encode_args(*args)


def decode_stream(stream: Iterator[Any], item: Schema[T], path: str) -> Generator[T, None, None]:
    """Decode each item of a sync stream; closing this closes (cancels) the stream."""
    try:
        for i, value in enumerate(stream):
            yield item.decode(value, f"{path}[{i}]")
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()


async def decode_async_stream(
    stream: AsyncIterator[Any], item: Schema[T], path: str
) -> AsyncGenerator[T, None]:
    """Decode each item of an async stream; closing this closes (cancels) the stream."""
    i = 0
    try:
        async for value in stream:
            yield item.decode(value, f"{path}[{i}]")
            i += 1
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()
