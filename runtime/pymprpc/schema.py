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
import threading
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
from typing import Any, Generic, TypeVar, cast

from .errors import ExpireWarning, ParamError, ValidationError
from .protocol.codec import find_too_deep, find_unencodable

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
    "encode_async_stream",
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


class _Mismatch(Exception):
    """A value does not fit its schema: raised inside the checks, with where it sits
    added on the way out (innermost part first). No path text is built for values that
    fit, and a container adds its part only to the one error that crosses it."""

    def __init__(self, problem: str, where: str = "") -> None:
        super().__init__(problem)
        self.problem = problem
        self.where = [where] if where else []

    def at(self, path: str) -> ValidationError:
        """The error to raise for a value found at `path` (a deep one's path is cut in
        the middle: a message stays readable, and small, however deep the value)."""
        where = self.where
        if len(where) > _PATH_PARTS:
            head, tail = where[-_PATH_HEAD:], where[: _PATH_PARTS - _PATH_HEAD]
            skipped = len(where) - len(head) - len(tail)
            text = "".join(reversed(head)) + f"...({skipped} more)..." + "".join(reversed(tail))
        else:
            text = "".join(reversed(where))
        return ValidationError(path + text, self.problem)


# A path of more parts than this keeps its first and last ones (each part is at most ~45
# characters: a map key is shortened, see _key).
_PATH_PARTS = 24
_PATH_HEAD = 4


class _Nesting(threading.local):
    """How deep the struct being checked sits: in this thread (`here`), and in the
    threads that handed the check on to this one (`above`)."""

    here = 0
    above = 0


_NESTING = _Nesting()
# Self-referential structs are the only types whose values nest without bound (an IDL's
# types nest at most 32 levels), and a struct level costs a check up to ~6 frames. After
# this many, the rest is checked in a new thread, whose recursion depth starts at 0: a
# value as deep as MessagePack carries is checked without Python's recursion limit ever
# being raised (a process-wide setting: lowering it back while another thread is deeper
# kills the interpreter on 3.11).
_STRUCTS_PER_THREAD = 100
# Deeper cannot travel: MessagePack nests 1,024 levels, a call's envelope takes 2.
_MAX_NESTING = 1022
_TOO_DEEP = f"nested deeper than MessagePack carries ({_MAX_NESTING} levels)"


def _nested(check: Callable[[Any], Any], value: Any) -> Any:
    """`check(value)` for one more struct level: in this thread, or in a new one."""
    nesting = _NESTING
    here = nesting.here
    above = nesting.above
    if above + here >= _MAX_NESTING:
        raise _Mismatch(_TOO_DEEP)
    if here >= _STRUCTS_PER_THREAD:
        return _in_new_thread(check, value, above + here)
    nesting.here = here + 1
    try:
        return check(value)
    finally:
        nesting.here = here


def _in_new_thread(check: Callable[[Any], Any], value: Any, above: int) -> Any:
    outcome: list[tuple[bool, Any]] = []

    def run() -> None:
        _NESTING.above = above
        _NESTING.here = 1  # the struct being checked
        try:
            outcome.append((True, check(value)))
        except BaseException as exc:  # noqa: BLE001 - raised again in the caller's thread
            outcome.append((False, exc))

    thread = threading.Thread(target=run, name="pymprpc-deep-check", daemon=True)
    thread.start()
    thread.join()
    ok, result = outcome[0]
    if not ok:
        raise result
    return result


def _checked(check: Callable[[Any], Any], value: Any, path: str) -> Any:
    """`check(value)`, with a _Mismatch raised as ValidationError at `path`."""
    try:
        return check(value)
    except _Mismatch as exc:
        raise exc.at(path) from None
    except RecursionError:
        # A caller already this deep: not the value's fault, but it cannot be checked.
        raise ValidationError(path, "nested too deeply to check") from None


def _key(key: Any) -> str:
    """A map key as it appears in a path: its repr, shortened (a peer chooses it)."""
    text = repr(key)
    return f"[{text}]" if len(text) <= 40 else f"[{text[:37]}...]"


class Schema(Generic[T]):
    """Converts one declared type: `decode` checks a wire value, `encode` makes one.

    Both check: what does not match the declared type raises ValidationError naming
    where it sits (`shape.points[2].x: expected float, got str`), and neither converts
    a value of another type into one of the declared type (`True` is not an enum's 1,
    `""` not an empty list); an int is widened to a float.
    """

    name = "any"

    def decode(self, value: Any, path: str) -> T:
        """Check a value received from the wire and convert it to the Python type.

        Args:
            value: the decoded MessagePack/JSON value.
            path: where the value sits, for the error (e.g. `shape.points[2].x`).

        Raises:
            ValidationError: the value does not match the declared type.
        """
        return _checked(self._decode, value, path)  # type: ignore[no-any-return]

    def encode(self, value: T, path: str = "value") -> Any:
        """The wire form of a Python value of the declared type.

        Args:
            value: the value to send (a handler's result, a client's argument).
            path: where the value sits, for the error (e.g. `add()`, `shape`).

        Raises:
            ValidationError: the value is not of the declared type (or is an int outside
                MessagePack's 64 bits).
        """
        return _checked(self._encode, value, path)

    def _decode(self, value: Any) -> T:
        raise NotImplementedError

    def _encode(self, value: Any) -> Any:
        raise NotImplementedError

    def _mismatch(self, value: Any) -> _Mismatch:
        return _Mismatch(f"expected {self.name}, got {_kind(value)}")


class _Any(Schema[Any]):
    def _decode(self, value: Any) -> Any:
        return value

    _encode = _decode


class _Exact(Schema[T]):
    def __init__(self, name: str, type_: type[T]) -> None:
        self.name = name
        self._type = type_

    def _decode(self, value: Any) -> T:
        # Exact type: bool is an int subclass but not an int on the wire.
        if type(value) is not self._type:
            raise self._mismatch(value)
        return value

    def _encode(self, value: Any) -> Any:
        if type(value) is self._type:
            return value
        return _plain(value, self._type, self)


# Python values of a declared type that are not of its exact class: a subclass's value
# (an IntEnum member for an int, numpy.float64 for a float, a StrEnum member for a str)
# goes out as the plain value it holds, read without its own __str__/__int__, and bytes
# may be any bytes-like object. Not a conversion: they are of the type already.
_PLAIN_VALUE: dict[type, Callable[[Any], Any]] = {
    int: int.__index__,
    float: float.__float__,
    str: str.__str__,
    bytes: bytes,
}
_BYTES_LIKE = (bytes, bytearray, memoryview)


def _plain(value: Any, kind: type, schema: Schema[Any]) -> Any:
    if type(value) is not bool and isinstance(value, _BYTES_LIKE if kind is bytes else kind):
        return _PLAIN_VALUE[kind](value)
    raise schema._mismatch(value)


class _Float(Schema[float]):
    name = "float"

    def _decode(self, value: Any) -> float:
        if type(value) is float:
            return value
        if type(value) is int:
            try:
                return float(value)
            except OverflowError:  # past 1.8e308 (a JSON peer may send such an int)
                raise _Mismatch("expected float, got an int too large for one") from None
        raise self._mismatch(value)

    def _encode(self, value: Any) -> Any:
        # An int is widened both ways (an int past 64 bits then travels too).
        if type(value) is not float and type(value) is not int and type(value) is not bool:
            if isinstance(value, float):
                return float.__float__(value)
            if isinstance(value, int):
                value = int.__index__(value)
        return self._decode(value)


class _None(Schema[None]):
    name = "none"

    def _decode(self, value: Any) -> None:
        if value is not None:
            raise self._mismatch(value)

    _encode = _decode


# MessagePack integers: int64 or uint64.
INT_MIN = -(2**63)
INT_MAX = 2**64 - 1


class _Int(_Exact[int]):
    """An integer MessagePack can carry: refused beyond 64 bits on both ways."""

    def __init__(self) -> None:
        super().__init__("int", int)

    def _decode(self, value: Any) -> int:
        if type(value) is not int:
            raise self._mismatch(value)
        if not INT_MIN <= value <= INT_MAX:
            raise _Mismatch(_OUT_OF_RANGE)
        return value

    def _encode(self, value: Any) -> Any:
        if type(value) is not int:
            value = _plain(value, int, self)
        if not INT_MIN <= value <= INT_MAX:
            raise _Mismatch(_OUT_OF_RANGE)
        return value


_OUT_OF_RANGE = f"integer out of MessagePack's 64-bit range [{INT_MIN}, {INT_MAX}]"


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


def _each(check: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
    """`[check(v) for v in items]`, a failure's path naming the item's index (how many
    passed: the failing item is not checked again, which for a value containing itself
    would check the whole depth again at every level)."""
    out: list[Any] = []
    append = out.append
    try:
        for v in items:
            append(check(v))
    except _Mismatch as exc:
        exc.where.append(f"[{len(out)}]")
        raise
    return out


class List(Schema[list[T]]):
    """`list<T>`: an array whose items all match `item` (a Python list or tuple)."""

    def __init__(self, item: Schema[T]) -> None:
        self.item = item
        self.name = f"list<{item.name}>"

    def _decode(self, value: Any) -> list[T]:
        if not isinstance(value, list | tuple):
            raise self._mismatch(value)
        if self.item is ANY:
            return list(value)  # nothing to check in the items (a copy, as decoded)
        return _each(self.item._decode, value)

    def _encode(self, value: Any) -> Any:
        if not isinstance(value, list | tuple):
            raise self._mismatch(value)
        if self.item is ANY:
            return value  # the items go out as they are
        return _each(self.item._encode, value)


class Map(Schema[dict[str, T]]):
    """`map<str, T>`: a map with string keys whose values all match `value`."""

    def __init__(self, value: Schema[T]) -> None:
        self.value = value
        self.name = f"map<str, {value.name}>"

    def _decode(self, value: Any) -> dict[str, T]:
        return self._each(self.value._decode, value)

    def _encode(self, value: Any) -> Any:
        return self._each(self.value._encode, value)

    def _each(self, check: Callable[[Any], Any], value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self._mismatch(value)
        if self.value is ANY and all(type(k) is str for k in value):
            return dict(value)  # only the keys to check
        out = {}
        for k, v in value.items():
            if type(k) is not str:
                raise _Mismatch(f"map keys must be str, got {_kind(k)}", _key(k))
            try:
                out[k] = check(v)
            except _Mismatch as exc:
                exc.where.append(_key(k))
                raise
        return out


class Optional(Schema[T | None]):
    """`T?`: null, or a value matching `inner`."""

    def __init__(self, inner: Schema[T]) -> None:
        self.inner = inner
        self.name = f"{inner.name}?"

    def _decode(self, value: Any) -> T | None:
        return None if value is None else self.inner._decode(value)

    def _encode(self, value: Any) -> Any:
        return None if value is None else self.inner._encode(value)


class Enum(Schema[E]):
    """An IntEnum travelling as its integer value: a member, or an int that is one
    member's value (not a bool, a float or a string of digits)."""

    def __init__(self, cls: type[E]) -> None:
        self.cls = cls
        self.name = cls.__name__

    def _decode(self, value: Any) -> E:
        if type(value) is not int:
            raise self._mismatch(value)
        try:
            return self.cls(value)
        except ValueError:
            raise self._not_a_member(value) from None

    def _encode(self, value: Any) -> Any:
        if type(value) is self.cls:
            return value._value_
        return self._decode(value)._value_

    def _not_a_member(self, value: int) -> _Mismatch:
        members = list(self.cls)
        allowed = ", ".join(f"{m.name}={m.value}" for m in members[:_MEMBERS_SHOWN])
        if len(members) > _MEMBERS_SHOWN:
            allowed += f", ... ({len(members)} members)"
        # An int too long to convert (Python refuses str() past 4,300 digits) by its size.
        bits = value.bit_length()
        text = repr(value) if bits <= 256 else f"an integer of {bits} bits"
        text = text if len(text) <= 40 else f"{text[:37]}..."
        return _Mismatch(f"{text} is not a {self.name} (one of {allowed})")


_MEMBERS_SHOWN = 8  # an error lists an enum's first members only


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

    def _decode(self, value: Any) -> T:
        """An instance built from a map (or the instance itself).

        Unknown keys are ignored; a missing required field or a bad field value raises
        _Mismatch with the field's path.
        """
        if isinstance(value, self.cls):
            return value
        if not isinstance(value, dict):
            raise self._mismatch(value)
        return _nested(self._decode_fields, value)  # type: ignore[no-any-return]

    def _decode_fields(self, value: dict[Any, Any]) -> T:
        kwargs = {}
        for name, schema in self.fields.items():
            if name in value:
                try:
                    kwargs[name] = schema._decode(value[name])
                except _Mismatch as exc:
                    exc.where.append(f".{name}")
                    raise
            elif name in self._required:
                raise _Mismatch("missing required field", f".{name}")
        # Unknown keys are ignored, so a peer with a newer struct can still talk to us.
        return self.cls(**kwargs)

    def _mismatch(self, value: Any) -> _Mismatch:
        kind = type(value)
        if kind.__name__ == self.name:  # another class of the same name: say which
            return _Mismatch(
                f"expected {self.cls.__module__}.{self.name}, got {kind.__module__}.{kind.__name__}"
            )
        return super()._mismatch(value)

    def _encode(self, value: Any) -> Any:
        """A map of every field's encoded value (an instance of the struct's class only:
        a map is what a caller without the generated types sends, not this)."""
        if not isinstance(value, self.cls):
            raise self._mismatch(value)
        return _nested(self._encode_fields, value)

    def _encode_fields(self, value: Any) -> dict[str, Any]:
        out = {}
        for name, schema in self.fields.items():
            try:
                out[name] = schema._encode(getattr(value, name))
            except _Mismatch as exc:
                exc.where.append(f".{name}")
                raise
        return out


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

    `name` is the method's Python name, `wire` the name clients call (mprpcgen's
    `@wire`; error paths use it, `add()`); both are optional for hand-written schemas.
    `stream`: True for a stream of `result` items, False for one `result` (a server
    refuses a handler that answers the other way), None (hand-written schemas) for
    whichever the handler returns.
    """

    params: tuple[Param, ...]
    result: Schema[R]
    name: str = ""
    wire: str = ""
    stream: bool | None = None

    # Precomputed from `params`: the cost of checking a call then follows what its values
    # need, and plain values (ints, strs...) are checked with one `type(x) is` each.
    _names: tuple[str, ...] = dataclasses.field(init=False, repr=False, compare=False)
    # Per parameter, the one type its value must have (None: anything), or None when some
    # parameter needs more than a type check (conversion, containers, structs).
    _exact: tuple[type | None, ...] | None = dataclasses.field(
        init=False, repr=False, compare=False
    )
    # The one type a result must have to be returned as it is (None: anything), or
    # _NOT_EXACT when checking it needs the schema (conversion, containers, structs).
    _result_exact: Any = dataclasses.field(init=False, repr=False, compare=False)
    # `fits` and `wire_args` compiled for these parameters (see _compile_check): what the
    # server and the async client call per call, with no loop and no frame of `self`
    # (`_wire_args` leaves ints out of range to the packer: see __post_init__).
    _fits: Callable[[Sequence[Any]], bool] = dataclasses.field(
        init=False, repr=False, compare=False
    )
    # `_fits` for values MessagePack decoded (a server's fast lane): the same answer
    # without the int range test, since every int MessagePack carries is in range
    # (INT_MIN..INT_MAX is MessagePack's range).
    _fits_unpacked: Callable[[Sequence[Any]], bool] = dataclasses.field(
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
        object.__setattr__(self, "_fits", _compile_check(self._exact))
        object.__setattr__(self, "_fits_unpacked", _compile_check(self._exact, check_range=False))
        object.__setattr__(
            self,
            "_wire_args",
            self._encoded_args
            if self._exact is None
            # Without the int range test: MessagePack refuses an int out of its range
            # when the call is packed, and the async client's call (the only caller, and
            # only when it packs the call at once with MessagePack: not JSON, not before
            # connecting) then raises the ParamError `unsendable` says.
            else _compile_check(self._exact, encode_args=self.encode_args, check_range=False),
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuilt from the declared fields: the compiled checks are not picklable.
        return (type(self), (self.params, self.result, self.name, self.wire, self.stream))

    @property
    def path(self) -> str:
        """Where an error points: the method as the server names it (its wire name, as
        `@wire` set it), e.g. `add()`, so that client and server say the same."""
        return f"{self.wire or self.name}()"

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

    def encode_args(self, *args: Any, method: str = "") -> list[Any]:
        """Positional wire arguments for the given Python values, in declared order.

        Args:
            args: one value per parameter.
            method: the name the call goes to (a client's prefix included), for errors;
                by default the signature's wire name.

        Raises:
            ParamError: a value is not of its parameter's declared type (the message names
                the method and the value's path: `add(): b: expected int, got str`), or
                the count differs from the parameters'.
        """
        if self._fits(args):
            return list(args)  # each of its exact type: the wire form is the value
        params = self.params
        path = f"{method}()" if method else self.path
        if len(args) != len(params):
            raise ParamError(f"{path}: takes {len(params)} argument(s), got {len(args)}")
        out = []
        for param, value in zip(params, args, strict=True):
            try:
                out.append(param.schema.encode(value, param.name))
            except ValidationError as exc:
                raise ParamError(f"{path}: {exc}") from None
        return out

    def unsendable(self, args: Sequence[Any], method: str = "") -> ParamError | None:
        """Why MessagePack refused these wire arguments, as the ParamError a value of the
        wrong type gets (`echo(): v[1]['k'] is the integer ..., outside MessagePack's
        64-bit range`): what it refused sits inside an `any` value, which
        `encode_args` passes unchecked, or is an int out of range that the async
        client's `_wire_args` left to the packer (then the message is `encode_args`'s).
        None if no argument is at fault.

        Args:
            args: the wire arguments, as `encode_args` returned them.
            method: the name the call went to (a client's prefix included).
        """
        if self._exact is not None:
            # The values went out as they were, their ints unchecked (`_wire_args`): an
            # int out of range gets the message `encode_args` gives (the blocking
            # client's), with the parameter's name.
            try:
                self.encode_args(*args, method=method)
            except ParamError as exc:
                return exc
        path = f"{method}()" if method else self.path
        for param, value in zip(self.params, args, strict=False):
            found = find_unencodable(value, param.name)
            if found is not None:
                return ParamError(f"{path}: {found}")
        # Nothing of a type MessagePack refuses: too deep, or containing itself (the
        # struct checks count a struct's levels, not those of lists and maps around it).
        for param, value in zip(self.params, args, strict=False):
            found = find_too_deep(value, param.name, _MAX_NESTING)
            if found is not None:
                return ParamError(f"{path}: {found}")
        return None

    def wire_args(self, args: Sequence[Any]) -> Sequence[Any]:
        """`encode_args(*args)`, as a sequence: `args` itself (not copied) when its values
        go on the wire as they are."""
        # Not `_wire_args`, which leaves the int range to the packer (see __post_init__).
        return args if self._fits(args) else self.encode_args(*args)

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
    # The source is built from parameter positions (a0, k0...) and our own int bounds
    # alone: no name or text from a schema reaches it, whatever the IDL declared.
    exec(compile(source, "<pymprpc.schema>", "exec"), namespace)
    return namespace["f"]  # type: ignore[no-any-return]


def _compile_check(
    exact: tuple[type | None, ...] | None,
    encode_args: Callable[..., list[Any]] | None = None,
    check_range: bool = True,
) -> Callable[[Sequence[Any]], Any]:
    """`Signature.fits` for parameters whose values need one exact type each (`exact`):
    one `type(x) is` (and, for an int, a range check) per value, unrolled. With
    `encode_args`, `Signature.wire_args` instead: the arguments when they fit, else what
    `encode_args` makes of them (or the ParamError it raises). Without `check_range`,
    ints are not range-checked: for values MessagePack decoded (always in range) or
    about to be packed (refused then)."""
    if exact is None:
        return _fits_never
    if len(exact) > _UNROLL_MAX:
        if encode_args is None:
            return functools.partial(_fits_loop, exact)
        return functools.partial(_wire_args_loop, exact, encode_args)
    namespace: dict[str, Any] = {"encode": encode_args}
    tests = []
    for i, kind in enumerate(exact):
        if kind is not None:
            namespace[f"k{i}"] = kind
            tests.append(f"type(a{i}) is k{i}")
            if kind is int and check_range:
                tests.append(f"{INT_MIN!r} <= a{i} <= {INT_MAX!r}")
    test = " and ".join(tests) or "True"
    hit, miss = ("True", "False") if encode_args is None else ("args", "encode(*args)")
    if not exact:
        source = f"def f(args):\n    return {hit} if len(args) == 0 else {miss}\n"
    else:
        # Unpacking raises for a count other than the parameters' (cheaper than
        # comparing len(), and free when it does not raise, as it nearly always does).
        names = "".join(f"a{i}, " for i in range(len(exact)))
        source = (
            f"def f(args):\n"
            f"    try:\n"
            f"        {names}= args\n"
            f"    except (TypeError, ValueError):\n"
            f"        return {miss}\n"
            f"    if {test}:\n"
            f"        return {hit}\n"
            f"    return {miss}\n"
        )
    return _compile(source, namespace)


def _wire_args_loop(
    exact: tuple[type | None, ...], encode_args: Callable[..., list[Any]], args: Sequence[Any]
) -> Sequence[Any]:
    return args if _fits_loop(exact, args) else encode_args(*args)


def _item(check: Callable[[Any], Any], value: Any, path: str, i: int) -> Any:
    """`check(value)` for a stream's item `i`: the path is made only for an error."""
    try:
        return check(value)
    except (_Mismatch, RecursionError):
        pass
    return _checked(check, value, f"{path}[{i}]")


def _not_a_stream(value: Any, path: str) -> ValidationError:
    # A server that does not check (or a method changed to unary) answered one value.
    return ValidationError(path, f"expected a stream, got {_kind(value)}")


def decode_stream(stream: Iterator[Any], item: Schema[T], path: str) -> Generator[T, None, None]:
    """Decode each item of a sync stream; closing this closes (cancels) the stream, even
    before its first item.

    Raises:
        ValidationError: an item is not of the declared type, or the reply is not a
            stream at all (at once).
    """
    items = _decoded(stream, item, path)
    # Run to its first step: a generator closed (or dropped) before it started runs no
    # `finally`, and the stream would not be closed.
    next(items)
    return items


def _decoded(stream: Iterator[Any], item: Schema[T], path: str) -> Generator[T, None, None]:
    """`decode_stream`'s generator: one None first (taken by it), then the items."""
    if not isinstance(stream, Iterator):
        raise _not_a_stream(stream, path)
    check = item._decode
    try:
        yield cast(T, None)
        for i, value in enumerate(stream):
            yield _item(check, value, path, i)
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()


def decode_async_stream(
    stream: AsyncIterator[Any], item: Schema[T], path: str
) -> AsyncGenerator[T, None]:
    """Decode each item of an async stream; closing this closes (cancels) the stream.

    Raises:
        ValidationError: an item is not of the declared type, or the reply is not a
            stream at all.
    """
    if not isinstance(stream, AsyncIterator):
        raise _not_a_stream(stream, path)
    return _checked_items(stream, item._decode, path)


def encode_async_stream(
    stream: AsyncIterator[Any], item: Schema[Any], path: str
) -> AsyncGenerator[Any, None]:
    """Encode each item of a handler's stream (ValidationError naming `path[i]` for one
    not of the declared type); closing this closes the stream."""
    return _checked_items(stream, item._encode, path)


async def _checked_items(
    stream: AsyncIterator[Any], check: Callable[[Any], Any], path: str
) -> AsyncGenerator[Any, None]:
    i = 0
    try:
        async for value in stream:
            yield _item(check, value, path, i)
            i += 1
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()
