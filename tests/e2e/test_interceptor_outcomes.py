"""What the method returns that the connection cannot send (405), with and without
server interceptors: the client's reply and the server's log are the same, and an
interceptor may still turn the value into one that can be sent.

`call_next` returns such a value as the method returned it (an interceptor may convert
it: `test_an_interceptor_may_make_a_result_sendable`; a first fix that raised the 405
inside the chain broke that, review 18, and was withdrawn), so an interceptor reading
only `call_next` sees a success (strict xfail below). The code the client got reaches
interceptors at the call's end: `CallContext.add_done_callback`, and `observe_call`
built on it, which AccessLog and the OpenTelemetry interceptor use.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest

from helpers import arun
from pymprpc import Server
from pymprpc.context import CallContext
from pymprpc.errors import MPRPCError, ResultLimitError
from pymprpc.interceptors import AccessLog, CallNext, observe_call, observe_stream
from pymprpc.testing import client_for

pytestmark = pytest.mark.timeout(60)

MAX = 64 * 1024


def _deep(levels: int) -> Any:
    value: Any = []
    for _ in range(levels):
        value = [value]
    return value


# What a method returns that the connection cannot send, by case.
UNSENDABLE: dict[str, Any] = {
    "object": object(),
    "set": {1, 2},
    "big_int": 2**70,
    "too_large_str": "x" * (MAX + 10),
    "too_large_bytes": b"\0" * (MAX + 10),
    "too_deep": _deep(1100),
    "bad_key": {(1, object()): 1},
}


class Seen:
    """An interceptor recording each call's outcome as it saw it."""

    def __init__(self) -> None:
        self.outcomes: list[tuple[str, str, Any]] = []

    async def __call__(self, ctx: CallContext, call_next: CallNext) -> Any:
        try:
            result = await call_next(ctx)
        except BaseException as exc:
            self.outcomes.append((ctx.method, "raised", getattr(exc, "code", type(exc))))
            raise
        if not ctx.streaming:
            self.outcomes.append((ctx.method, "returned", None))
            return result

        def ended(error: BaseException | None, items: int) -> None:
            code = None if error is None else getattr(error, "code", type(error))
            self.outcomes.append((ctx.method, f"stream ended after {items}", code))

        return observe_stream(result, ended)


class Converting:
    """An interceptor turning sets into sorted lists and `object()`s into their type's
    name: values the connection cannot send into ones it can."""

    async def __call__(self, ctx: CallContext, call_next: CallNext) -> Any:
        result = await call_next(ctx)
        if ctx.streaming:
            return self._items(result)
        return self._convert(result)

    async def _items(self, stream: AsyncIterator[Any]) -> AsyncIterator[Any]:
        async for item in stream:
            yield self._convert(item)

    @staticmethod
    def _convert(value: Any) -> Any:
        if isinstance(value, set):
            return sorted(value)
        if type(value) is object:
            return "object"
        return value


def build(interceptors: list[Any], closed: list[str], **options: Any) -> Server:
    server = Server(("127.0.0.1", 0), interceptors=interceptors, max_message_size=MAX, **options)
    for case, value in UNSENDABLE.items():

        async def returns(value: Any = value) -> Any:
            return value

        server.register_function(case)(returns)

    @server.register_function()
    async def fine() -> dict[str, Any]:
        return {"ok": [1, 2.5, "x", b"y", None]}

    @server.register_function()
    async def bulk() -> bytes:
        return b"\1" * (MAX - 200)

    @server.register_function()
    async def second_item_bad() -> AsyncIterator[Any]:
        try:
            yield 1
            yield {3, 4}
            yield 3
        finally:
            closed.append("second_item_bad")

    @server.register_function()
    async def items_fine() -> AsyncIterator[Any]:
        for i in range(3):
            yield [i, str(i)]

    server.register_function("plain_set", executor="thread")(lambda: {5})
    return server


async def _outcome(rpc: Any, method: str) -> Any:
    """What the client got: a value, a stream's items, or the error's fields."""
    try:
        result = await getattr(rpc, method)()
        if hasattr(result, "__aiter__"):
            items = []
            try:
                async for item in result:
                    items.append(item)
            except MPRPCError as exc:
                return ("items", items, "error", exc.code, type(exc).__name__, str(exc), exc.data)
            return ("items", items)
        return ("value", result)
    except MPRPCError as exc:
        return ("error", exc.code, type(exc).__name__, str(exc), exc.data)


METHODS = [*UNSENDABLE, "fine", "bulk", "second_item_bad", "items_fine", "plain_set"]


def _served(interceptors: list[Any], **options: Any) -> tuple[dict[str, Any], list[str]]:
    closed: list[str] = []

    async def main() -> dict[str, Any]:
        server = build(interceptors, closed, **options)
        async with client_for(server, timeout=10, max_message_size=4 * MAX) as rpc:
            return {m: await _outcome(rpc, m) for m in METHODS}

    return arun(main(), timeout=40), closed


def _refusals(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The refusals logged, without the call's ID and peer (they differ by client)."""
    found = [
        re.sub(r" id=\S+ from \S+:", ":", r.getMessage())
        for r in caplog.records
        if r.levelno == logging.ERROR and "cannot be sent, answered 405" in r.getMessage()
    ]
    caplog.clear()
    return sorted(found)


@pytest.mark.parametrize("debug", [False, True])
def test_clients_get_the_same_replies_and_the_log_the_same_refusals(
    caplog: pytest.LogCaptureFixture, debug: bool
) -> None:
    caplog.set_level(logging.ERROR, logger="pymprpc")
    plain, closed_plain = _served([], debug=debug)
    logged_plain = _refusals(caplog)
    seen = Seen()
    intercepted, closed_intercepted = _served([seen], debug=debug)
    logged_intercepted = _refusals(caplog)

    assert intercepted == plain
    for case in UNSENDABLE:
        assert plain[case][:3] == ("error", 405, "ResultLimitError"), case
    assert plain["plain_set"][:3] == ("error", 405, "ResultLimitError")
    assert plain["second_item_bad"][:4] == ("items", [1], "error", 405)
    assert plain["bulk"] == ("value", b"\1" * (MAX - 200))
    # One refusal logged per refused call, alike.
    assert len(logged_plain) == len(UNSENDABLE) + 2
    assert logged_intercepted == logged_plain
    assert closed_plain == closed_intercepted == ["second_item_bad"]


REASON = (
    "an interceptor sees a result the connection then refuses (405) as a success: "
    "it returns before the value is encoded"
)


@pytest.mark.xfail(strict=True, reason=REASON)
def test_interceptors_see_the_405_the_client_gets() -> None:
    seen = Seen()
    _served([seen])
    by_method = {method: (what, code) for method, what, code in seen.outcomes}
    for case in [*UNSENDABLE, "plain_set"]:
        assert by_method[case] == ("raised", 405), case
    assert by_method["second_item_bad"] == ("stream ended after 1", 405)
    assert by_method["items_fine"] == ("stream ended after 3", None)
    assert by_method["fine"] == by_method["bulk"] == ("returned", None)


def test_access_log_records_405_for_what_could_not_be_sent(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="pymprpc.access")
    _served([AccessLog()])
    codes = {}
    for record in caplog.records:
        if record.name == "pymprpc.access":
            text = record.getMessage()
            codes[text.split(" ")[0]] = int(text.split(" -> ")[1].split(" ")[0])
    for case in [*UNSENDABLE, "plain_set", "second_item_bad"]:
        assert codes[case] == 405, case
    assert codes["fine"] == codes["bulk"] == 200
    assert codes["items_fine"] == 201


class Ends:
    """An interceptor recording each call's end as `observe_call` reports it."""

    def __init__(self) -> None:
        self.ends: dict[str, tuple[Any, int | None]] = {}

    async def __call__(self, ctx: CallContext, call_next: CallNext) -> Any:
        result = await call_next(ctx)

        def ended(error: BaseException | None, items: int | None) -> None:
            code = None if error is None else getattr(error, "code", type(error).__name__)
            assert ctx.method not in self.ends, "reported twice"
            self.ends[ctx.method] = (code, items)

        return observe_call(ctx, result, ended)


@pytest.mark.parametrize("converting", [False, True])
def test_observe_call_reports_the_code_the_client_got(converting: bool) -> None:
    ends = Ends()
    # Outside a converting interceptor, it sees the converted value's end (sent).
    got, _ = _served([ends, Converting()] if converting else [ends])
    for case in [*UNSENDABLE, "plain_set"]:
        expect = ("value", None) if converting and case in ("set", "object", "plain_set") else None
        if expect is not None:
            assert got[case][0] == "value" and ends.ends[case] == (None, None), case
        else:
            assert got[case][:2] == ("error", 405), case
            assert ends.ends[case] == (405, None), case
    assert ends.ends["fine"] == ends.ends["bulk"] == (None, None)
    assert ends.ends["items_fine"] == (None, 3)
    if converting:
        assert ends.ends["second_item_bad"] == (None, 3)
    else:
        # Its second item refused: 405, after one item sent (the generator had yielded 2).
        assert ends.ends["second_item_bad"] == (405, 2)


def test_an_interceptor_may_make_a_result_sendable(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="pymprpc")
    got, _ = _served([Converting()])
    assert got["set"] == ("value", [1, 2])
    assert got["object"] == ("value", "object")
    assert got["plain_set"] == ("value", [5])
    assert got["second_item_bad"] == ("items", [1, [3, 4], 3])
    # Sent, so nothing was refused for them (the others still are).
    logged = " ".join(_refusals(caplog))
    for name in ("call set:", "call object:", "call plain_set:", "call second_item_bad:"):
        assert name not in logged


def test_delayed_and_oneway_calls_alike(caplog: pytest.LogCaptureFixture) -> None:
    """A kept outcome is checked when stored (the fetch gets 405), a oneway call's is
    dropped: with interceptors as without."""
    caplog.set_level(logging.ERROR, logger="pymprpc")
    seen = Seen()

    async def main() -> None:
        server = build([seen], [])
        async with client_for(server, timeout=10) as rpc:
            await rpc.notify("set")
            id = await rpc.delay("set")
            with pytest.raises(ResultLimitError):
                await rpc.system.getresult(id)
            assert await rpc.fine() == {"ok": [1, 2.5, "x", b"y", None]}

    arun(main())
    assert [o for o in seen.outcomes if o[0] == "set"] == [("set", "returned", None)] * 2
