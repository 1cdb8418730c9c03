"""Attacks on the async client's fast paths for plain calls (issue 15: "no behaviour
changes"), from its documented contract (README "Clients", docs/protocol.md "Replies":
a client ignores replies for IDs it no longer tracks; a per-call deadline covers the call
and cancels it; close() fails pending calls with ConnectionLostError; CANCEL is sent when
a call is cancelled or times out).

Every scenario runs on asyncio and uvloop: against the real server (many AsyncRPC
instances sharing one loop), and against a hostile in-loop fake server that answers
unknown IDs, answers twice, answers after a CANCEL, reorders replies and splits frames.
"""

from __future__ import annotations

import asyncio
import random
import struct
import threading
import warnings
from collections.abc import Awaitable, Callable
from typing import Any

import msgpack
import pytest
from attacks_server.fastlane_kit import SEP, State, run_on, serving

from pymprpc import AsyncRPC
from pymprpc.errors import (
    ConnectionLostError,
    DeadlineExceeded,
    ExpireWarning,
    MPRPCError,
    RPCRuntimeError,
)

# The "deprecated" reply shapes warn by design; the tests that check the warning catch it.
pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.filterwarnings("ignore::pymprpc.errors.ExpireWarning"),
]

N_CLIENTS = 200


@pytest.fixture(params=["asyncio", "uvloop"])
def loop(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def url(port: int) -> str:
    return f"tcp://127.0.0.1:{port}"


# -- against the real server ----------------------------------------------------------------


@pytest.mark.parametrize("interceptors", [False, True], ids=["plain", "intercepted"])
def test_200_clients_sharing_a_loop_each_get_their_own_results(
    loop: str, interceptors: bool
) -> None:
    async def tag(ctx: Any, call_next: Any) -> Any:
        return await call_next(ctx)

    async def main() -> None:
        state = State()
        async with serving(state) as (_server, port):
            opts: dict[str, Any] = {"interceptors": [tag]} if interceptors else {}
            clients = [AsyncRPC(url(port), **opts) for _ in range(N_CLIENTS)]
            await asyncio.gather(*(c.connect() for c in clients))

            async def use(i: int, c: AsyncRPC) -> None:
                got = await asyncio.gather(*(c.add(i, k) for k in range(5)))
                assert got == [i + k for k in range(5)]
                for k in range(3):
                    assert await c.echo_await([i, k]) == [i, k]
                    assert await c.echo({"i": i, "k": k}) == {"i": i, "k": k}

            await asyncio.gather(*(use(i, c) for i, c in enumerate(clients)))
            await asyncio.gather(*(c.close() for c in clients))

    run_on(loop, main)


def test_cancelling_the_awaiting_task_cancels_the_call_on_the_server(loop: str) -> None:
    async def main() -> None:
        state = State()
        async with serving(state) as (server, port), AsyncRPC(url(port)) as rpc:
            for k in range(40):
                key = f"c{k}"
                task = asyncio.create_task(rpc.hold(key))
                await state.started_event(key).wait()
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                await state.wait_until(lambda key=key: key in state.cancelled)
                assert await rpc.echo(k) == k  # the client goes on, and its IDs
            # cancelled before the request could even be written
            for k in range(40):
                task = asyncio.create_task(rpc.echo(("early", k)))
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                assert await rpc.add(k, 1) == k + 1
            # cancelled right after it was written, while the reply is on its way
            for k in range(40):
                task = asyncio.create_task(rpc.echo(("racy", k)))
                await asyncio.sleep(0)
                task.cancel()
                try:
                    value = await task
                except asyncio.CancelledError:
                    pass
                else:
                    assert value == ("racy", k) or value == ["racy", k]
                assert await rpc.add(k, 2) == k + 2
            await state.wait_until(lambda: server.running_call_count == 0)
            assert state.finished == []

    run_on(loop, main)


def test_timeouts_raise_deadline_exceeded_and_cancel_on_the_server(loop: str) -> None:
    async def main() -> None:
        state = State()
        async with serving(state) as (server, port):
            async with AsyncRPC(url(port)) as rpc:
                for k in range(20):
                    with pytest.raises(DeadlineExceeded):
                        await rpc.hold.with_options(timeout=0.02)(f"t{k}")
                    assert await rpc.echo.with_options(timeout=30)(k) == k
                with pytest.raises(DeadlineExceeded):
                    await rpc.echo.with_options(timeout=-1)("late")
                await state.wait_until(lambda: len(state.cancelled) == 20)
                await state.wait_until(lambda: server.running_call_count == 0)
            async with AsyncRPC(url(port), timeout=0.02) as rpc:
                with pytest.raises(DeadlineExceeded):
                    await rpc.hold("default-timeout")
                assert await rpc.echo.with_options(timeout=None)("fine") == "fine"

    run_on(loop, main)


def test_close_while_calls_are_pending_fails_each_with_connection_lost(loop: str) -> None:
    async def main() -> None:
        state = State()
        async with serving(state, half_close_timeout=0) as (server, port):
            clients = [AsyncRPC(url(port)) for _ in range(20)]
            await asyncio.gather(*(c.connect() for c in clients))
            tasks = [
                asyncio.create_task(c.hold(f"{i}-{k}"))
                for i, c in enumerate(clients)
                for k in range(10)
            ]
            await state.wait_until(lambda: len(state.started) == 200)
            # a sync call answered in the same pass must still be delivered
            quick = [asyncio.create_task(c.echo(i)) for i, c in enumerate(clients)]
            assert await asyncio.gather(*quick) == list(range(20))
            await asyncio.gather(*(c.close() for c in clients))
            outcomes = await asyncio.gather(*tasks, return_exceptions=True)
            assert all(isinstance(o, ConnectionLostError) for o in outcomes), {
                type(o).__name__ for o in outcomes
            }
            await state.wait_until(lambda: len(state.cancelled) == 200)
            await state.wait_until(lambda: server.running_call_count == 0)
            for c in clients:
                with pytest.raises(MPRPCError):
                    await asyncio.wait_for(c.echo(1), 10)  # closed until connect()
            await clients[0].connect()
            assert await clients[0].echo("back") == "back"
            await clients[0].close()

    run_on(loop, main)


# -- against a hostile fake server --------------------------------------------------------------


class FakeServer:
    """A scripted server on the test's own loop; each connection is a `Fake` handed to
    the script once logged in."""

    def __init__(self, script: Callable[[Fake], Awaitable[None]]) -> None:
        self.script = script
        self.server: asyncio.Server | None = None
        self.conns: list[Fake] = []

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Fake(reader, writer)
        self.conns.append(conn)
        await conn.serve(self.script)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for conn in self.conns:
            conn.writer.close()


class Fake:
    """One connection of the fake server: logs the client in (echoing its FEATURES, so
    length framing is used), then runs the script."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.length = False
        self.cancels: list[str] = []

    async def serve(self, script: Callable[[Fake], Awaitable[None]]) -> None:
        writer = self.writer
        auth = await self._recv()
        welcome = {
            "MPRPC": "0.1",
            "CODE": 100,
            "VERSION": None,
            "DESC": None,
            "DEBUG": False,
            "COMPRESER": None,
            "TIMEOUT": 0,
            "FEATURES": list(auth.get("FEATURES") or []),
        }
        writer.write(msgpack.packb(welcome) + SEP)
        self.length = "length-framing" in welcome["FEATURES"]
        try:
            await script(self)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _recv(self) -> Any:
        if self.length:
            (n,) = struct.unpack(">I", await self.reader.readexactly(4))
            payload = await self.reader.readexactly(n)
        else:
            payload = (await self.reader.readuntil(SEP))[: -len(SEP)]
        return msgpack.unpackb(payload, raw=False, strict_map_key=False)

    async def next_call(self) -> Any:
        """The next call (pings answered, cancels recorded)."""
        while True:
            m = await self._recv()
            if m.get("HEARTBEAT") == "ping":
                self.send({"MPRPC": "0.1", "CODE": 101, "HEARTBEAT": "pong"})
            elif m.get("CANCEL"):
                self.cancels.append(m["ID"])
            else:
                return m

    async def next_cancel(self) -> str:
        while True:
            m = await self._recv()
            if m.get("CANCEL"):
                self.cancels.append(m["ID"])
                return str(m["ID"])

    def frame(self, msg: Any) -> bytes:
        payload = msgpack.packb(msg, use_bin_type=True)
        if self.length:
            return struct.pack(">I", len(payload)) + payload
        return payload + SEP

    def send(self, *msgs: Any) -> None:
        """All of `msgs` in one write."""
        self.writer.write(b"".join(self.frame(m) for m in msgs))

    async def send_split(self, msg: Any) -> None:
        """One frame, a byte per write (and a loop pass between)."""
        for b in self.frame(msg):
            self.writer.write(bytes([b]))
            await self.writer.drain()
            await asyncio.sleep(0)


def ok(id: Any, value: Any, code: int = 200) -> dict[str, Any]:
    return {"MPRPC": "0.1", "CODE": code, "MESSAGE": {"ID": id, "RESULT": value}}


async def _with_fake(
    script: Callable[[Fake], Awaitable[None]],
    client: Callable[[AsyncRPC, FakeServer], Awaitable[None]],
    **options: Any,
) -> None:
    fake = FakeServer(script)
    port = await fake.start()
    try:
        async with AsyncRPC(url(port), **options) as rpc:
            await client(rpc, fake)
    finally:
        await fake.close()


@pytest.mark.parametrize("features", [None, ()], ids=["all", "0.0.3"])
def test_replies_for_unknown_ids_and_second_replies_are_ignored(loop: str, features: Any) -> None:
    async def script(f: Fake) -> None:
        while True:
            c = await f.next_call()
            arg = c["ARGS"][0]
            # a ghost, the real reply, a second reply for the same ID, another ghost:
            # all in one segment
            f.send(
                ok("ghost-" + c["ID"], "ghost"),
                ok(c["ID"], arg),
                ok(c["ID"], "second"),
                ok("", "empty-id"),
            )

    async def client(rpc: AsyncRPC, f: FakeServer) -> None:
        for k in range(50):
            assert await rpc.f(k) == k
        got = await asyncio.gather(*(rpc.f(k) for k in range(100)))
        assert got == list(range(100))

    opts = {} if features is None else {"features": features}
    run_on(loop, lambda: _with_fake(script, client, **opts))


@pytest.mark.parametrize("how", ["cancel", "timeout"])
def test_a_reply_after_the_calls_cancel_is_dropped(loop: str, how: str) -> None:
    async def script(f: Fake) -> None:
        while True:
            first = await f.next_call()
            if first["ARGS"][0] != "slow":
                f.send(ok(first["ID"], first["ARGS"][0]))
                continue
            if how == "cancel":
                # (Past its deadline the client sends no CANCEL: the server was told the
                # deadline and ends the call itself.)
                await f.next_cancel()
            second = await f.next_call()
            # the stale reply first, then the next call's, in one segment
            f.send(ok(first["ID"], "stale"), ok(second["ID"], second["ARGS"][0]))

    async def client(rpc: AsyncRPC, f: FakeServer) -> None:
        for k in range(30):
            if how == "cancel":
                task = asyncio.create_task(rpc.f("slow"))
                await asyncio.sleep(0)
                await asyncio.sleep(0)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
            else:
                with pytest.raises(DeadlineExceeded):
                    await rpc.f.with_options(timeout=0.01)("slow")
            assert await rpc.f(("next", k)) == ["next", k]
            assert await rpc.f(k) == k

    run_on(loop, lambda: _with_fake(script, client))


def test_reordered_and_split_replies_match_their_ids(loop: str) -> None:
    async def script(f: Fake) -> None:
        calls = [await f.next_call() for _ in range(100)]
        rng = random.Random(5)
        rng.shuffle(calls)
        f.send(*(ok(c["ID"], c["ARGS"][0]) for c in calls[:90]))
        for c in calls[90:]:
            await f.send_split(ok(c["ID"], c["ARGS"][0]))
        while True:
            c = await f.next_call()
            await f.send_split(ok(c["ID"], c["ARGS"][0]))

    async def client(rpc: AsyncRPC, f: FakeServer) -> None:
        got = await asyncio.gather(*(rpc.f(k) for k in range(100)))
        assert got == list(range(100))
        for k in range(5):
            assert await rpc.f(("split", k)) == ["split", k]

    run_on(loop, lambda: _with_fake(script, client))


def test_results_errors_streams_and_deprecations_in_one_segment(loop: str) -> None:
    async def script(f: Fake) -> None:
        calls = {}
        while len(calls) < 5:
            c = await f.next_call()
            calls[c["ARGS"][0]] = c["ID"]
        f.send(
            ok(calls["plain"], "p"),
            {"MPRPC": "0.1", "CODE": 201, "MESSAGE": {"ID": calls["stream"]}},
            ok(calls["stream"], 1, 202),
            {
                "MPRPC": "0.1",
                "CODE": 404,
                "MESSAGE": {"ID": calls["error"], "EXCEPTION": "ValueError", "MESSAGE": "no"},
            },
            ok(calls["stream"], 2, 202),
            ok(calls["old"], "o", 300),
            {"MPRPC": "0.1", "CODE": 206, "MESSAGE": {"ID": calls["stream"]}},
            ok(calls["last"], "l"),
        )
        while True:
            c = await f.next_call()
            f.send(ok(c["ID"], c["ARGS"][0]))

    async def client(rpc: AsyncRPC, f: FakeServer) -> None:
        async def read_stream() -> list[Any]:
            return [x async for x in await rpc.s("stream")]

        async def error() -> str:
            try:
                await rpc.f("error")
            except RPCRuntimeError as exc:
                return str(exc.exception)
            return "no error"

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            got = await asyncio.gather(
                rpc.f("plain"), read_stream(), error(), rpc.f("old"), rpc.f("last")
            )
        assert got == ["p", [1, 2], "ValueError", "o", "l"], got
        assert any(issubclass(w.category, ExpireWarning) for w in caught)
        assert await rpc.f("after") == "after"

    run_on(loop, lambda: _with_fake(script, client))


def test_many_clients_on_one_loop_with_a_fake_that_answers_in_bursts(loop: str) -> None:
    """200 AsyncRPC instances on one loop; the fake answers each connection's calls in
    bursts holding other IDs' ghosts between them."""

    async def main() -> None:
        fakes_ports = []
        fakes = []

        async def script(f: Fake) -> None:
            while True:
                a = await f.next_call()
                b = await f.next_call()
                f.send(ok(b["ID"], b["ARGS"][0]), ok("nobody", 0), ok(a["ID"], a["ARGS"][0]))

        for _ in range(4):
            fake = FakeServer(script)
            fakes.append(fake)
            fakes_ports.append(await fake.start())
        try:
            clients = [AsyncRPC(url(fakes_ports[i % 4])) for i in range(N_CLIENTS)]

            async def use(i: int, c: AsyncRPC) -> None:
                await c.connect()
                for k in range(3):
                    got = await asyncio.gather(c.f((i, k, "a")), c.f((i, k, "b")))
                    assert got == [[i, k, "a"], [i, k, "b"]]
                await c.close()

            await asyncio.gather(*(use(i, c) for i, c in enumerate(clients)))
        finally:
            for fake in fakes:
                await fake.close()

    run_on(loop, main)


# -- one reply alone in a read (the fast path) against the same reply with company ------------


def _values() -> list[Any]:
    rng = random.Random(11)
    values: list[Any] = [
        None,
        0,
        -1,
        2**64 - 1,
        -(2**63),
        1.5,
        "",
        "é" * 18,
        b"\x00\xff",
        [],
        {},
        [1, [2, [3]]],
        {"a": {"b": None}},
        {1: "int key", None: "nil key", 2.5: "float key"},
        {(1, 2): "array key"},
        msgpack.ExtType(5, b"ext"),
        msgpack.Timestamp(1, 2),
        "x" * 70_000,
        list(range(1000)),
    ]
    values += [[rng.random(), rng.randrange(10**9), str(rng.random())] for _ in range(5)]
    return values


def _raw_replies(id: str, value: Any) -> list[tuple[str, bytes]]:
    """Replies to call `id` as payloads, by name: the server's own layout (the client's
    shortcut) and shapes of the same meaning that it must read the general way."""
    pack = msgpack.packb
    return [
        ("plain", pack({"MPRPC": "0.1", "CODE": 200, "MESSAGE": {"ID": id, "RESULT": value}})),
        (
            "keys-reordered",
            pack({"CODE": 200, "MESSAGE": {"RESULT": value, "ID": id}, "MPRPC": "0.1"}),
        ),
        ("no-result", pack({"MPRPC": "0.1", "CODE": 200, "MESSAGE": {"ID": id}})),
        ("deprecated", pack({"MPRPC": "0.1", "CODE": 300, "MESSAGE": {"ID": id, "RESULT": value}})),
        (
            "error",
            pack(
                {
                    "MPRPC": "0.1",
                    "CODE": 404,
                    "MESSAGE": {"ID": id, "EXCEPTION": "E", "MESSAGE": "m"},
                }
            ),
        ),
        (
            "trailing",  # one byte after the map: not a valid message
            pack({"MPRPC": "0.1", "CODE": 200, "MESSAGE": {"ID": id, "RESULT": value}}) + b"\xc0",
        ),
    ]


def _outcome(exc_or_value: Any) -> Any:
    if isinstance(exc_or_value, BaseException):
        return ("raised", type(exc_or_value).__name__)
    return ("value", repr(exc_or_value))


@pytest.mark.parametrize(
    "shape", ["plain", "keys-reordered", "no-result", "deprecated", "error", "trailing"]
)
def test_a_reply_alone_in_a_read_is_read_as_with_company(loop: str, shape: str) -> None:
    """The same reply, alone in its read or after a reply for an unknown ID in the same
    read, gives the caller the same value or error (and the connection the same fate)."""

    async def main() -> None:
        outcomes: dict[str, list[Any]] = {"alone": [], "company": []}

        async def script(f: Fake) -> None:
            while True:
                c = await f.next_call()
                how, k = c["ARGS"]
                payload = dict(_raw_replies(c["ID"], _values()[k]))[shape]
                head = struct.pack(">I", len(payload))
                ghost = msgpack.packb(ok("0" * 36, "ghost"))
                if how == "company":
                    f.writer.write(struct.pack(">I", len(ghost)) + ghost + head + payload)
                else:
                    f.writer.write(head + payload)

        fake = FakeServer(script)
        port = await fake.start()
        try:
            for how in ("alone", "company"):
                for k in range(len(_values())):
                    rpc = AsyncRPC(url(port))
                    await rpc.connect()
                    with warnings.catch_warnings(record=True) as caught:
                        warnings.simplefilter("always")
                        try:
                            got = await asyncio.wait_for(rpc.f(how, k), 10)
                        except MPRPCError as exc:
                            got = exc
                    warned = sorted({w.category.__name__ for w in caught})
                    try:
                        after = _outcome(await asyncio.wait_for(rpc.f("alone", 0), 10))
                    except MPRPCError as exc:
                        after = _outcome(exc)
                    outcomes[how].append((k, _outcome(got), warned, after))
                    await rpc.close()
        finally:
            await fake.close()
        assert outcomes["alone"] == outcomes["company"]

    run_on(loop, main)


def test_a_typed_client_checks_a_result_that_came_alone(loop: str) -> None:
    """A generated async client raises ValidationError for a result of the wrong type,
    however the reply was read."""
    from generated_examples.calculator import AsyncCalculatorClient
    from pymprpc.errors import ValidationError

    async def script(f: Fake) -> None:
        while True:
            c = await f.next_call()
            a, b = c["ARGS"]
            value = "not an int" if a < 0 else a + b
            if b == 1:  # in company
                f.send(ok("0" * 36, 0), ok(c["ID"], value))
            else:
                f.send(ok(c["ID"], value))

    async def main() -> None:
        fake = FakeServer(script)
        port = await fake.start()
        try:
            async with AsyncCalculatorClient(url(port)) as calc:
                assert await calc.add(2, 0) == 2
                assert await calc.add(2, 1) == 3
                for b in (0, 1):
                    with pytest.raises(ValidationError):
                        await calc.add(-1, b)
                assert await calc.add(5, 0) == 5
        finally:
            await fake.close()

    run_on(loop, main)


# -- a server on its own thread: replies arrive in reads of their own ---------------------------


def _thread_server() -> Any:
    from pymprpc.server import Server

    server = Server(("127.0.0.1", 0), grace_period=1)
    gate = threading.Event()

    @server.register_function()
    async def echo(x: Any) -> Any:
        return x

    @server.register_function()
    async def echo_await(x: Any) -> Any:
        await asyncio.sleep(0)
        return x

    @server.register_function()
    async def wait_gate(x: Any) -> Any:
        while not gate.is_set():
            await asyncio.sleep(0.005)
        return x

    @server.register_function(deprecated=True)
    async def old(x: Any) -> Any:
        return x

    return server, gate


def test_200_clients_against_a_server_in_another_thread(loop: str) -> None:
    from pymprpc.testing import serve_in_thread

    server, gate = _thread_server()
    with serve_in_thread(server) as running:
        port = server.address[1]

        async def main() -> None:
            clients = [AsyncRPC(url(port)) for _ in range(N_CLIENTS)]
            await asyncio.gather(*(c.connect() for c in clients))

            async def use(i: int, c: AsyncRPC) -> None:
                for k in range(5):
                    assert await c.echo([i, k]) == [i, k]
                got = await asyncio.gather(*(c.echo_await((i, k)) for k in range(5)))
                assert got == [[i, k] for k in range(5)]
                # a call cancelled while the server holds it, then the next call
                task = asyncio.create_task(c.wait_gate(i))
                await asyncio.sleep(0)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                with pytest.raises(DeadlineExceeded):
                    await c.wait_gate.with_options(timeout=0.01)(i)
                assert await c.old(i) == i
                assert await c.echo(("after", i)) == ["after", i]

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ExpireWarning)  # not task-safe: checked below
                await asyncio.gather(*(use(i, c) for i, c in enumerate(clients)))
            for c in clients[:5]:  # one task at a time: catch_warnings is process-wide
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    assert await c.old(1) == 1
                assert [w.category for w in caught] == [ExpireWarning]
            await asyncio.gather(*(c.close() for c in clients))

        try:
            run_on(loop, main)
        finally:
            gate.set()
        assert running.call_in_loop(lambda: server.connection_count) >= 0
