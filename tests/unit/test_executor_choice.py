"""Which executor a plain callable gets: stateful callables share their state by default."""

from __future__ import annotations

import functools
import logging
from typing import Any

import pytest

from pymprpc.server import Server
from pymprpc.server.executors import ExecutorKind
from pymprpc.server.registry import holds_state


def plain(a: int) -> int:
    return a


class Box:
    def __init__(self) -> None:
        self.items: list[int] = []

    def put(self, a: int) -> int:
        self.items.append(a)
        return len(self.items)

    @classmethod
    def make(cls) -> str:
        return cls.__name__

    @staticmethod
    def static(a: int) -> int:
        return a

    def __call__(self, a: int) -> int:
        return a

    async def aget(self) -> int:
        return len(self.items)


@pytest.mark.parametrize(
    ("func", "expected"),
    [
        (plain, False),
        (lambda a: a, False),
        (Box.static, False),
        (functools.partial(plain, 1), False),
        (Box().put, True),
        (Box.make, True),
        (Box(), True),  # a callable object
        ([].append, True),  # a builtin object's method
        (len, False),  # a builtin function
        (functools.partial(Box().put, 1), True),
    ],
)
def test_holds_state(func: Any, expected: bool) -> None:
    assert holds_state(func) is expected


def executor_of(server: Server, name: str) -> ExecutorKind | None:
    method = server._core.registry.get(name)  # server internals, for the test
    assert method is not None
    return method.executor


def test_defaults_functions_process_methods_thread() -> None:
    server = Server(("127.0.0.1", 0))
    box = Box()
    server.register_function()(plain)
    server.register_function(name="put")(box.put)
    server.register_function(name="call")(box)
    server.register_function(name="aget")(box.aget)
    assert executor_of(server, "plain") is ExecutorKind.PROCESS
    assert executor_of(server, "put") is ExecutorKind.THREAD
    assert executor_of(server, "call") is ExecutorKind.THREAD
    assert executor_of(server, "aget") is None  # coroutines run on the event loop


def test_register_instance_defaults_to_threads_and_honours_executor() -> None:
    server = Server(("127.0.0.1", 0))
    server.register_instance(Box())
    assert executor_of(server, "put") is ExecutorKind.THREAD
    other = Server(("127.0.0.1", 0))
    other.register_instance(Box(), executor="inline")
    assert executor_of(other, "put") is ExecutorKind.INLINE


@pytest.mark.parametrize("kind", ["process", "thread", "inline"])
def test_server_executor_applies_to_everything(kind: str) -> None:
    """An explicit server-wide executor is the user's choice for every plain callable."""
    server = Server(("127.0.0.1", 0), executor=kind)
    server.register_function()(plain)
    server.register_instance(Box())
    assert executor_of(server, "plain") is ExecutorKind(kind)
    assert executor_of(server, "put") is ExecutorKind(kind)


def test_bound_method_in_process_pool_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    server = Server(("127.0.0.1", 0))
    box = Box()
    with caplog.at_level(logging.INFO, logger="pymprpc.server"):
        server.register_function(name="put", executor="process")(box.put)
        server.register_function(name="plain", executor="process")(plain)
        server.register_function(name="put_t")(box.put)
    notes = [r for r in caplog.records if "own copy" in r.getMessage()]
    assert [r.levelno for r in notes] == [logging.INFO]
    assert "put" in notes[0].getMessage() and "Box" in notes[0].getMessage()
