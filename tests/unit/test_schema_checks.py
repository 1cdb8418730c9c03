"""Schemas check values both ways and never convert one into another type to make it fit;
their errors name where the value sits; values nest as deep as MessagePack carries."""

from __future__ import annotations

import dataclasses
import enum
import sys
import threading
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pymprpc.errors import ParamError, ValidationError
from pymprpc.schema import (
    ANY,
    BOOL,
    BYTES,
    FLOAT,
    INT,
    INT_MAX,
    STR,
    Enum,
    List,
    Map,
    Optional,
    Param,
    Schema,
    Signature,
    Struct,
)


class Color(enum.IntEnum):
    RED = 1
    GREEN = 2


@dataclasses.dataclass(frozen=True)
class Pt:
    x: float
    y: int = 0


@dataclasses.dataclass(frozen=True)
class Node:
    v: int
    next: Node | None = None


PT: Struct[Pt] = Struct(Pt, lambda: {"x": FLOAT, "y": INT})
NODE: Struct[Node] = Struct(Node, lambda: {"v": INT, "next": Optional(NODE)})
COLOR = Enum(Color)


@pytest.mark.parametrize(
    ("schema", "value", "problem"),
    [
        (COLOR, True, "expected Color, got bool"),
        (COLOR, 1.0, "expected Color, got float"),
        (COLOR, "1", "expected Color, got str"),
        (COLOR, 3, "3 is not a Color (one of RED=1, GREEN=2)"),
        (List(INT), "", "expected list<int>, got str"),
        (List(INT), b"\x01", "expected list<int>, got bytes"),
        (List(INT), {1: 2}, "expected list<int>, got map"),
        (List(INT), range(2), "expected list<int>, got range"),
        (Map(INT), [("a", 1)], "expected map<str, int>, got list"),
        (PT, {"x": 1.0}, "expected Pt, got map"),
        (PT, None, "expected Pt, got none"),
        (INT, True, "expected int, got bool"),
        (FLOAT, "1.5", "expected float, got str"),
        (BOOL, 1, "expected bool, got int"),
    ],
)
def test_encode_refuses_what_it_would_have_to_convert(
    schema: Any, value: Any, problem: str
) -> None:
    with pytest.raises(ValidationError) as info:
        schema.encode(value, "v")
    assert str(info.value) == f"v: {problem}"


def test_errors_name_the_path_of_the_value_that_does_not_fit() -> None:
    shape = Map(List(Optional(PT)))
    bad: dict[str, Any] = {"a": [None, Pt(x=1.0)], "b": [Pt(x=2.0, y=2**64)]}
    with pytest.raises(ValidationError, match=r"^s\['b'\]\[0\]\.y: integer out of"):
        shape.encode(bad, "s")
    wire = {"a": [None, {"x": 1}], "b": [{"x": "no"}]}
    with pytest.raises(ValidationError, match=r"^s\['b'\]\[0\]\.x: expected float, got str$"):
        shape.decode(wire, "s")


def test_a_long_map_key_is_shortened_in_the_path() -> None:
    key = "k" * 10_000
    with pytest.raises(ValidationError) as info:
        Map(INT).decode({key: "x"}, "m")
    assert len(str(info.value)) < 100, str(info.value)


def test_a_struct_of_another_class_with_the_same_name_says_which() -> None:
    other = dataclasses.make_dataclass("Pt", [("x", float)])
    other.__module__ = "elsewhere"
    with pytest.raises(
        ValidationError, match=r"expected .*test_schema_checks\.Pt, got elsewhere\.Pt"
    ):
        PT.encode(other(x=1.0), "p")


def test_encode_args_names_the_method_and_the_parameter() -> None:
    sig = Signature((Param("a", INT), Param("c", COLOR)), ANY, name="paint")
    assert sig.encode_args(1, Color.GREEN) == [1, 2]
    assert sig.encode_args(1, 2) == [1, 2]  # an int that is a member's value
    with pytest.raises(ParamError, match=r"^paint\(\): c: expected Color, got bool$"):
        sig.encode_args(1, True)
    with pytest.raises(ParamError, match=r"^paint\(\): a: expected int, got str$"):
        sig.wire_args(("1", Color.RED))


def chain(depth: int, leaf: Any = 0) -> Node:
    node = Node(v=leaf)
    for i in range(depth - 1):
        node = Node(v=i, next=node)
    return node


def wire_chain(depth: int, leaf: Any = 0) -> dict[str, Any]:
    node: dict[str, Any] = {"v": leaf, "next": None}
    for i in range(depth - 1):
        node = {"v": i, "next": node}
    return node


def values_of(node: Node | None) -> list[int]:
    """The chain's values, without recursing (== on a deep chain would)."""
    out = []
    while node is not None:
        out.append(node.v)
        node = node.next
    return out


@pytest.mark.parametrize("depth", [1000, 1022])
def test_values_as_deep_as_messagepack_carries_are_checked(depth: int) -> None:
    limit = sys.getrecursionlimit()
    assert values_of(NODE.decode(NODE.encode(chain(depth), "n"), "n")) == values_of(chain(depth))
    cut = rf"^n(\.next){{4}}\.\.\.\({depth - 24} more\)\.\.\.(\.next){{19}}\.v"
    with pytest.raises(ValidationError, match=rf"{cut}: expected int"):
        NODE.decode(wire_chain(depth, leaf=True), "n")
    with pytest.raises(ValidationError, match=rf"{cut}: integer out"):
        NODE.encode(chain(depth, leaf=2**64), "n")
    assert sys.getrecursionlimit() == limit  # never raised: deep checks hop threads


def test_deep_checks_in_threads_put_the_recursion_limit_back() -> None:
    limit = sys.getrecursionlimit()
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(3):
                assert len(values_of(NODE.decode(wire_chain(1000), "n"))) == 1000
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert sys.getrecursionlimit() == limit


@pytest.mark.parametrize("depth", [1023, 1100, 20_000])
def test_deeper_than_messagepack_carries_is_one_error_however_deep(depth: int) -> None:
    too_deep = r"\.next: nested deeper than MessagePack carries \(1022 levels\)$"
    with pytest.raises(ValidationError, match=r"^n\.next\.next.*" + too_deep):
        NODE.decode(wire_chain(depth), "n")
    with pytest.raises(ValidationError, match=r"^n\.next\.next.*" + too_deep):
        NODE.encode(chain(depth), "n")


# -- both ways agree -------------------------------------------------------------------

ints = st.integers(-(2**63), INT_MAX)
points = st.builds(Pt, x=st.floats(allow_nan=False), y=ints)
values = st.fixed_dictionaries(
    {
        "pts": st.lists(st.one_of(st.none(), points), max_size=4),
        "by_name": st.dictionaries(st.text(max_size=3), st.sampled_from(Color), max_size=3),
        "tags": st.lists(st.text(max_size=3), max_size=3),
    }
)
SHAPE = Map(ANY)
FIELDS: dict[str, Schema[Any]] = {
    "pts": List(Optional(PT)),
    "by_name": Map(COLOR),
    "tags": List(STR),
}


@given(values)
def test_what_encode_makes_decodes_back_to_the_same_value(value: dict[str, Any]) -> None:
    for name, schema in FIELDS.items():
        wire = schema.encode(value[name], name)
        assert schema.decode(wire, name) == value[name]


junk = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=2), st.binary(max_size=2)
)


@given(st.sampled_from(sorted(FIELDS)), st.recursive(junk, lambda c: st.lists(c, max_size=3)))
def test_encode_and_decode_refuse_the_same_wire_shaped_values(name: str, value: Any) -> None:
    """For values that look like wire values (no struct instances or enum members), what
    encode accepts, decode accepts, with the same error otherwise."""
    schema = FIELDS[name]

    def outcome(check: Any) -> tuple[str, str]:
        try:
            check(value, name)
        except ValidationError as exc:
            return "refused", str(exc)
        return "ok", ""

    if name == "pts" and isinstance(value, list) and any(v is not None for v in value):
        # A map is what decode reads for a struct; encode wants the struct's class.
        assert outcome(schema.encode)[0] == "refused"
        return
    assert outcome(schema.encode) == outcome(schema.decode)


class Size(str, enum.Enum):  # noqa: UP042 - the mixin whose str() is not its value
    SMALL = "s"


class Precise(float):
    pass


@pytest.mark.parametrize(
    ("schema", "value", "wire"),
    [
        (INT, Color.GREEN, 2),
        (FLOAT, Precise(1.5), 1.5),
        (FLOAT, Color.RED, 1.0),
        (STR, Size.SMALL, "s"),  # its value, not str(member)'s "Size.SMALL"
        (BYTES, bytearray(b"ab"), b"ab"),
        (BYTES, memoryview(b"cd"), b"cd"),
    ],
)
def test_a_value_of_a_subclass_goes_out_as_the_plain_value_it_holds(
    schema: Any, value: Any, wire: Any
) -> None:
    """IntEnum members, numpy-style float subclasses, str enums are of the declared type
    already (mypy accepts them): sent as the plain value, of the exact wire type."""
    got = schema.encode(value, "v")
    assert got == wire and type(got) is type(wire)
    assert schema.decode(got, "v") == wire


def test_a_deep_path_is_cut_in_the_middle() -> None:
    with pytest.raises(ValidationError) as info:
        NODE.decode(wire_chain(1000, leaf="x"), "n")
    text = str(info.value)
    assert text.startswith("n.next.next.next.next...(976 more)....next")
    assert text.endswith(".next.v: expected int, got str")
    assert len(text) < 300


def test_a_large_enum_lists_its_first_members_only() -> None:
    many = enum.IntEnum("Many", {f"M{i:03}_{'x' * 40}": i for i in range(1, 501)})  # type: ignore[misc]
    with pytest.raises(ValidationError) as info:
        Enum(many).decode(0, "m")
    text = str(info.value)
    assert text.startswith("m: 0 is not a Many (one of M001_")
    assert text.endswith(", ... (500 members))")
    assert len(text) < 600


def test_a_reply_that_is_not_a_stream_is_a_validation_error() -> None:
    from pymprpc.schema import decode_stream

    with pytest.raises(ValidationError, match=r"^items\(\): expected a stream, got int$"):
        list(decode_stream(5, INT, "items()"))  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [10**5000, -(10**5000), 2**300], ids=["big", "-big", "2**300"])
def test_an_int_too_long_to_print_is_named_by_its_size(value: int) -> None:
    # Python refuses str() of an int past 4,300 digits: the errors must not need it.
    bits = value.bit_length()
    with pytest.raises(ValidationError, match=rf"^c: an integer of {bits} bits is not a Color"):
        COLOR.encode(value, "c")
    with pytest.raises(ValidationError, match=rf"^c: an integer of {bits} bits is not a Color"):
        COLOR.decode(value, "c")
    sig = Signature((Param("v", ANY),), ANY, name="f")
    error = sig.unsendable([[value]])
    assert error is not None
    assert (
        str(error) == f"f(): v[0] is an integer of {bits} bits, outside MessagePack's 64-bit range"
    )
