"""The server's connection shell, driven by hand: which replies share one write."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from service import PASSWORD, USER, Probe, build_server

from pymprpc import Server
from pymprpc.errors import RpcUnavailableException
from pymprpc.protocol import CallFailed, ClientConnection, Result
from pymprpc.server.handler import ConnectionHandler


class RecordingTransport(asyncio.Transport):
    """Keeps every write, as the socket transport would send it."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.unsent = 0  # what get_write_buffer_size reports: bytes the socket refused
        self.closed = False
        self.reading = True

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def get_write_buffer_size(self) -> int:
        return self.unsent

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1) if name == "peername" else default


async def from_callback(handler: ConnectionHandler, data: bytes) -> None:
    """data_received as the event loop calls it: from a callback, outside any task."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    loop.call_soon(lambda: (handler.data_received(data), done.set_result(None)))
    await done


def call(client: ClientConnection, method: str, *args: Any) -> bytes:
    """The bytes of one call, as the client shell would write them."""
    client.send_call(method, args)
    return b"".join(client.chunks_to_send())


async def connected(
    **options: Any,
) -> tuple[ConnectionHandler, RecordingTransport, ClientConnection]:
    return await attached(serving_plus(**options))


def serving_plus(**options: Any) -> Server:
    server = build_server(Probe(), **options)

    @server.register_function()
    async def plus(a: int, b: int) -> int:
        return a + b  # never suspends

    return server


async def attached(
    server: Server,
) -> tuple[ConnectionHandler, RecordingTransport, ClientConnection]:
    """A new connection of `server`, authenticated, its writes so far cleared."""
    handler = ConnectionHandler(server._core)
    transport = RecordingTransport()
    handler.connection_made(transport)
    client = ClientConnection(USER, PASSWORD)
    client.start()
    await from_callback(handler, b"".join(client.chunks_to_send()))
    client.receive_data(b"".join(transport.writes))
    transport.writes.clear()
    return handler, transport, client


def test_calls_answered_within_one_read_share_one_write() -> None:
    async def main() -> None:
        handler, transport, client = await connected()
        wire = b"".join(call(client, "plus", i, i) for i in range(10))
        await from_callback(handler, wire)
        assert len(transport.writes) == 1  # ten replies, one syscall
        events = client.receive_data(transport.writes[0])
        assert [e.value for e in events if isinstance(e, Result)] == [2 * i for i in range(10)]

    asyncio.run(asyncio.wait_for(main(), 10))


def test_a_call_that_does_not_suspend_is_answered_before_the_read_returns() -> None:
    async def main() -> None:
        handler, transport, client = await connected()
        await from_callback(handler, call(client, "plus", 1, 2))
        assert transport.writes, "answered within data_received, no loop pass later"
        assert not handler.tasks
        [event] = client.receive_data(b"".join(transport.writes))
        assert isinstance(event, Result) and event.value == 3

    asyncio.run(asyncio.wait_for(main(), 10))


def test_a_suspending_call_is_tracked_then_answered() -> None:
    async def main() -> None:
        handler, transport, client = await connected()
        await from_callback(handler, call(client, "sleep", 0.01))
        assert not transport.writes and len(handler.tasks) == 1
        while not transport.writes:
            await asyncio.sleep(0.005)
        [event] = client.receive_data(b"".join(transport.writes))
        assert isinstance(event, Result) and event.value == 0.01
        assert not handler.tasks

    asyncio.run(asyncio.wait_for(main(), 10))


def test_reading_goes_on_over_the_high_water_mark_and_pauses_at_max_inflight_waiting() -> None:
    async def main() -> None:
        handler, transport, client = await connected(max_output_buffer=1000, max_inflight=3)
        transport.unsent = 5000
        handler.pause_writing()  # the client reads slower than we answer...
        assert transport.reading  # ...but may be sending while its reader waits on it
        await from_callback(handler, b"".join(call(client, "plus", i, i) for i in range(2)))
        assert transport.reading and not transport.writes  # two calls wait
        await from_callback(handler, call(client, "plus", 2, 2))
        assert not transport.reading  # max_inflight calls wait: stop reading this client
        transport.unsent = 0
        handler.resume_writing()
        while not transport.writes:
            await asyncio.sleep(0)
        assert transport.reading
        events = client.receive_data(b"".join(transport.writes))
        assert [e.value for e in events if isinstance(e, Result)] == [0, 2, 4]

    asyncio.run(asyncio.wait_for(main(), 10))


def test_calls_read_while_the_output_is_over_its_limit_wait_for_it_to_drain() -> None:
    async def main() -> None:
        handler, transport, client = await connected(max_output_buffer=1000)
        transport.unsent = 5000  # the client stopped reading: the socket takes nothing
        handler.pause_writing()
        await from_callback(handler, b"".join(call(client, "plus", i, i) for i in range(3)))
        assert transport.writes == [] and not handler.tasks  # none started
        transport.unsent = 0
        handler.resume_writing()  # drained below the low-water mark
        while not transport.writes:
            await asyncio.sleep(0)
        events = client.receive_data(b"".join(transport.writes))
        assert [e.value for e in events if isinstance(e, Result)] == [0, 2, 4]
        assert transport.reading

    asyncio.run(asyncio.wait_for(main(), 10))


def test_a_cancelled_waiting_call_never_starts() -> None:
    async def main() -> None:
        handler, transport, client = await connected(max_output_buffer=1000)
        transport.unsent = 5000
        handler.pause_writing()
        wire = call(client, "plus", 1, 1) + call(client, "plus", 2, 2)
        first = next(iter(client._pending))
        client.send_cancel(first)
        await from_callback(handler, wire + b"".join(client.chunks_to_send()))
        transport.unsent = 0
        handler.resume_writing()
        while not transport.writes:
            await asyncio.sleep(0)
        events = client.receive_data(b"".join(transport.writes))
        assert [e.value for e in events if isinstance(e, Result)] == [4]

    asyncio.run(asyncio.wait_for(main(), 10))


def test_calls_still_waiting_at_shutdown_are_answered_503() -> None:
    async def main() -> None:
        handler, transport, client = await connected(max_output_buffer=1000)
        transport.unsent = 5000
        handler.pause_writing()
        await from_callback(handler, call(client, "plus", 1, 1))
        assert not transport.writes
        handler.close()
        [event] = client.receive_data(b"".join(transport.writes))
        assert isinstance(event, CallFailed) and isinstance(event.error, RpcUnavailableException)

    asyncio.run(asyncio.wait_for(main(), 10))


def test_a_client_that_half_closes_gets_the_calls_still_waiting_answered() -> None:
    async def main() -> None:
        handler, transport, client = await connected(max_output_buffer=1000)
        transport.unsent = 5000
        handler.pause_writing()
        await from_callback(handler, call(client, "plus", 1, 1))
        assert handler.eof_received()  # a call is owed: keep the transport open
        transport.unsent = 0
        handler.resume_writing()
        while not transport.closed:
            await asyncio.sleep(0)
        [event] = client.receive_data(b"".join(transport.writes))
        assert isinstance(event, Result) and event.value == 2

    asyncio.run(asyncio.wait_for(main(), 10))


# -- any interleaving of reads, back-pressure and drains ---------------------------

ops = st.lists(
    st.one_of(
        st.tuples(st.just("calls"), st.integers(1, 2)),
        st.tuples(st.just("block"), st.sampled_from([0, 10, 5000, 100_000])),
        st.tuples(st.just("drain"), st.integers(0, 3)),
    ),
    max_size=12,
)


@settings(max_examples=150, deadline=5000, suppress_health_check=[HealthCheck.too_slow])
@given(ops, st.sampled_from([2, 5, 100]), st.sampled_from([100, 1000]))
def test_every_call_is_answered_once_in_order(
    steps: list[tuple[str, int]], max_inflight: int, max_output: int
) -> None:
    async def main() -> None:
        handler, transport, client = await connected(
            max_output_buffer=max_output, max_inflight=max_inflight
        )
        sent: list[int] = []
        received: list[Any] = []

        def collect() -> None:
            received.extend(
                e.value
                for e in client.receive_data(b"".join(transport.writes))
                if isinstance(e, Result)
            )
            transport.writes.clear()

        for op, n in steps:
            if op == "calls":
                if not transport.reading:
                    continue  # a paused transport delivers nothing
                wire = b""
                for _ in range(n):
                    wire += call(client, "plus", len(sent), 0)
                    sent.append(len(sent))
                await from_callback(handler, wire)
            elif op == "block":
                transport.unsent = n
                if n:
                    handler.pause_writing()
            else:
                transport.unsent = 0
                handler.resume_writing()
                for _ in range(n):
                    await asyncio.sleep(0)
            collect()
        transport.unsent = 0
        handler.resume_writing()
        for _ in range(100):
            if len(received) == len(sent):
                break
            await asyncio.sleep(0)
            collect()
        assert received == sent
        assert transport.reading
        assert not handler._deferred

    asyncio.run(asyncio.wait_for(main(), 20))


def _pending_task_steps(loop: asyncio.AbstractEventLoop) -> int:
    """Task steps the loop will still run (handles not cancelled), on asyncio's loop."""
    ready = getattr(loop, "_ready", ())
    return sum(
        1
        for h in ready
        if not h._cancelled and isinstance(getattr(h._callback, "__self__", None), asyncio.Task)
    )


def test_a_call_answered_in_its_first_step_costs_no_bookkeeping(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Per call under fan-in: one write, no task registration, no step left for the loop,
    no current_task() without the loop (that costs a getpid() system call on 3.11)."""
    counts = {"started": 0, "finished": 0, "no_loop": 0, "steps_left": 0}
    real_current_task = asyncio.current_task

    def current_task(loop: asyncio.AbstractEventLoop | None = None) -> Any:
        counts["no_loop"] += loop is None
        return real_current_task(loop)

    async def main() -> None:
        handler, transport, client = await connected()
        core = handler._host
        monkeypatch.setattr(core, "call_started", lambda t: counts.__setitem__("started", 1))
        monkeypatch.setattr(core, "call_finished", lambda t: counts.__setitem__("finished", 1))
        monkeypatch.setattr(asyncio, "current_task", current_task)
        loop = asyncio.get_running_loop()
        for i in range(20):
            done = loop.create_future()

            def read(
                data: bytes = call(client, "plus", i, 1), done: asyncio.Future[None] = done
            ) -> None:
                handler.data_received(data)
                counts["steps_left"] += _pending_task_steps(loop)
                done.set_result(None)

            loop.call_soon(read)
            await done
        monkeypatch.setattr(asyncio, "current_task", real_current_task)
        assert len(transport.writes) == 20  # one write per read
        events = client.receive_data(b"".join(transport.writes))
        assert [e.value for e in events if isinstance(e, Result)] == [i + 1 for i in range(20)]
        assert counts == {"started": 0, "finished": 0, "no_loop": 0, "steps_left": 0}
        assert not handler.tasks

    asyncio.run(asyncio.wait_for(main(), 10))


def test_a_suspending_call_is_registered_and_forgotten_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def main() -> None:
        handler, transport, client = await connected()
        core = handler._host
        started: list[asyncio.Task[None]] = []
        finished: list[asyncio.Task[None]] = []
        monkeypatch.setattr(core, "call_started", started.append)
        monkeypatch.setattr(core, "call_finished", finished.append)
        await from_callback(handler, call(client, "sleep", 0.01))
        assert len(started) == 1 and not finished
        while not transport.writes:
            await asyncio.sleep(0.005)
        assert finished == started and not handler.tasks

    asyncio.run(asyncio.wait_for(main(), 10))


def test_with_several_connections_replies_of_one_pass_leave_together_at_its_end() -> None:
    """Three connections of one server read in the same loop pass: no reply is written
    inside its read; each is, in the order read, when the loop gets to the write the
    first read scheduled (as a task per call would write them). A connection closed in
    between gets nothing written, and nothing fails."""

    async def main() -> None:
        server = serving_plus()
        pairs = [await attached(server) for _ in range(3)]
        loop = asyncio.get_running_loop()
        written: list[int] = []
        order: list[int] = []
        for i, (_, transport, _) in enumerate(pairs):
            transport.write = lambda data, i=i, t=transport: (
                order.append(i),
                t.writes.append(data),
            )  # type: ignore[method-assign]
        read = loop.create_future()

        def one_pass() -> None:
            for i, (handler, _, client) in enumerate(reversed(pairs)):
                handler.data_received(call(client, "plus", i, 1))
            pairs[1][1].closed = True  # the middle one goes away before the pass ends
            written.extend(len(t.writes) for _, t, _ in pairs)
            read.set_result(None)

        loop.call_soon(one_pass)
        await read
        assert written == [0, 0, 0], "held for the end of the pass"
        await asyncio.sleep(0)
        assert order == [2, 0], "in the order read; none for the closed connection"
        for expected, (_, transport, client) in zip((3, None, 1), pairs, strict=True):
            events = client.receive_data(b"".join(transport.writes))
            assert [e.value for e in events if isinstance(e, Result)] == (
                [] if expected is None else [expected]
            )

    asyncio.run(asyncio.wait_for(main(), 10))
