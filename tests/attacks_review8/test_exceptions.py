"""Exceptions hostile to format: whatever a handler raises, its call gets an error reply
(404 naming the exception's type), the server keeps serving, and nothing but the call's
own error is logged."""

from __future__ import annotations

import gc
import logging
from concurrent.futures import ThreadPoolExecutor

import pytest

from attacks_review8 import hostile
from attacks_review8.kit import EXECUTORS, assert_still_serving, build, invoke, serving
from pymprpc import RPC
from pymprpc.errors import CancelledError, RPCRuntimeError

pytestmark = pytest.mark.timeout(30)

# kind -> the `.exception` the client must see (None: any string)
HELD_UP: dict[str, str | bool | None] = {
    "bad_str": "BadStr",
    "args_repr_raises": "ValueError",
    "arg_repr_raises": "ValueError",
    "args_repr_large": "ValueError",  # 1 MB repr of an argument
    "odd_name": None,  # name with a newline, qualname with NUL, module with a surrogate
    "empty_name": None,
    "nonstr_name": False,  # metaclass __name__ returns 42: `.exception` may be None
    "cyclic_cause": "ValueError",
    "deep_cause": "ValueError",  # 10,000 causes
    "group_deep": "ExceptionGroup",  # 2,000 nested groups
    "notes_bad_repr": "ValueError",
    "notes_not_list": "ValueError",
    "needs_two": "NeedsTwo",  # cannot be unpickled as is
    "reduce_raises": "ReduceRaises",
    "args_property": "ArgsProperty",
    "system_exit": "SystemExit",
    "keyboard_interrupt": "KeyboardInterrupt",
    "generator_exit": "GeneratorExit",
    "custom_base": "Custom",
    "stop_async_iteration": None,  # a stream's own gets RuntimeError, as Python says
}


@pytest.mark.logs_errors
@pytest.mark.parametrize("executor", EXECUTORS)
def test_hostile_exceptions_fail_only_their_call(executor: str) -> None:
    with serving() as running, RPC(running.url, timeout=10) as rpc:
        for kind, name in HELD_UP.items():
            with pytest.raises(RPCRuntimeError) as info:
                invoke(rpc, f"raise_{executor}", kind)
            assert info.value.code == 404, kind
            assert name is False or isinstance(info.value.exception, str), kind
            if name:
                assert info.value.exception == name, kind
            assert rpc.ping() == "pong"
        assert_still_serving(running, rpc)


@pytest.mark.parametrize("executor", EXECUTORS)
def test_handler_raising_cancelled_error_gets_407(executor: str) -> None:
    with serving() as running, RPC(running.url, timeout=5) as rpc:
        with pytest.raises(CancelledError):
            invoke(rpc, f"raise_{executor}", "cancelled")
        assert_still_serving(running, rpc)


@pytest.mark.logs_errors
@pytest.mark.parametrize("executor", ["inline", "thread", "async", "stream"])
def test_frame_with_big_locals_is_freed_after_the_call(
    executor: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The 20 MB local of a raising frame is not kept by the server (traceback held).
    The error log is off: pytest's log capture would keep the traceback itself."""
    handler_log = logging.getLogger("pymprpc.server.handler")
    monkeypatch.setattr(handler_log, "disabled", True)
    with serving() as running, RPC(running.url, timeout=5) as rpc:
        hostile.BIG_REFS.clear()
        with pytest.raises(RPCRuntimeError):
            invoke(rpc, f"raise_{executor}", "big_locals")
        assert rpc.ping() == "pong"
        running.call_in_loop(gc.collect)
        gc.collect()
        assert [ref() for ref in hostile.BIG_REFS] == [None]


UNNAMEABLE = [
    "name_raises",  # metaclass property __name__ raises
    "module_raises",  # metaclass property __module__ raises
    "str_subclass_name",  # __name__ is a str subclass whose __str__ raises
    "class_property",  # the instance's __class__ property raises
]


@pytest.mark.logs_errors
@pytest.mark.parametrize("executor", EXECUTORS)
@pytest.mark.parametrize("kind", UNNAMEABLE)
def test_exception_type_that_cannot_be_named_still_fails_its_call(
    executor: str, kind: str, capfd: pytest.CaptureFixture[str]
) -> None:
    with serving() as running, RPC(running.url, timeout=2) as rpc:
        with pytest.raises(RPCRuntimeError) as info:
            invoke(rpc, f"raise_{executor}", kind)
        assert info.value.code == 404
        assert info.value.exception != "WorkerDied"  # a Python exception is not a crash
        assert_still_serving(running, rpc)
    assert "--- Logging error ---" not in capfd.readouterr().err


@pytest.mark.logs_errors
@pytest.mark.parametrize(
    "executor",
    [
        "inline",
        "thread",
        "own_pool",
        "process",
        "async",
        "stream",
    ],
)
def test_stop_iteration_fails_its_call(executor: str) -> None:
    server = build()
    with ThreadPoolExecutor(2) as pool:
        server.register_function("raise_own_pool", executor=pool)(hostile.raiser)
        with serving(server) as running, RPC(running.url, timeout=3) as rpc:
            with pytest.raises(RPCRuntimeError) as info:
                invoke(rpc, f"raise_{executor}", "stop_iteration")
            assert info.value.code == 404
            assert_still_serving(running, rpc)


@pytest.mark.logs_errors
@pytest.mark.parametrize("executor", EXECUTORS)
def test_exception_with_huge_message_still_names_its_type(executor: str) -> None:
    server = build(max_message_size=1_000_000)
    with serving(server) as running, RPC(running.url, timeout=10) as rpc:
        with pytest.raises(RPCRuntimeError) as info:
            invoke(rpc, f"raise_{executor}", "message_2mb")
        assert_still_serving(running, rpc)
    assert info.value.code == 404
    assert info.value.exception == "ValueError"
