"""AsyncRPC's fixed costs per call, as counts: what fan-in load pays on every call."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from service import url

from helpers import ServerThread, arun
from pymprpc.client import AsyncRPC
from pymprpc.client.async_client import MAX_BATCH


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
            transport: Any = rpc._transport
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
            recording = RecordingTransport(rpc._transport)
            rpc._transport = recording  # type: ignore[assignment]
            results = await asyncio.gather(*(rpc.coro_add(i, 1) for i in range(calls)))
            assert results == [i + 1 for i in range(calls)]
            assert recording.messages == expected
            rpc._transport = recording._real

    run_on(loop, main())
