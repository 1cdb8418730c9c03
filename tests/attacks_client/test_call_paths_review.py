"""Review of c1b1131 (AsyncRPC._call decides its path first; a typed call checks the int
range itself unless it is packed at once by MessagePack): calls of the plain and the
generated typed asyncio clients in every connection state, against a real server.

A typed call with a wrong-typed or out-of-range argument must raise the ParamError the
blocking client raises, before anything is sent or any connection attempted; good calls
return right answers; no call is left pending; the client keeps working. Unencodable
untyped arguments raise LocalProtocolError and the connection goes on."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from bench.servers import BenchCalculator
from generated_examples.calculator.client import AsyncCalculatorClient, CalculatorClient
from generated_examples.calculator.server import register_calculator
from pymprpc.client import RPC, AsyncRPC
from pymprpc.errors import ConnectionLostError, DeadlineExceeded, LocalProtocolError
from pymprpc.server import Server
from pymprpc.testing import RunningServer, serve_in_thread

pytestmark = pytest.mark.timeout(60)

I64_MIN, U64_MAX = -(2**63), 2**64 - 1

# add(a, b) arguments the blocking client refuses with ParamError.
BAD: dict[str, tuple[Any, Any]] = {
    "str": ("1", 2),
    "2**64": (U64_MAX + 1, 1),
    "i64min-1": (I64_MIN - 1, 1),
    "10**5000": (10**5000, 1),
    "-10**5000": (1, -(10**5000)),
    "bool": (True, 1),
    "float": (1.0, 1),
    "none": (None, 1),
}


class _Pass:
    async def __call__(self, ctx: Any, call_next: Any) -> Any:
        return await call_next(ctx)


CONFIGS: dict[str, dict[str, Any]] = {
    "plain": {},
    "debug": {"debug": True},
    "zlib": {"compression": "zlib"},
    "debug-zlib": {"debug": True, "compression": "zlib"},
    "features0": {"features": ()},
    "heart_beat": {"heart_beat": 0.05},
    "interceptor": {"interceptors": [_Pass()]},
    "lzma": {"compression": "lzma"},
    "bz2-features0": {"compression": "bz2", "features": ()},
    "debug-features0": {"debug": True, "features": ()},
}
VIEWS = ["direct", "timeout", "metadata", "prefix"]


class SlowCalculator(BenchCalculator):
    """slow_add(a) waits -a milliseconds first when a is negative."""

    async def slow_add(self, a: int, b: int = 1) -> int:
        if a < 0:
            await asyncio.sleep(-a / 1000)
        return a + b


def _server(**options: Any) -> Server:
    options.setdefault("grace_period", 1)
    server = Server(("127.0.0.1", 0), **options)
    register_calculator(server, SlowCalculator())
    register_calculator(server, SlowCalculator(), prefix="calc.")

    async def echo(v: Any) -> str:
        return repr(v)[:60]

    server.register_function(echo)
    return server


@pytest.fixture(scope="module")
def running() -> Iterator[RunningServer]:
    with serve_in_thread(_server()) as r:
        yield r


@pytest.fixture(scope="module")
def idle_closing() -> Iterator[RunningServer]:
    # Closes a connection idle for 0.2 s: the next call reconnects.
    with serve_in_thread(_server(timeout=0.2)) as r:
        yield r


@pytest.fixture(scope="module")
def expected(running: RunningServer) -> dict[str, tuple[str, str]]:
    """What the blocking client raises for each BAD call."""
    out = {}
    with CalculatorClient(running.url) as client:
        for name, args in BAD.items():
            got = _sync_outcome(lambda: client.add(*args))  # noqa: B023
            assert got[0] == "ParamError", got
            assert got[1].startswith("add(): "), got
            out[name] = got
        assert client.add(1, 2) == 3
    return out


def _sync_outcome(f: Callable[[], Any]) -> tuple[str, Any]:
    try:
        return ("ok", f())
    except Exception as exc:  # noqa: BLE001 - compared as (class name, text)
        return (type(exc).__name__, str(exc))


async def _outcome(aw: Awaitable[Any]) -> tuple[str, Any]:
    try:
        return ("ok", await aw)
    except (Exception, asyncio.CancelledError) as exc:  # noqa: BLE001
        return (type(exc).__name__, str(exc))


def _client(url: str, config: str, view: str) -> tuple[AsyncCalculatorClient, Any]:
    if view == "prefix":
        client = AsyncCalculatorClient(url, prefix="calc.", **CONFIGS[config])
        return client, client
    client = AsyncCalculatorClient(url, **CONFIGS[config])
    if view == "timeout":
        return client, client.with_options(timeout=5)
    if view == "metadata":
        return client, client.with_options(metadata={"k": "v"})
    return client, client


async def _wait_idle_closed(rpc: AsyncRPC) -> None:
    for _ in range(500):
        if not rpc.connected and rpc._state.transport is None:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the server did not close the idle connection")


# -- typed calls: the ParamError comes first, in every state -----------------------------


@pytest.mark.parametrize("view", VIEWS)
@pytest.mark.parametrize("config", list(CONFIGS))
def test_typed_bad_args_before_connect_first_call_and_after_close(
    running: RunningServer, expected: dict[str, tuple[str, str]], config: str, view: str
) -> None:
    if view == "prefix":  # the method named as called
        expected = {k: (v[0], v[1].replace("add()", "calc.add()")) for k, v in expected.items()}

    async def main() -> None:
        client, c = _client(running.url, config, view)
        # Never connected: the ParamError, not "not connected".
        for name, args in BAD.items():
            assert await _outcome(c.add(*args)) == expected[name], name
        got = await _outcome(c.add(1, 2))
        assert got[0] == "ConnectionLostError" and "connect()" in got[1], got
        assert client.rpc._state.transport is None  # nothing attempted
        # The first calls right after connect(), bad then good, alternating.
        await client.connect()
        for name, args in BAD.items():
            assert await _outcome(c.add(*args)) == expected[name], name
            assert await c.add(3, 4) == 7
        assert await c.slow_add(5) == 6
        assert not client.rpc._pending
        await client.rpc.close()
        # After close(): the ParamError again; a good call is "not connected".
        for name, args in BAD.items():
            assert await _outcome(c.add(*args)) == expected[name], name
        got = await _outcome(c.add(1, 2))
        assert got[0] == "ConnectionLostError", got

    asyncio.run(main())


@pytest.mark.parametrize("config", list(CONFIGS))
def test_gather_of_100_typed_calls_with_10_bad_ones(
    running: RunningServer, expected: dict[str, tuple[str, str]], config: str
) -> None:
    names = list(BAD)

    def want(i: int) -> tuple[str, Any]:
        return expected[names[i % len(names)]] if i % 10 == 3 else ("ok", i + 1)

    def calls(c: AsyncCalculatorClient) -> list[Awaitable[Any]]:
        return [
            c.add(*BAD[names[i % len(names)]]) if i % 10 == 3 else c.add(i, 1) for i in range(100)
        ]

    async def main() -> None:
        async with AsyncCalculatorClient(running.url, **CONFIGS[config]) as client:
            got = await asyncio.gather(*(_outcome(a) for a in calls(client)))
            assert got == [want(i) for i in range(100)]
            assert not client.rpc._pending
            assert await client.add(2, 2) == 4

    asyncio.run(main())


@pytest.mark.parametrize(
    "config", ["plain", "debug", "zlib", "features0", "interceptor", "bz2-features0"]
)
def test_typed_calls_after_the_server_closed_an_idle_connection(
    idle_closing: RunningServer, expected: dict[str, tuple[str, str]], config: str
) -> None:
    names = list(BAD)

    async def main() -> None:
        client = AsyncCalculatorClient(idle_closing.url, **CONFIGS[config])
        await client.connect()
        assert await client.add(1, 1) == 2
        for name, args in BAD.items():
            await _wait_idle_closed(client.rpc)
            # Refused before reconnecting: nothing attempted.
            assert await _outcome(client.add(*args)) == expected[name], name
            assert not client.rpc.connected
            assert await client.add(3, 4) == 7  # reconnects transparently
        # 100 calls, 10 bad, all issued while the reconnect is in progress.
        await _wait_idle_closed(client.rpc)
        coros = [
            client.add(*BAD[names[i % len(names)]]) if i % 10 == 3 else client.add(i, 1)
            for i in range(100)
        ]
        got = await asyncio.gather(*(_outcome(c) for c in coros))
        for i, g in enumerate(got):
            assert g == (expected[names[i % len(names)]] if i % 10 == 3 else ("ok", i + 1)), i
        assert not client.rpc._pending
        await client.rpc.close()

    asyncio.run(main())


def test_typed_call_racing_a_reconnect_started_by_another_call(
    idle_closing: RunningServer, expected: dict[str, tuple[str, str]]
) -> None:
    async def main() -> None:
        client = AsyncCalculatorClient(idle_closing.url)
        await client.connect()
        assert await client.add(1, 1) == 2
        for steps in range(12):
            await _wait_idle_closed(client.rpc)
            first = asyncio.ensure_future(client.add(10, steps))
            for _ in range(steps):
                await asyncio.sleep(0)
            # The reconnect is under way, at some step of it: bad ones refused first.
            for name, args in BAD.items():
                assert await _outcome(client.add(*args)) == expected[name], (steps, name)
            assert await first == 10 + steps
            assert await client.add(20, steps) == 20 + steps
            assert not client.rpc._pending
        await client.rpc.close()

    asyncio.run(main())


async def _until_logging_in(rpc: AsyncRPC) -> None:
    """Until the connection being made has its socket but not yet the welcome."""
    for _ in range(100_000):
        conn = rpc._conn
        if (
            rpc._state.transport is not None
            and conn is not None
            and conn.state.value == "authenticating"
        ):
            return
        await asyncio.sleep(0)
    raise AssertionError("never saw the login in progress")


@pytest.mark.parametrize("typed", [True, False], ids=["typed", "untyped"])
def test_a_call_made_while_a_transparent_reconnect_logs_in_is_answered(
    idle_closing: RunningServer, typed: bool
) -> None:
    async def main() -> tuple[str, Any]:
        client = AsyncCalculatorClient(idle_closing.url)
        rpc = client.rpc
        await client.connect()
        assert await client.add(1, 1) == 2
        await _wait_idle_closed(rpc)
        first = asyncio.ensure_future(client.add(10, 1))  # reconnects
        await _until_logging_in(rpc)
        got = await _outcome(client.add(20, 1) if typed else rpc.call("add", 20, 1))
        assert await first == 11
        assert await client.add(1, 2) == 3
        await rpc.close()
        return got

    assert asyncio.run(main()) == ("ok", 21)


def test_typed_calls_after_the_server_went_away(expected: dict[str, tuple[str, str]]) -> None:
    async def main() -> None:
        with serve_in_thread(_server()) as r:
            client = AsyncCalculatorClient(r.url)
            await client.connect()
            assert await client.add(1, 2) == 3
        try:
            await _wait_idle_closed(client.rpc)
            for name, args in BAD.items():
                assert await _outcome(client.add(*args)) == expected[name], name
            got = await _outcome(client.add(1, 2))
            assert got[0] == "ConnectionLostError", got
            got = await _outcome(client.rpc.call("add", 1, 2))
            assert got[0] == "ConnectionLostError", got
            for name, args in BAD.items():  # and again, after the failed reconnect
                assert await _outcome(client.add(*args)) == expected[name], name
        finally:
            await client.rpc.close()

    asyncio.run(main())


# -- deadlines and cancellation ----------------------------------------------------------


@pytest.mark.parametrize("config", ["plain", "debug", "zlib", "features0"])
def test_typed_and_untyped_deadlines_leave_the_connection_working(
    running: RunningServer, config: str
) -> None:
    async def main() -> None:
        async with AsyncCalculatorClient(running.url, **CONFIGS[config]) as client:
            with pytest.raises(DeadlineExceeded, match="slow_add"):
                await client.with_options(timeout=0.05).slow_add(-400, 1)
            assert await client.add(1, 2) == 3
            client.rpc.timeout = 0.05
            with pytest.raises(DeadlineExceeded, match="slow_add"):
                await client.slow_add(-400, 1)
            with pytest.raises(DeadlineExceeded, match="slow_add"):
                await client.rpc.call("slow_add", -400, 1)
            client.rpc.timeout = None
            assert await client.add(2, 2) == 4
            assert await client.rpc.call("add", 2, 3) == 5
            assert not client.rpc._pending

    asyncio.run(main())


@pytest.mark.parametrize("steps", range(5))
def test_cancelling_a_typed_call_at_each_step(running: RunningServer, steps: int) -> None:
    async def main() -> None:
        async with AsyncCalculatorClient(running.url) as client:
            task = asyncio.ensure_future(client.slow_add(-100, 1))
            for _ in range(steps):
                await asyncio.sleep(0)
            task.cancel()
            assert (await _outcome(task))[0] == "CancelledError"
            assert not client.rpc._pending
            assert await client.add(1, 2) == 3
            assert await client.slow_add(-1, 5) == 4

    asyncio.run(main())


@pytest.mark.parametrize("steps", [0, 1, 2, 3])
def test_cancelling_a_typed_call_while_it_reconnects(
    idle_closing: RunningServer, steps: int
) -> None:
    async def main() -> None:
        client = AsyncCalculatorClient(idle_closing.url)
        await client.connect()
        assert await client.add(1, 1) == 2
        await _wait_idle_closed(client.rpc)
        task = asyncio.ensure_future(client.add(5, 2))
        for _ in range(steps):
            await asyncio.sleep(0)
        task.cancel()
        assert (await _outcome(task))[0] in ("CancelledError", "ok")
        assert await client.add(1, 2) == 3
        assert not client.rpc._pending
        await client.rpc.close()

    asyncio.run(main())


@pytest.mark.parametrize("typed", [True, False], ids=["typed", "untyped"])
def test_a_call_cancelled_during_a_reconnect_does_not_break_the_next_reconnect(
    idle_closing: RunningServer, typed: bool
) -> None:
    async def main() -> None:
        client = AsyncCalculatorClient(idle_closing.url)
        rpc = client.rpc

        def add(a: int, b: int) -> Awaitable[Any]:
            return client.add(a, b) if typed else rpc.call("add", a, b)

        await client.connect()
        assert await add(1, 1) == 2
        await _wait_idle_closed(rpc)
        # Cancelled while it waits for the reconnect (as wait_for's timeout does).
        task = asyncio.ensure_future(add(5, 2))
        await asyncio.sleep(0)
        task.cancel()
        assert (await _outcome(task))[0] == "CancelledError"
        for _ in range(1000):  # the reconnect goes on, shielded, and ends
            if rpc.connected and rpc.server_info is not None:
                break
            await asyncio.sleep(0.005)
        assert await add(1, 2) == 3  # on the new connection
        await _wait_idle_closed(rpc)
        assert await _outcome(add(2, 2)) == ("ok", 4)
        await rpc.close()

    asyncio.run(main())


@pytest.mark.parametrize("typed", [True, False], ids=["typed", "untyped"])
def test_connect_after_a_cancelled_connect_and_close_connects(
    running: RunningServer, typed: bool
) -> None:
    async def main() -> tuple[str, Any]:
        client = AsyncCalculatorClient(running.url)
        rpc = client.rpc
        task = asyncio.ensure_future(client.connect())
        await asyncio.sleep(0)
        task.cancel()
        assert (await _outcome(task))[0] == "CancelledError"
        for _ in range(1000):  # the connect goes on, shielded, and ends
            if rpc.connected and rpc.server_info is not None:
                break
            await asyncio.sleep(0.005)
        await rpc.close()
        await client.connect()
        got = await _outcome(client.add(1, 2) if typed else rpc.call("add", 1, 2))
        await rpc.close()
        return got

    assert asyncio.run(main()) == ("ok", 3)


# -- calls while connect() is in progress ------------------------------------------------


@pytest.mark.parametrize("typed", [True, False], ids=["typed", "untyped"])
def test_connect_awaited_while_another_connect_logs_in_waits_for_the_login(
    running: RunningServer, typed: bool
) -> None:
    async def main() -> None:
        client = AsyncCalculatorClient(running.url)
        rpc = client.rpc
        first = asyncio.ensure_future(client.connect())
        while rpc._state.transport is None:  # TCP up, welcome not yet read
            await asyncio.sleep(0)
        await client.connect()  # "callers arriving meanwhile share it"
        got = await _outcome(client.add(1, 2) if typed else rpc.call("add", 1, 2))
        await first
        await rpc.close()
        assert got == ("ok", 3)

    asyncio.run(main())


def test_calls_while_connect_is_in_progress_refuse_bad_typed_args_first(
    running: RunningServer, expected: dict[str, tuple[str, str]]
) -> None:
    async def main() -> None:
        client = AsyncCalculatorClient(running.url)
        first = asyncio.ensure_future(client.connect())
        seen = []
        while not first.done():
            for name, args in BAD.items():
                assert await _outcome(client.add(*args)) == expected[name], name
            got = await _outcome(client.add(1, 2))
            seen.append(got[0])
            # Never sent half-logged-in, never a bare error.
            assert got[0] in ("ok", "ConnectionLostError", "LocalProtocolError"), got
            await asyncio.sleep(0)
        await first
        assert await client.add(1, 2) == 3
        assert not client.rpc._pending
        await client.rpc.close()

    asyncio.run(main())


def test_a_call_during_login_is_not_a_local_protocol_error(running: RunningServer) -> None:
    async def main() -> tuple[str, Any]:
        rpc = AsyncRPC(running.url)
        first = asyncio.ensure_future(rpc.connect())
        while rpc._state.transport is None:
            await asyncio.sleep(0)
        got = await _outcome(rpc.call("add", 1, 2))
        await first
        await rpc.close()
        return got

    got = asyncio.run(main())
    assert got[0] in ("ok", "ConnectionLostError"), got


# -- untyped arguments that cannot be encoded --------------------------------------------


class _Obj:
    pass


UNENCODABLE_MSGPACK: dict[str, Any] = {
    "set": {1},
    "object": _Obj(),
    "2**64": 2**64,
    "-2**63-1": -(2**63) - 1,
    "10**5000": 10**5000,
    "nested 10**5000": [[{"k": -(10**5000)}]],
    "surrogate": "\ud800",
    "key 2**64": {2**64: 1},
}
UNENCODABLE_JSON: dict[str, Any] = {
    "set": {1},
    "object": _Obj(),
    "10**5000": 10**5000,
    "nan": float("nan"),
    "bytes": b"x",
}


def _ways(rpc: AsyncRPC, value: Any) -> dict[str, Awaitable[Any]]:
    return {
        "call": rpc.call("echo", value),
        "attr": rpc.echo(value),
        "timeout": rpc.echo.with_options(timeout=5)(value),
        "metadata": rpc.echo.with_options(metadata={"a": "b"}).call_with_metadata(value),
        "notify": rpc.notify("echo", value),
        "delay": rpc.delay("echo", value),
    }


@pytest.mark.parametrize(
    "config", ["plain", "zlib", "features0", "heart_beat", "interceptor", "debug", "debug-zlib"]
)
def test_unencodable_untyped_arguments_raise_local_protocol_error(
    running: RunningServer, config: str
) -> None:
    opts = CONFIGS[config]
    values = UNENCODABLE_JSON if opts.get("debug") else UNENCODABLE_MSGPACK
    blocking_opts = {k: v for k, v in opts.items() if k != "interceptors"}

    async def main() -> None:
        rpc = AsyncRPC(running.url, **opts)
        await rpc.connect()
        try:
            for name, value in values.items():
                for way, aw in _ways(rpc, value).items():
                    with pytest.raises(LocalProtocolError, match="cannot encode"):
                        await aw
                    assert await rpc.call("add", 1, 2) == 3, (name, way)
            assert not rpc._pending
        finally:
            await rpc.close()

    asyncio.run(main())
    with RPC(running.url, **blocking_opts) as rpc:
        for value in values.values():
            with pytest.raises(LocalProtocolError, match="cannot encode"):
                rpc.call("echo", value)
            assert rpc.call("add", 1, 2) == 3


@pytest.mark.parametrize("config", ["plain", "debug"])
def test_unencodable_untyped_arguments_before_connect_and_after_idle_close(
    idle_closing: RunningServer, config: str
) -> None:
    async def main() -> None:
        rpc = AsyncRPC(idle_closing.url, **CONFIGS[config])
        with pytest.raises(ConnectionLostError, match=r"connect\(\)"):
            await rpc.call("echo", {1})
        await rpc.connect()
        await _wait_idle_closed(rpc)
        with pytest.raises(LocalProtocolError, match="is a set"):
            await rpc.call("echo", {1})  # after reconnecting
        assert await rpc.call("add", 1, 2) == 3
        await rpc.close()

    asyncio.run(main())


@pytest.mark.parametrize("client_kind", ["async", "blocking"])
def test_json_int_past_the_str_digits_limit_is_named(
    running: RunningServer, client_kind: str
) -> None:
    value = [1, 10**5000]
    bits = (10**5000).bit_length()
    if client_kind == "blocking":
        with RPC(running.url, debug=True) as rpc:
            got = _sync_outcome(lambda: rpc.call("echo", value))
    else:

        async def main() -> tuple[str, Any]:
            async with AsyncRPC(running.url, debug=True) as rpc:
                return await _outcome(rpc.call("echo", value))

        got = asyncio.run(main())
    assert got[0] == "LocalProtocolError", got
    assert "set_int_max_str_digits" not in got[1], got
    assert f"ARGS[0][1] is an integer of {bits} bits" in got[1], got


def test_a_json_result_past_the_str_digits_limit_is_named() -> None:
    server = _server()

    def bigl() -> list[int]:
        return [1, -(10**5000)]

    server.register_function(bigl)
    bits = (10**5000).bit_length()

    async def main() -> list[tuple[str, Any]]:
        out = []
        for debug in (False, True):
            async with AsyncRPC(r.url, debug=debug) as rpc:
                out.append(await _outcome(rpc.call("bigl")))
                assert await rpc.call("add", 1, 2) == 3
        return out

    with serve_in_thread(server) as r:
        msgpack_got, json_got = asyncio.run(main())
    assert msgpack_got[0] == "ResultLimitError", msgpack_got
    assert f"RESULT[1] is an integer of {bits} bits" in msgpack_got[1], msgpack_got
    assert json_got[0] == "ResultLimitError", json_got
    assert "set_int_max_str_digits" not in json_got[1], json_got
    assert f"RESULT[1] is an integer of {bits} bits" in json_got[1], json_got
