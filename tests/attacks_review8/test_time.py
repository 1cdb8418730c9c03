"""Handlers that misbehave in time: never return, block the loop, exit, cancel
themselves, stop the loop, or ignore their cancellation. Their call ends (at its
deadline, if nothing else), the server serves others, and it shuts down within its
grace period."""

from __future__ import annotations

import asyncio
import gc
import itertools
import logging
import threading
import time
from typing import Any

import pytest

from attacks_review8 import hostile
from attacks_review8.kit import GRACE, assert_still_serving, build, serving
from pymprpc import RPC
from pymprpc.errors import CancelledError, DeadlineExceeded, RPCRuntimeError
from pymprpc.testing import RunningServer, client_for

pytestmark = pytest.mark.timeout(30)


def server() -> Any:
    srv = build()
    srv.register_function("block_inline", executor="inline")(hostile.block)
    srv.register_function("block_thread", executor="thread")(hostile.block)
    srv.register_function("block_process", executor="process")(hostile.block)
    srv.register_function("exit_thread", executor="thread")(hostile.exiter)
    srv.register_function("exit_process", executor="process")(hostile.exiter)
    srv.register_function(executor="process")(hostile.pid)
    srv.register_function(executor="inline")(hostile.close_loop)
    for func in (
        hostile.forever,
        hostile.stubborn,
        hostile.aclose_loop,
        hostile.stop_loop,
        hostile.cancel_self,
        hostile.ignores_exit,
        hostile.close_raises,
        hostile.close_hangs,
        hostile.close_hangs_stubborn,
        hostile.watch_cancel,
    ):
        srv.register_function()(func)
    return srv


NEVER = {"forever": (), "block_thread": (20,), "block_process": (20,)}


@pytest.mark.parametrize("name", list(NEVER))
def test_call_that_never_returns_ends_at_its_deadline(name: str) -> None:
    with serving(server()) as running, RPC(running.url, timeout=1) as rpc:
        with pytest.raises(DeadlineExceeded):
            rpc.method(name)(*NEVER[name])
        assert_still_serving(running, rpc)


@pytest.mark.parametrize("name", list(NEVER))
def test_call_that_never_returns_is_answered_at_shutdown(name: str) -> None:
    outcome: list[BaseException] = []

    def call(url: str) -> None:
        with RPC(url) as rpc:
            try:
                rpc.method(name)(*NEVER[name])
            except BaseException as exc:  # noqa: BLE001 - examined below
                outcome.append(exc)

    with serving(server()) as running:
        caller = threading.Thread(target=call, args=(running.url,))
        caller.start()
        time.sleep(0.5)
    caller.join(5)
    assert len(outcome) == 1 and isinstance(outcome[0], CancelledError), outcome


def test_blocking_inline_handler_delays_others_only_while_it_runs() -> None:
    with serving(server()) as running, RPC(running.url, timeout=10) as rpc:
        blocker = threading.Thread(target=lambda: rpc.block_inline(1.5))
        blocker.start()
        time.sleep(0.2)
        with RPC(running.url, timeout=10) as other:
            assert other.ping() == "pong"
        blocker.join()
        assert_still_serving(running, rpc)


@pytest.mark.logs_errors
def test_exits_fail_only_their_call() -> None:
    with serving(server()) as running, RPC(running.url, timeout=10) as rpc:
        with pytest.raises(RPCRuntimeError) as info:
            rpc.exit_thread("sys_exit")
        assert info.value.exception == "SystemExit"
        with pytest.raises(RPCRuntimeError) as info:
            rpc.exit_process("sys_exit")
        assert info.value.exception == "SystemExit"
        with pytest.raises(RPCRuntimeError) as info:
            rpc.exit_process("os_exit")
        assert (info.value.code, info.value.exception) == (404, "WorkerDied")
        assert {rpc.pid() for _ in range(4)}  # the pool recovered
        assert_still_serving(running, rpc)


@pytest.mark.logs_errors
def test_loop_abuse_that_python_refuses_fails_only_its_call() -> None:
    with serving(server()) as running, RPC(running.url, timeout=5) as rpc:
        for name in ("close_loop", "aclose_loop"):
            with pytest.raises(RPCRuntimeError):
                rpc.method(name)()
        with pytest.raises(CancelledError):
            rpc.cancel_self()
        assert_still_serving(running, rpc)


@pytest.mark.parametrize("name", ["ignores_exit", "close_raises", "close_hangs"])
@pytest.mark.logs_errors
def test_stream_whose_close_misbehaves(name: str) -> None:
    """The client stops reading after two items; then the stream runs to its end."""
    with serving(server()) as running, RPC(running.url, timeout=5) as rpc:
        stream = rpc.method(name)(1000)
        assert list(itertools.islice(stream, 2)) == [0, 1]
        stream.close()
        assert_still_serving(running, rpc)
        try:
            items = list(rpc.method(name)(3))
        except RPCRuntimeError as exc:  # close_raises: its finally raises
            assert exc.exception == "ValueError"
        except DeadlineExceeded:  # close_hangs: its finally never ends
            assert name == "close_hangs"
        else:
            assert items[:3] == [0, 1, 2]
        assert_still_serving(running, rpc)


def test_cancelling_a_client_call_cancels_its_handler() -> None:
    hostile.CANCELLED.clear()

    async def main() -> None:
        async with client_for(server()) as rpc:
            call = asyncio.ensure_future(rpc.watch_cancel("a"))
            await asyncio.sleep(0.3)
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            for _ in range(50):
                if hostile.CANCELLED:
                    break
                await asyncio.sleep(0.05)
            assert await rpc.ping() == "pong"

    asyncio.run(main())
    assert hostile.CANCELLED == ["a"]


@pytest.mark.xfail(
    # Not strict: it passed once (CI, Python 3.13, a loaded machine: the fresh client's
    # call was answered before the stop took effect, the teardown then failed), so
    # which of the two it does depends on timing; it fails in every quiet run.
    strict=False,
    reason="a coroutine calling asyncio.get_running_loop().stop() stops the server: "
    "run_forever() raises 'Event loop stopped before Future completed', new "
    "connections are refused (README: no handler can stop the server)",
)
def test_handler_stopping_the_loop_does_not_stop_the_server() -> None:
    with serving(server()) as running, RPC(running.url, timeout=3) as rpc:
        try:
            rpc.stop_loop()
        finally:
            with RPC(running.url, timeout=3, connect_timeout=3) as fresh:
                assert fresh.ping() == "pong"


@pytest.mark.logs_errors  # checked in the test: a teardown error would not be xfailed
@pytest.mark.parametrize(
    "name",
    # Fixed (review 27): a stream whose `finally` swallows its cancellation no longer
    # logs ERRORs when it is abandoned at shutdown ('aclose(): asynchronous generator is
    # already running' as if the method had raised it, asyncio's failed asyncgen close).
    ["stubborn", "close_hangs_stubborn"],
)
def test_handler_ignoring_cancellation_does_not_hold_shutdown(
    name: str, caplog: pytest.LogCaptureFixture
) -> None:
    running = RunningServer(server())
    running.start()
    try:
        with RPC(running.url, timeout=1) as rpc:
            if name == "stubborn":
                with pytest.raises(DeadlineExceeded):
                    rpc.stubborn()
            else:
                stream = rpc.close_hangs_stubborn(1000)
                assert list(itertools.islice(stream, 2)) == [0, 1]
                stream.close()
            assert rpc.ping() == "pong"
    finally:
        running.stop(timeout=GRACE + max(1.0, GRACE) + 3)  # grace, then abandon
    gc.collect()  # an abandoned task destroyed pending would log now
    errors = [
        f"{r.name}: {r.getMessage()}"
        for r in caplog.get_records("call")
        if r.levelno >= logging.ERROR and r.name.startswith(("asyncio", "pymprpc"))
    ]
    assert errors == []


@pytest.mark.logs_errors  # checked below, in the test
def test_run_forever_after_abandoning_a_stubborn_handler_logs_no_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    box = [server()]
    ended = threading.Event()

    def run(srv: Any) -> None:
        with srv:
            srv.run_forever()
        ended.set()

    threading.Thread(target=run, args=(box[0],), daemon=True).start()
    for _ in range(100):
        if getattr(box[0], "port", 0):
            break
        time.sleep(0.05)
    time.sleep(0.3)
    url = f"tcp://127.0.0.1:{box[0].port}"
    with RPC(url, timeout=1) as rpc, pytest.raises(DeadlineExceeded):
        rpc.stubborn()
    box[0].stop()
    assert ended.wait(GRACE + max(1.0, GRACE) + 3)
    box.clear()  # the server, its loop and the abandoned task go
    gc.collect()
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []
