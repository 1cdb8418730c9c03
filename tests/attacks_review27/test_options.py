"""Options: per-call timeout values (with_options, ctx.replace, typed with_options),
negative deadlines, and the constructor's addr/features/ssl checks; both clients."""

from __future__ import annotations

import contextlib
import math
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from pymprpc.client import RPC, AsyncRPC
from pymprpc.errors import DeadlineExceeded

from .kit import arun, make_server, serving

BAD = [
    ("1", TypeError),
    (True, TypeError),
    (math.nan, ValueError),
    (math.inf, ValueError),
    (-math.inf, ValueError),
    (b"1", TypeError),
    ([1], TypeError),
]


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with serving(make_server()) as url:
        yield url


def one_line_naming_timeout(exc: BaseException) -> None:
    text = str(exc)
    assert "timeout" in text and "\n" not in text, text


@pytest.mark.parametrize(("value", "kind"), BAD, ids=[repr(v) for v, _ in BAD])
@pytest.mark.timeout(30)
def test_with_options_and_replace_refuse_bad_timeouts_on_both_clients(
    url: str, value: Any, kind: type[Exception]
) -> None:
    def sync_replace(ctx: Any, call_next: Any) -> Any:
        return call_next(ctx.replace(timeout=value))

    async def async_replace(ctx: Any, call_next: Any) -> Any:
        return await call_next(ctx.replace(timeout=value))

    with RPC(url) as rpc:
        with pytest.raises(kind) as info:
            rpc.echo.with_options(timeout=value)
        one_line_naming_timeout(info.value)
    with RPC(url, interceptors=[sync_replace]) as rpc, pytest.raises(kind) as info:
        rpc.echo(1)
    one_line_naming_timeout(info.value)

    async def main() -> None:
        async with AsyncRPC(url) as arpc:
            with pytest.raises(kind) as info:
                arpc.echo.with_options(timeout=value)
            one_line_naming_timeout(info.value)
            assert await arpc.echo(2) == 2  # still usable
        async with AsyncRPC(url, interceptors=[async_replace]) as arpc:
            with pytest.raises(kind) as info:
                await arpc.echo(1)
            one_line_naming_timeout(info.value)

    arun(main())


@pytest.mark.timeout(60)
def test_sync_negative_timeout_never_returns_a_value(url: str) -> None:
    old = sys.getswitchinterval()
    sys.setswitchinterval(0.0001)
    got = []
    try:
        for _ in range(250):
            with RPC(url, features=()) as rpc:
                for _ in range(3):
                    with contextlib.suppress(DeadlineExceeded):
                        got.append(rpc.echo.with_options(timeout=-1)("value"))
    finally:
        sys.setswitchinterval(old)
    assert got == []


@pytest.mark.parametrize("features", [(), None], ids=["plain", "negotiated"])
@pytest.mark.timeout(30)
def test_negative_timeout_is_deadline_exceeded_both_clients(url: str, features: Any) -> None:
    kw = {} if features is None else {"features": features}

    def replace(ctx: Any, call_next: Any) -> Any:
        return call_next(ctx.replace(timeout=-0.25))

    with RPC(url, **kw) as rpc:
        with pytest.raises(DeadlineExceeded, match=r"call 'slow' did not finish within its -3s"):
            rpc.slow.with_options(timeout=-3)(0.2, 1)
        assert rpc.echo(1) == 1
    with (
        RPC(url, interceptors=[replace], **kw) as rpc,
        pytest.raises(DeadlineExceeded, match=r"within its -0\.25s deadline"),
    ):
        rpc.slow(0.2, 1)

    async def areplace(ctx: Any, call_next: Any) -> Any:
        return await call_next(ctx.replace(timeout=-0.25))

    async def main() -> None:
        async with AsyncRPC(url, **kw) as arpc:
            with pytest.raises(DeadlineExceeded, match="within its -3s deadline"):
                await arpc.slow.with_options(timeout=-3)(0.2, 1)
            with pytest.raises(DeadlineExceeded):
                stream = await arpc.count.with_options(timeout=-1)(3, 0.05)
                [i async for i in stream]
            assert await arpc.echo(3) == 3
        async with AsyncRPC(url, interceptors=[areplace], **kw) as arpc:
            with pytest.raises(DeadlineExceeded, match=r"within its -0\.25s deadline"):
                await arpc.slow(0.2, 1)

    arun(main())


@pytest.mark.timeout(30)
def test_large_finite_timeout_parity(url: str) -> None:
    async def main() -> Any:
        async with AsyncRPC(url) as arpc:
            return await arpc.echo.with_options(timeout=1e10)(1)

    assert arun(main()) == 1
    with RPC(url) as rpc:
        assert rpc.echo.with_options(timeout=1e10)(1) == 1


CTOR_BAD = [
    ({"addr": None}, TypeError, "addr"),
    ({"addr": b"tcp://127.0.0.1:1"}, TypeError, "addr"),
    ({"addr": 5000}, TypeError, "addr"),
    ({"features": "cancel"}, TypeError, "features"),
    ({"features": ["cancel", "deadlines"]}, ValueError, "features"),
    ({"features": 3}, TypeError, "features"),
    ({"ssl": True}, TypeError, "ssl"),
    ({"ssl": "cert.pem"}, TypeError, "ssl"),
    ({"timeout": "5"}, TypeError, "timeout"),
    ({"timeout": math.nan}, ValueError, "timeout"),
]


@pytest.mark.parametrize(("options", "kind", "name"), CTOR_BAD, ids=[str(o) for o, *_ in CTOR_BAD])
@pytest.mark.parametrize("cls", [RPC, AsyncRPC], ids=["RPC", "AsyncRPC"])
@pytest.mark.timeout(10)
def test_constructor_refuses_options_naming_them(
    cls: Any, options: dict[str, Any], kind: type[Exception], name: str
) -> None:
    options = {"addr": "tcp://127.0.0.1:1", **options}
    with pytest.raises(kind) as info:
        cls(**options)
    text = str(info.value)
    assert text.startswith(name) or f" {name}" in text or f"{name}=" in text, text
    assert "\n" not in text
