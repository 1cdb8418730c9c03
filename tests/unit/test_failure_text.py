"""Text made from user objects on failure paths never raises (errors.text_of,
type_name, traceback_text), and address errors never show a password: cases an
independent code review found after the first fixes (session 14)."""

from __future__ import annotations

from typing import Any

import pytest

from pymprpc.address import Address
from pymprpc.errors import exception_text, text_of, traceback_text, type_name


class _NamelessMeta(type):
    @property
    def __name__(cls) -> str:  # type: ignore[override]
        raise RuntimeError("no name")

    @property
    def __module__(cls) -> str:  # type: ignore[override]
        raise RuntimeError("no module")


class _Hostile(Exception, metaclass=_NamelessMeta):
    def __str__(self) -> str:
        raise RuntimeError("no str")


def test_a_class_that_cannot_be_named_and_an_instance_that_cannot_be_printed() -> None:
    exc = _Hostile()
    assert type_name(exc) == "_Hostile"
    assert type_name(exc, "__module__") == __name__
    assert exception_text(exc) == "<_Hostile object: its str() raised RuntimeError>"
    assert text_of(exc, repr).startswith("_Hostile(")  # BaseException's own repr
    assert (
        traceback_text(exc)
        .rstrip()
        .endswith("_Hostile: <_Hostile object: its str() raised RuntimeError>")
    )


def test_a_class_without_a_module_is_named_with_a_placeholder() -> None:
    cls: Any = eval("type('Odd', (Exception,), {})", {})  # no __name__ global: no __module__
    assert type_name(cls(), "__module__") in ("?", "builtins")
    assert type_name(cls()) == "Odd"


def test_a_str_subclass_name_is_copied_without_its_methods() -> None:
    class Name(str):
        def __str__(self) -> str:
            raise RuntimeError("no")

    cls: Any = type("Plain", (Exception,), {})
    cls.__name__ = Name("Renamed")
    assert type_name(cls()) == "Renamed"
    assert type(type_name(cls())) is str


@pytest.mark.parametrize(
    ("addr", "secret"),
    [
        ("tcp://user:[hunter2]@host:1", "hunter2"),  # brackets: urllib's IPv6 check
        ("tcp://user:hun[ter2@host:1", "hun[ter2"),
        ("user:secret@localhost:8000", "secret"),  # no scheme at all
        ("tcp:user:secret@localhost:8000", "secret"),
    ],
)
def test_address_errors_never_show_the_password(addr: str, secret: str) -> None:
    with pytest.raises(ValueError) as info:
        Address.parse(addr)
    assert secret not in str(info.value)


def test_the_opentelemetry_hook_survives_an_exception_it_cannot_describe() -> None:
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import StatusCode

    from pymprpc import otel

    span = TracerProvider().get_tracer("t").start_span("s")
    hostile = _Hostile()
    otel._finish(span, hostile, hostile, False)  # must not raise: the span must still end
    span.end()
    assert span.status.status_code is StatusCode.ERROR  # type: ignore[attr-defined]


@pytest.mark.timeout(30)
def test_an_error_whose_message_is_not_text_is_still_answered() -> None:
    """`raise ParamError(exc)` passes an exception as the message: the reply cannot
    carry it, and the call must get 405 rather than wait for its deadline."""
    from pymprpc import Server
    from pymprpc.errors import MPRPCError, ParamError
    from pymprpc.testing import sync_client_for

    server = Server(("127.0.0.1", 0))

    @server.register_function(executor="inline")
    def check(x: int) -> int:
        try:
            raise ValueError(f"bad {x}")
        except ValueError as exc:
            raise ParamError(exc) from None  # type: ignore[arg-type]

    with sync_client_for(server, timeout=5) as rpc, pytest.raises(MPRPCError) as info:
        rpc.check(1)
    assert info.value.code == 405, info.value


def test_printable_leaves_ordinary_text_and_escapes_what_could_forge_a_line() -> None:
    from pymprpc.errors import printable

    assert printable("4f99d9f0-4268-4d2c-a161-000000000002") == (
        "4f99d9f0-4268-4d2c-a161-000000000002"
    )
    assert printable("héllo wörld") == "héllo wörld"
    assert printable("a\nINFO forged") == "a\\nINFO forged"
    assert printable("a\r\x1b[2Kb\u2028c") == "a\\r\\x1b[2Kb\\u2028c"
    long = printable("x" * 10_000)
    assert long == "x" * 256 + "... (10000 characters)"
    assert "\n" not in printable("\n" * 1000)
