"""AsyncRPC's fixed costs per call, as counts: what fan-in load pays on every call."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from service import url

from helpers import ServerThread, arun
from pymprpc.client import AsyncRPC
from pymprpc.client.async_client import MAX_BATCH
from pymprpc.errors import MPRPCError


def test_a_call_is_one_write_and_asks_no_running_loop(
    srv: ServerThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One write per call when nothing else is in flight, and the connection's own loop
    for the call's future: asyncio.get_running_loop() costs a getpid() per call on 3.11."""
    lookups = 0
    real = asyncio.get_running_loop

    def get_running_loop() -> asyncio.AbstractEventLoop:
        nonlocal lookups
        lookups += 1
        return real()

    async def main() -> None:
        async with AsyncRPC(url(srv)) as rpc:
            assert await rpc.coro_add(1, 2) == 3
            transport: Any = rpc._state.transport
            writes = 0
            write = transport.write

            def counting_write(data: Any) -> None:
                nonlocal writes
                writes += 1
                write(data)

            monkeypatch.setattr(transport, "write", counting_write)
            monkeypatch.setattr(asyncio, "get_running_loop", get_running_loop)
            for i in range(20):
                assert await rpc.coro_add(i, 1) == i + 1
            monkeypatch.setattr(asyncio, "get_running_loop", real)
            assert writes == 20
            assert lookups == 0

    arun(main())


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_plain_call_and_its_result_skip_the_general_paths(
    srv: ServerThread, monkeypatch: pytest.MonkeyPatch, loop: str
) -> None:
    """A plain call is encoded and its result read by the core's fused fast paths: no
    message map through the codec, no Result event, no outcome event settled per call. On
    uvloop too, which hands a read to `data_received` (asyncio: `buffer_updated`): the
    fast path was only in `buffer_updated`, so every uvloop read took the general one."""
    from pymprpc.client import async_client
    from pymprpc.protocol import connection, messages

    counts: dict[str, int] = {}

    def counting(owner: Any, name: str) -> None:
        real = getattr(owner, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            counts[name] = counts.get(name, 0) + 1
            return real(*args, **kwargs)

        monkeypatch.setattr(owner, name, wrapper)

    async def main() -> None:
        async with AsyncRPC(url(srv)) as rpc:
            assert await rpc.coro_add(1, 2) == 3
            counting(connection.ClientConnection, "send_call")
            counting(connection.ClientConnection, "receive_data")
            counting(messages, "parse_response")
            counting(async_client, "_settle")
            counting(async_client.AsyncRPC, "_on_event")
            for i in range(20):
                assert await rpc.coro_add(i, 1) == i + 1
            # One call in flight: each read holds its one reply, taken by the fast path.
            assert counts == {}
            assert await asyncio.gather(*(rpc.coro_add(i, 2) for i in range(10))) == [
                i + 2 for i in range(10)
            ]
            assert counts.get("send_call", 0) == 0
            assert counts.get("_settle", 0) == 0
            # An error still takes the general path (an event, raised with its message).
            with pytest.raises(MPRPCError, match="no_such_method"):
                await rpc.no_such_method()
            assert counts["_settle"] == 1

    run_on(loop, main())


def test_a_method_proxy_without_options_calls_the_client_directly(
    srv: ServerThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`rpc.name(...)` with no options and no interceptors is the client's own call (no
    `_invoke` frame); options and interceptors still go through `_invoke`."""
    from pymprpc.client.interceptors import ClientCallContext

    invoked = 0
    real = AsyncRPC._invoke

    def counting(self: AsyncRPC, *args: Any) -> Any:
        nonlocal invoked
        invoked += 1
        return real(self, *args)

    monkeypatch.setattr(AsyncRPC, "_invoke", counting)
    seen: list[str] = []

    async def tap(ctx: ClientCallContext, call_next: Any) -> Any:
        seen.append(ctx.method)
        return await call_next(ctx)

    async def main() -> None:
        async with AsyncRPC(url(srv)) as rpc:
            for i in range(5):
                assert await rpc.coro_add(i, 1) == i + 1
            assert await rpc.method("coro_add")(2, 2) == 4
            assert invoked == 0
            assert await rpc.coro_add.with_options(timeout=5)(1, 1) == 2
            assert invoked == 1
        async with AsyncRPC(url(srv), interceptors=[tap]) as rpc:
            assert await rpc.coro_add(3, 1) == 4
            assert invoked == 2 and seen == ["coro_add"]

    arun(main())


class RecordingTransport:
    """Stands in for the client's transport (uvloop's `write` cannot be patched): keeps
    the number of messages in each write and passes everything on."""

    def __init__(self, real: Any) -> None:
        self._real = real
        self.messages: list[int] = []

    def write(self, data: Any) -> None:
        # Every MPRPC message is a map with the "MPRPC" key: count them per write.
        self.messages.append(bytes(data).count(b"\xa5MPRPC"))
        self._real.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def run_on(loop: str, coro: Any) -> Any:
    if loop == "asyncio":
        return arun(coro)
    uvloop = pytest.importorskip("uvloop", reason="uvloop is not installed (the test group has it)")
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(asyncio.wait_for(coro, 20))


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
@pytest.mark.parametrize(
    ("calls", "expected"),
    [
        (3, [1, 1, 1]),
        (MAX_BATCH + 2, [1, 1, MAX_BATCH]),
        (64, [1, 1, 16, 16, 16, 14]),
    ],
)
def test_calls_made_in_one_loop_pass_go_out_in_batches_of_at_most_max_batch(
    srv: ServerThread, loop: str, calls: int, expected: list[int]
) -> None:
    """The first call of a pass is written at once (nothing else in flight), the second
    too (it starts the batch), and the others in writes of MAX_BATCH, the rest at the end
    of the pass. One write of the whole pass let a pipelining client and the server take
    turns on one big batch, each idle while the other worked (W2 on uvloop at 0.6x-0.8x
    of asyncio): a batch going out early lets the server start on it."""
    assert MAX_BATCH == 16  # the expected counts above are written for it

    async def main() -> None:
        async with AsyncRPC(url(srv)) as rpc:
            assert await rpc.coro_add(0, 0) == 0
            recording = RecordingTransport(rpc._state.transport)
            rpc._state.transport = recording  # type: ignore[assignment]
            results = await asyncio.gather(*(rpc.coro_add(i, 1) for i in range(calls)))
            assert results == [i + 1 for i in range(calls)]
            assert recording.messages == expected
            rpc._state.transport = recording._real

    run_on(loop, main())


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_call_reads_its_connection_off_the_protocol_not_the_client(
    srv: ServerThread, monkeypatch: pytest.MonkeyPatch, loop: str
) -> None:
    """A plain call and its reply read the core, the loop, the map of calls and the
    measuring flag off the connection's `_Protocol` (slots), and the client's transport,
    batching and paused state off its `_State` (slots), read once per call: on 3.11
    every attribute read on `AsyncRPC` (a class with `__getattr__`) takes the slow,
    unspecialized lookup (~300 instructions each)."""
    reads: dict[str, int] = {}
    counting = False

    def getattribute(self: AsyncRPC, name: str) -> Any:
        if counting:
            reads[name] = reads.get(name, 0) + 1
        return object.__getattribute__(self, name)

    async def main() -> None:
        nonlocal counting
        async with AsyncRPC(url(srv)) as rpc:
            assert await rpc.coro_add(1, 2) == 3
            protocol: Any = rpc._state.protocol
            assert protocol.conn is rpc._conn and protocol.pending is rpc._pending
            monkeypatch.setattr(AsyncRPC, "__getattribute__", getattribute)
            counting = True
            for i in range(20):
                assert await rpc.coro_add(i, 1) == i + 1
            counting = False
            monkeypatch.undo()
            # Per call: the method proxy (it holds the bound call), the default deadline
            # (a plain attribute: subclasses and copies rely on it) and the client's
            # state; per reply: nothing.
            assert reads == {"coro_add": 20, "timeout": 20, "_state": 20}
            # Dropped with its connection: a late read of it is ignored.
            await rpc.reconnect()
            assert protocol.conn is None and rpc._state.protocol is not protocol
            protocol.data_received(b"\x00\x00\x00\x01\xc0")
            assert rpc._received == 0 and rpc.connected
            assert rpc._state.protocol.pending is rpc._pending  # type: ignore[union-attr]
            assert await rpc.coro_add(2, 2) == 4

    run_on(loop, main())


class _TimeoutFirst(AsyncRPC):
    """A subclass that sets the default deadline before calling AsyncRPC's __init__."""

    def __init__(self, addr: str, early: float | None) -> None:
        self.timeout = early
        super().__init__(addr, timeout=0.05)


def test_timeout_is_the_clients_attribute_for_every_call_and_proxy(srv: ServerThread) -> None:
    """`rpc.timeout` is read by every call as it is when
    the call starts, through method proxies made before it was set too, and a subclass
    may set it before AsyncRPC's __init__ (which then sets its own)."""

    async def main() -> None:
        async with _TimeoutFirst(url(srv), early=9.0) as rpc:
            assert rpc.timeout == 0.05  # AsyncRPC's __init__ set it last
            sleep = rpc.sleep  # a proxy made before the change
            rpc.timeout = None
            assert await sleep(0.2) == 0.2
            rpc.timeout = 0.05
            with pytest.raises(MPRPCError, match="deadline"):
                await sleep(0.5)
            assert await rpc.sleep.with_options(timeout=2)(0.1) == 0.1  # its own wins
            other = AsyncRPC(url(srv), timeout=3)
            assert other.timeout == 3 and rpc.timeout == 0.05  # each client its own
            assert other._state is not rpc._state

    arun(main(), timeout=10)
