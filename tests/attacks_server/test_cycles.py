"""Contract 1: no reference cycles keep a failed call's frames (and their locals) alive.

With the garbage collector disabled, a handler's local object must be freed by reference
counting as soon as its call is answered."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
import weakref
from collections.abc import Iterator

import pytest

from helpers import ServerThread
from pymprpc.client import RPC
from pymprpc.errors import RPCRuntimeError
from pymprpc.server import Server

pytestmark = pytest.mark.timeout(60)


class Sentinel:
    pass


@pytest.fixture(autouse=True)
def _no_captured_log_records() -> Iterator[None]:
    """The server logs a failed call at ERROR with its traceback, and pytest's log
    capture keeps every record (with the traceback, and so the frames) until the test
    ends: that is pytest holding the frames, not a cycle. No records while these run."""
    logging.disable(logging.CRITICAL)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


refs: list[weakref.ref[Sentinel]] = []


def _mark() -> Sentinel:
    s = Sentinel()
    refs.append(weakref.ref(s))
    return s


@pytest.fixture(scope="module")
def st() -> Iterator[ServerThread]:
    server = Server(("127.0.0.1", 0), grace_period=1)
    reg = server.register_function

    @reg(executor="inline")
    def inline_raise():
        local = _mark()  # noqa: F841
        raise ValueError("boom")

    @reg(executor="thread")
    def thread_raise():
        local = _mark()  # noqa: F841
        raise ValueError("boom")

    @reg()
    async def async_raise():
        local = _mark()  # noqa: F841
        await asyncio.sleep(0)
        raise ValueError("boom")

    @reg()
    async def async_raise_eager():
        local = _mark()  # noqa: F841
        raise ValueError("boom")

    @reg()
    async def stream_raise():
        local = _mark()  # noqa: F841
        yield 1
        raise ValueError("boom")

    @reg(executor="inline")
    def inline_ok():
        local = _mark()  # noqa: F841
        return 1

    @reg()
    async def async_never():
        local = _mark()  # noqa: F841
        await asyncio.Event().wait()

    with ServerThread(server) as t:
        yield t


@pytest.mark.parametrize(
    "method",
    [
        "inline_ok",
        "inline_raise",
        "thread_raise",
        "async_raise",
        "async_raise_eager",
        "stream_raise",
    ],
)
def test_no_cycle_keeps_handler_locals(st: ServerThread, method: str) -> None:
    with RPC(addr=st.url, timeout=10) as rpc:
        rpc.inline_ok()  # warm up
        gc.collect()
        gc.disable()
        try:
            refs.clear()
            for _ in range(5):
                try:
                    res = getattr(rpc, method)()
                    if method.startswith("stream"):
                        list(res)
                except RPCRuntimeError:
                    pass
            time.sleep(0.2)  # let the server loop drop its task references
            alive = sum(1 for r in refs if r() is not None)
        finally:
            gc.enable()
        assert alive == 0, f"{alive}/5 handler frames kept alive by reference cycles ({method})"


def test_cancelled_by_disconnect_frees_locals(st: ServerThread) -> None:
    refs.clear()
    gc.collect()
    gc.disable()
    try:
        with RPC(addr=st.url, timeout=0.3) as rpc:
            for _ in range(3):
                with contextlib.suppress(Exception):
                    rpc.async_never()
        time.sleep(0.5)
        alive = sum(1 for r in refs if r() is not None)
    finally:
        gc.enable()
    assert alive == 0, f"{alive}/3 frames of cancelled calls still alive"


def test_cancelled_by_deadline_frees_locals_even_with_gc(st: ServerThread) -> None:
    """Distinguish a cycle from a leak: with gc.collect() the frames must be gone too."""
    refs.clear()
    with RPC(addr=st.url, timeout=0.3) as rpc:
        for _ in range(3):
            with contextlib.suppress(Exception):
                rpc.async_never()
        time.sleep(0.5)
        gc.collect()
        alive_open = sum(1 for r in refs if r() is not None)
    time.sleep(0.5)
    gc.collect()
    alive_closed = sum(1 for r in refs if r() is not None)
    assert (alive_open, alive_closed) == (0, 0), "calls past their deadline still hold their frames"
