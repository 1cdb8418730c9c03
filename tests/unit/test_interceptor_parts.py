"""The pure parts of call context and interceptors: no server, no sockets."""

from __future__ import annotations

import asyncio
import logging
import pickle
from collections.abc import AsyncIterator
from typing import Any

import pytest

from helpers import arun
from pymprpc.context import (
    CallContext,
    Metadata,
    current_call,
    end_call,
    reset_current,
    set_current,
)
from pymprpc.errors import RestrictAccessError, RpcUnavailableException
from pymprpc.interceptors import AccessControl, AccessLog, RateLimit, compose, observe_stream
from pymprpc.server.health import Health, HealthStatus


def ctx(**fields: Any) -> CallContext:
    fields.setdefault("id", "c1")
    fields.setdefault("method", "add")
    return CallContext(**fields)


def test_metadata_is_immutable_str_to_str_and_pickles() -> None:
    md = Metadata({"a": "1"})
    assert md == {"a": "1"} and len(md) == 1 and list(md) == ["a"]
    assert md.with_items({"b": "2"}) == {"a": "1", "b": "2"} and md == {"a": "1"}
    assert pickle.loads(pickle.dumps(md)) == md
    with pytest.raises(TypeError, match="must be str"):
        Metadata({"a": 1})  # type: ignore[dict-item]
    with pytest.raises(TypeError):
        md["x"] = "y"  # type: ignore[index]


def test_call_context_pickles_and_replace_shares_response_metadata() -> None:
    c = ctx(metadata=Metadata({"k": "v"}), peer=("127.0.0.1", 5), user="bob")
    assert pickle.loads(pickle.dumps(c)) == c
    other = c.replace(metadata={"k": "w"})
    assert other.metadata == {"k": "w"} and c.metadata == {"k": "v"}
    other.set_response_metadata("x", "1")
    assert c.response_metadata == {"x": "1"}
    assert ctx().time_remaining() is None


def test_current_call_outside_a_call_says_where_it_works() -> None:
    with pytest.raises(LookupError, match="only available while serving a call"):
        current_call()
    token = set_current(ctx())
    try:
        assert current_call().id == "c1"
    finally:
        reset_current(token)


def test_compose_runs_first_interceptor_outermost_and_sees_outcomes() -> None:
    order: list[str] = []

    def make(name: str) -> Any:
        async def interceptor(c: CallContext, call_next: Any) -> Any:
            order.append(f"{name}>")
            try:
                return await call_next(c.replace(metadata=c.metadata.with_items({name: "1"})))
            finally:
                order.append(f"<{name}")

        return interceptor

    async def terminal(c: CallContext) -> Any:
        order.append("call")
        return sorted(c.metadata)

    call = compose([make("a"), make("b")], terminal)
    assert arun(call(ctx())) == ["a", "b"]
    assert order == ["a>", "b>", "call", "<b", "<a"]


def test_access_control_rules_roles_and_anonymous() -> None:
    acl = AccessControl(
        {"admin.*": ["admin"], "public_*": [], "*": ["*"]},
        roles={"alice": ["admin"]},
    )
    assert acl.allowed("alice", "admin.reset")
    assert not acl.allowed("bob", "admin.reset")
    assert acl.allowed("bob", "add")
    assert not acl.allowed(None, "add")  # "*" means any authenticated user
    assert not acl.allowed("alice", "public_x")  # an empty rule allows nobody
    open_acl = AccessControl({"admin.*": ["admin"]})
    assert open_acl.allowed(None, "add")  # no rule matched, no default: open

    async def terminal(c: CallContext) -> str:
        return "ran"

    with pytest.raises(RestrictAccessError, match=r"user 'bob' may not call 'admin\.reset'"):
        arun(compose([acl], terminal)(ctx(method="admin.reset", user="bob")))
    assert arun(compose([acl], terminal)(ctx(method="admin.reset", user="alice"))) == "ran"


def test_rate_limit_token_bucket_with_retry_hint() -> None:
    now = [0.0]
    limit = RateLimit(2, burst=2, clock=lambda: now[0])
    assert [limit.take("k") for _ in range(2)] == [0.0, 0.0]
    assert limit.take("k") == pytest.approx(0.5)
    now[0] += 0.5
    assert limit.take("k") == 0.0  # one token refilled
    assert limit.take("other") == 0.0  # separate bucket

    async def terminal(c: CallContext) -> str:
        return "ran"

    with pytest.raises(RpcUnavailableException, match=r"retry in 0\.\d\ds") as info:
        arun(compose([limit], terminal)(ctx(user="k2", id="x")))
        arun(compose([limit], terminal)(ctx(user="k2", id="y")))
        arun(compose([limit], terminal)(ctx(user="k2", id="z")))
    assert info.value.data is not None and info.value.data["RETRY_AFTER"] > 0


def test_rate_limit_memory_is_bounded_by_max_keys() -> None:
    limit = RateLimit(1, max_keys=100)
    for i in range(10_000):
        limit.take(f"peer{i}")
    assert len(limit._buckets) == 100


def test_rate_limit_refuses_nonsense() -> None:
    for rate in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="rate"):
            RateLimit(rate)


def test_access_log_one_record_per_call_and_per_stream(caplog: pytest.LogCaptureFixture) -> None:
    log = AccessLog()

    async def unary(c: CallContext) -> int:
        return 3

    async def failing(c: CallContext) -> int:
        raise RestrictAccessError("no")

    async def items() -> AsyncIterator[int]:
        for i in range(3):
            yield i

    async def stream(c: CallContext) -> AsyncIterator[int]:
        return items()

    async def main() -> list[int]:
        # Outside a server, nothing ends a call's context: ended here as a server does
        # once it answered (AccessLog records the code the client got, from the end).
        first = ctx(peer=("127.0.0.1", 9), user="u")
        await compose([log], unary)(first)
        end_call(first, None)
        second = ctx(id="c2")
        with pytest.raises(RestrictAccessError) as raised:
            await compose([log], failing)(second)
        end_call(second, raised.value)
        third = ctx(id="c3", streaming=True)
        agen = await compose([log], stream)(third)
        items = [i async for i in agen]
        end_call(third, None)
        return items

    with caplog.at_level(logging.INFO, logger="pymprpc.access"):
        assert arun(main()) == [0, 1, 2]
    messages = [r.getMessage() for r in caplog.records if r.name == "pymprpc.access"]
    assert len(messages) == 3
    assert messages[0].startswith("add id=c1 peer=127.0.0.1:9 user=u -> 200 in ")
    assert "id=c2" in messages[1] and "-> 403" in messages[1]
    assert "id=c3" in messages[2] and "-> 201" in messages[2] and "items=3" in messages[2]


def test_observe_stream_reports_an_abandoned_stream() -> None:
    seen: list[tuple[str, int]] = []

    async def items() -> AsyncIterator[int]:
        while True:
            yield 1
            await asyncio.sleep(0)

    async def main() -> None:
        agen = observe_stream(items(), lambda e, n: seen.append((type(e).__name__, n)))
        assert await agen.__anext__() == 1
        await agen.aclose()

    arun(main())
    assert seen == [("GeneratorExit", 1)]


def test_health_states_and_draining() -> None:
    health = Health()
    assert health.get() is HealthStatus.SERVING
    assert health.get("Todo") is HealthStatus.UNKNOWN
    health.set("Todo", "NOT_SERVING")
    assert health.get("Todo") is HealthStatus.NOT_SERVING
    health.set("Todo", HealthStatus.SERVING)
    health.set_draining(True)
    assert (
        health.get() is HealthStatus.NOT_SERVING and health.get("Todo") is HealthStatus.NOT_SERVING
    )
    assert health.snapshot() == {"": "NOT_SERVING", "Todo": "NOT_SERVING"}
    with pytest.raises(ValueError):
        health.set("x", "SOMETIMES")


def test_observe_stream_reports_a_close_before_the_first_item() -> None:
    """A stream closed unread (called oneway, or its start could not be sent) still ends:
    an async generator wrapper would never have run its body, so never reported."""
    ended: list[tuple[str, int]] = []
    closed: list[bool] = []

    async def numbers() -> Any:
        try:
            yield 1
            yield 2
        finally:
            closed.append(True)

    def on_end(error: BaseException | None, items: int) -> None:
        ended.append((type(error).__name__, items))

    async def main() -> None:
        unread = observe_stream(numbers(), on_end)
        await unread.aclose()  # type: ignore[attr-defined]
        await unread.aclose()  # type: ignore[attr-defined]  # once only
        read = observe_stream(numbers(), on_end)
        assert [i async for i in read] == [1, 2]
        await read.aclose()  # type: ignore[attr-defined]
        bad = observe_stream(42, on_end)  # type: ignore[arg-type]  # not a stream at all
        with pytest.raises(TypeError):
            await anext(bad)

    asyncio.run(main())
    assert ended == [("GeneratorExit", 0), ("NoneType", 2), ("TypeError", 0)]
    assert closed == [True]  # the unread generator never started: nothing to close
