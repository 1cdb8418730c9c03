"""Hypothesis: random sequences of calls, valid and invalid, mixed methods and argument
shapes, pipelined on one connection (split into random TCP writes), each reply checked
against a model of the documents (docs/protocol.md's tables)."""

from __future__ import annotations

import asyncio
import itertools
from collections import defaultdict
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pymprpc import RPC, AsyncRPC, errors
from pymprpc.testing import RunningServer

from .conftest import FRAMINGS
from .wire import Wire, bare

pytestmark = pytest.mark.timeout(300)

SETTINGS = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

keys = st.text(alphabet="abcxyz_", min_size=1, max_size=6)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)),
    max_leaves=12,
)
raise_kinds = st.sampled_from(
    [
        "ValueError",
        "SystemExit",
        "KeyboardInterrupt",
        "GeneratorExit",
        "CustomBase",
        "RestrictAccessError",
    ]
)
RAISE_CODES = {"RestrictAccessError": 403}
RAISE_MESSAGES = {
    "ValueError": "bad value",
    "SystemExit": "the method raised SystemExit(3)",
    "KeyboardInterrupt": "the method raised KeyboardInterrupt()",
    "GeneratorExit": "the method raised GeneratorExit()",
    "CustomBase": "the method raised CustomBase('custom')",
    "RestrictAccessError": "raised by the method",
}

# An op: (kind, method, args, kwargs, extra fields)
ops = st.one_of(
    st.tuples(
        st.just("call"),
        st.sampled_from(["add", "add_coro", "add_thread"]),
        st.lists(st.one_of(st.integers(-1000, 1000), st.text(max_size=5)), max_size=3),
        st.just({}),
    ),
    st.tuples(
        st.just("call"),
        st.just("echo"),
        st.lists(values, max_size=3),
        st.dictionaries(keys, values, max_size=3),
    ),
    st.tuples(
        st.just("call"),
        st.sampled_from(["nope", "system.nope", "add.sub"]),
        st.lists(scalars, max_size=2),
        st.just({}),
    ),
    st.tuples(st.just("call"), st.just("raise_coro"), raise_kinds.map(lambda k: [k]), st.just({})),
    st.tuples(st.just("call"), st.just("count"), st.integers(0, 4).map(lambda n: [n]), st.just({})),
    st.tuples(
        st.just("kept"),
        st.sampled_from(["add", "echo", "raise_coro", "count"]),
        st.just(None),
        st.just({}),
    ),
    st.tuples(
        st.just("bad"),
        st.sampled_from(["args-map", "return-int", "method-empty", "int-id", "kwargs-list"]),
        st.just(None),
        st.just({}),
    ),
    st.tuples(st.just("ping"), st.just(""), st.just(None), st.just({})),
    # Extensions: honoured where negotiated (length framing), ignored or refused elsewhere.
    st.tuples(
        st.just("ext"),
        st.sampled_from(["oneway", "cancel-idle", "deadline", "metadata"]),
        st.lists(st.integers(-50, 50), min_size=2, max_size=2),
        st.just({}),
    ),
)


def envelope(code: int, body: dict[str, Any]) -> dict[str, Any]:
    return {"MPRPC": "0.1", "CODE": code, "MESSAGE": body}


def outcome(method: str, args: list[Any], kwargs: dict[str, Any], id: Any) -> list[dict[str, Any]]:
    """What the documents say the server answers to this call (as for any ID)."""
    data = {"METHOD": method, "ARGS": args, "KWARGS": kwargs}

    def fail(code: int, exception: str, message: str) -> list[dict[str, Any]]:
        return [
            envelope(code, {"ID": id, "EXCEPTION": exception, "MESSAGE": message, "DATA": data})
        ]

    if method in ("nope", "add.sub"):
        return fail(
            401, "NotFindError", f"no method named {method!r} (system.listMethods lists them)"
        )
    if method == "system.nope":
        return fail(406, "UnsupportSysMethodError", "unsupported system method 'system.nope'")
    if method in ("add", "add_coro", "add_thread"):
        if len(args) != 2:
            missing = ["a", "b"][len(args) :]
            if missing:
                return fail(
                    402, "ParamError", f"{method}(): missing a required argument: {missing[0]!r}"
                )
            return fail(402, "ParamError", f"{method}(): too many positional arguments")
        try:
            return [envelope(200, {"ID": id, "RESULT": args[0] + args[1]})]
        except TypeError as exc:
            return fail(404, "TypeError", str(exc))
    if method == "echo":
        return [envelope(200, {"ID": id, "RESULT": [args, kwargs]})]
    if method == "raise_coro":
        kind = args[0]
        return fail(RAISE_CODES.get(kind, 404), kind, RAISE_MESSAGES[kind])
    if method == "count":
        n = args[0]
        return [
            envelope(201, {"ID": id}),
            *(envelope(202, {"ID": id, "RESULT": i}) for i in range(n)),
            envelope(206, {"ID": id}),
        ]
    raise AssertionError(method)


KEPT_ARGS = {"add": [2, 3], "echo": [[1], "x"], "raise_coro": ["ValueError"], "count": [3]}
BAD = {
    "args-map": ({"ARGS": {"a": 1}}, "ARGS must be an array, got dict"),
    "return-int": ({"RETURN": 1}, "RETURN must be a boolean, got 1"),
    "method-empty": ({"METHOD": ""}, "request has no METHOD (a non-empty string)"),
    "kwargs-list": ({"KWARGS": [1]}, None),
}


def plan(
    ops_: list[Any], json_mode: bool, negotiated: bool = False
) -> tuple[list[dict[str, Any]], dict[Any, list[Any]], int]:
    """The requests to send, the replies expected per ID, and the number of pongs."""
    counter = itertools.count(1)
    requests: list[dict[str, Any]] = []
    expected: dict[Any, list[Any]] = {}
    pings = 0
    for kind, method, args, kwargs in ops_:
        id = f"h-{next(counter)}"
        if kind == "ping":
            requests.append({"MPRPC": "0.1", "HEARTBEAT": "ping"})
            pings += 1
        elif kind == "ext":
            call = {"MPRPC": "0.1", "ID": id, "METHOD": "add", "ARGS": args}
            normal = outcome("add", args, {}, id)
            if method == "oneway":
                requests.append({**call, "ONEWAY": True})
                if not negotiated:  # ignored: an ordinary call
                    expected[id] = normal
            elif method == "cancel-idle":
                requests.append({"MPRPC": "0.1", "ID": id, "CANCEL": True})
                if not negotiated:
                    message = "CANCEL was not negotiated on this connection"
                    expected[id] = [("400", message)]
            elif method == "deadline":
                requests.append({**call, "DEADLINE": 30})
                expected[id] = normal
            else:
                requests.append({**call, "METADATA": {"k": "v"}})
                expected[id] = normal
        elif kind == "call":
            requests.append(
                {"MPRPC": "0.1", "ID": id, "METHOD": method, "ARGS": args, "KWARGS": kwargs}
            )
            expected[id] = outcome(method, args, kwargs, id)
        elif kind == "kept":
            args = KEPT_ARGS[method]
            requests.append(
                {"MPRPC": "0.1", "ID": id, "METHOD": method, "ARGS": args, "RETURN": False}
            )
            get = f"h-{next(counter)}"
            requests.append({"MPRPC": "0.1", "ID": get, "METHOD": "system.getresult", "ARGS": [id]})
            want = outcome(method, args, {}, get)
            expected[get] = want
        else:
            if method == "int-id":
                int_id = 10**6 + next(counter)
                requests.append({"MPRPC": "0.1", "ID": int_id, "METHOD": "add", "ARGS": [1, 2]})
                expected[int_id] = [
                    envelope(
                        400,
                        {
                            "ID": int_id,
                            "EXCEPTION": "RequestError",
                            "MESSAGE": f"ID must be a non-empty string, got {int_id}",
                        },
                    )
                ]
                continue
            fields, message = BAD[method]
            requests.append({"MPRPC": "0.1", "ID": id, "METHOD": "echo", "ARGS": [], **fields})
            expected[id] = [("400", message)]
    return requests, expected, pings


def matches(got: list[Any], want: list[Any]) -> bool:
    if len(want) == 1 and isinstance(want[0], tuple):
        _, message = want[0]
        reply = got[0] if len(got) == 1 else None
        return (
            reply is not None
            and reply["CODE"] == 400
            and set(reply["MESSAGE"]) == {"ID", "EXCEPTION", "MESSAGE"}
            and reply["MESSAGE"]["EXCEPTION"] == "RequestError"
            and (message is None or reply["MESSAGE"]["MESSAGE"] == message)
        )
    # Kept outcomes come back through getresult: DATA names the original call there, so
    # compare everything else exactly and DATA only by presence.
    if len(got) != len(want):
        return False
    for g, w in zip(got, want, strict=True):
        if (
            "DATA" in w["MESSAGE"]
            and "DATA" in g["MESSAGE"]
            and w["MESSAGE"]["DATA"]["METHOD"] != g["MESSAGE"]["DATA"]["METHOD"]
        ):
            g = {**g, "MESSAGE": {**g["MESSAGE"], "DATA": w["MESSAGE"]["DATA"]}}
        if g != w:
            return False
    return True


@pytest.mark.parametrize("framing", list(FRAMINGS))
@SETTINGS
@given(
    ops_=st.lists(ops, min_size=1, max_size=25), cuts=st.lists(st.integers(1, 10**6), max_size=6)
)
def test_random_pipelined_sequences_match_the_model(
    either: RunningServer, framing: str, ops_: list[Any], cuts: list[int]
) -> None:
    json_mode = framing == "json"
    with Wire(either.server.address[1], **FRAMINGS[framing]) as w:
        requests, expected, pings = plan(ops_, json_mode, negotiated=framing == "length")
        data = b"".join(w.frame(w.encode(r)) for r in requests)
        points = sorted({c % len(data) for c in cuts} - {0})
        for start, end in zip([0, *points], [*points, len(data)], strict=True):
            w.send_raw(data[start:end])
        total = sum(len(v) for v in expected.values()) + pings
        replies = w.recv_n(total)
        pongs = [r for r in replies if "MESSAGE" not in r]
        assert pongs == [{"MPRPC": "0.1", "CODE": 101, "HEARTBEAT": "pong"}] * pings
        got: dict[Any, list[Any]] = defaultdict(list)
        for r in replies:
            if "MESSAGE" in r:
                got[r["MESSAGE"]["ID"]].append(r)
        assert set(got) == set(expected)
        for id, want in expected.items():
            assert matches(got[id], want), (id, got[id], want)
        assert w.ping() == {"MPRPC": "0.1", "CODE": 101, "HEARTBEAT": "pong"}  # nothing else came


# -- the same model through the clients ------------------------------------------------
client_ops = st.lists(
    st.one_of(
        st.tuples(
            st.sampled_from(["add", "add_coro", "add_thread"]),
            st.lists(st.one_of(st.integers(-100, 100), st.text(max_size=3)), max_size=3),
            st.just({}),
        ),
        st.tuples(
            st.just("echo"), st.lists(values, max_size=3), st.dictionaries(keys, values, max_size=3)
        ),
        st.tuples(
            st.sampled_from(["nope", "system.nope"]), st.lists(scalars, max_size=2), st.just({})
        ),
        st.tuples(st.just("raise_coro"), raise_kinds.map(lambda k: [k]), st.just({})),
    ),
    min_size=1,
    max_size=20,
)
CLASSES = {
    200: None,
    401: errors.NotFindError,
    402: errors.ParamError,
    403: errors.RestrictAccessError,
    404: errors.RPCRuntimeError,
    406: errors.UnsupportSysMethodError,
}


def check_client_outcome(method: str, args: list[Any], kwargs: dict[str, Any], got: Any) -> None:
    want = outcome(method, args, kwargs, "x")[0]
    code = want["CODE"]
    if code == 200:
        assert got == want["MESSAGE"]["RESULT"]
        return
    cls = CLASSES[code]
    assert type(got) is cls, (method, args, got)
    assert got.code == code and got.exception == want["MESSAGE"]["EXCEPTION"]
    assert got.data == want["MESSAGE"]["DATA"]


@pytest.mark.parametrize(
    "options", [{}, {"features": ()}, {"debug": True}], ids=["modern", "legacy", "json"]
)
@SETTINGS
@given(calls=client_ops)
def test_random_calls_async_client_one_connection(
    either: RunningServer, options: dict[str, Any], calls: list[Any]
) -> None:
    async def main() -> list[Any]:
        async with AsyncRPC(either.url, **options) as rpc:
            return await asyncio.gather(
                *(rpc.call(m, *a, **k) for m, a, k in calls), return_exceptions=True
            )

    results = asyncio.run(asyncio.wait_for(main(), 60))
    for (method, args, kwargs), got in zip(calls, results, strict=True):
        check_client_outcome(method, args, kwargs, got)


@SETTINGS
@given(calls=client_ops)
def test_random_calls_sync_client_one_connection(server: RunningServer, calls: list[Any]) -> None:
    with RPC(server.url) as rpc:
        for method, args, kwargs in calls:
            try:
                got = rpc.call(method, *args, **kwargs)
            except errors.MPRPCError as exc:
                got = exc
            check_client_outcome(method, args, kwargs, got)


@pytest.mark.xfail(
    strict=True,
    reason="BUG: a valid call followed in the SAME read by a bad envelope is never answered, "
    "only the bare 505 (a ping in its place is answered); sent in two writes, the call is "
    "answered before the 505: what a client gets depends on TCP segmentation (docs: messages "
    "are handled in order, a coroutine runs as soon as its request is read)",
)
@pytest.mark.parametrize("first", ["add", "add_coro"])
def test_calls_before_a_bad_envelope_in_the_same_read_are_answered(
    server: RunningServer, first: str
) -> None:
    """A bad envelope ends the connection with a bare 5xx, after the messages before it."""
    with Wire(server.server.address[1]) as w:
        if first == "ping":
            before: dict[str, Any] = {"MPRPC": "0.1", "HEARTBEAT": "ping"}
            answer: dict[str, Any] = {"MPRPC": "0.1", "CODE": 101, "HEARTBEAT": "pong"}
        else:
            before = {"MPRPC": "0.1", "ID": "ok-1", "METHOD": first, "ARGS": [1, 2]}
            answer = {"MPRPC": "0.1", "CODE": 200, "MESSAGE": {"ID": "ok-1", "RESULT": 3}}
        w.send(before, {"MPRPC": "9", "ID": "x"})
        assert w.recv_until_closed() == [answer, bare(505)]


def test_ping_before_a_bad_envelope_in_the_same_read_is_answered(server: RunningServer) -> None:
    with Wire(server.server.address[1]) as w:
        w.send({"MPRPC": "0.1", "HEARTBEAT": "ping"}, {"MPRPC": "9", "ID": "x"})
        assert w.recv_until_closed() == [
            {"MPRPC": "0.1", "CODE": 101, "HEARTBEAT": "pong"},
            bare(505),
        ]


@pytest.mark.parametrize("first", ["add", "add_coro", "ping"])
def test_messages_before_a_bad_envelope_in_an_earlier_read_are_answered(
    server: RunningServer, first: str
) -> None:
    with Wire(server.server.address[1]) as w:
        if first == "ping":
            assert w.ping()["CODE"] == 101
        else:
            assert w.call(first, 1, 2)["MESSAGE"]["RESULT"] == 3
        w.send({"MPRPC": "9", "ID": "x"})
        assert w.recv_until_closed() == [bare(505)]
