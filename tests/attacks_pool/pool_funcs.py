"""Module-level functions for the process-pool fast-lane attacks (importable, so a worker
of any origin and an application's ProcessPoolExecutor can reach them by name)."""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pymprpc import current_call

# The pytest process (the server runs in it): kept in the environment, so a process that
# imports this module afresh (a forkserver's child) knows it too.
PARENT = int(os.environ.setdefault("POOL_ATTACK_PARENT", str(os.getpid())))


def add(a: Any, b: Any = 1) -> Any:
    return a + b


def star(*args: Any) -> Any:
    return ["star", list(args)]


def head_star(a: Any, *rest: Any) -> Any:
    return ["head_star", a, list(rest)]


def kwonly(a: Any, *, k: Any = 2) -> Any:
    return ["kwonly", a, k]


def kwonly_required(a: Any, *, k: Any) -> Any:
    return ["kwonly_required", a, k]


def posonly(a: Any, /, b: Any = 1) -> Any:
    return ["posonly", a, b]


def varkw(a: Any, **kw: Any) -> Any:
    return ["varkw", a, sorted(kw.items())]


def noargs() -> Any:
    return "noargs"


def logged(func: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return ["logged", func(*args, **kwargs)]

    return wrapper


def with_unit(func: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(func)
    def wrapper(*args: Any, unit: str = "", **kwargs: Any) -> Any:
        return [func(*args, **kwargs), unit]

    return wrapper


def fixed(func: Callable[..., Any]) -> Callable[..., Any]:
    """A wraps wrapper with parameters of its own that passes nothing on as it came."""

    @functools.wraps(func)
    def wrapper(x: Any) -> Any:
        return ["fixed", func(x, 100)]

    return wrapper


def _two(a: Any, b: Any) -> Any:
    return [a, b]


def _mul(a: Any, b: Any = 3) -> Any:
    return a * b


deco_logged = logged(_mul)
deco_unit = with_unit(_mul)
deco_stacked = logged(with_unit(_mul))
deco_fixed = fixed(_two)


def ctx_fields() -> Any:
    ctx = current_call()
    return {
        "id": ctx.id,
        "method": ctx.method,
        "metadata": dict(ctx.metadata),
        "deadline_set": ctx.deadline is not None,
        "remaining_set": ctx.time_remaining() is not None,
        "returns": ctx.returns,
        "streaming": ctx.streaming,
        "user": ctx.user,
        "peer_host": None if ctx.peer is None else ctx.peer[0],
    }


def ctx_twice() -> Any:
    a = current_call()
    b = current_call()
    return [a.id, b.id, a.method]


def ctx_from_thread() -> Any:
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(current_call().id)
        except LookupError as exc:
            out.append(f"LookupError: {exc}")

    t = threading.Thread(target=run)
    t.start()
    t.join()
    return out


def set_meta(value: str) -> Any:
    current_call().set_response_metadata("k", value)
    return value


def set_meta_then_raise(value: str) -> Any:
    current_call().set_response_metadata("k", value)
    raise ValueError("after metadata")


def set_meta_many(n: int) -> Any:
    ctx = current_call()
    for i in range(n):
        ctx.set_response_metadata(f"k{i}", str(i))
    return n


async def _async_inner(x: Any) -> Any:
    await asyncio.sleep(0)
    return ["awaited", x]


def returns_coro(x: Any) -> Any:
    return _async_inner(x)


def typed_returns_coro(a: Any) -> Any:
    """`returns_coro` with its parameter named as its typed signature declares it (the
    server passes typed arguments by name)."""
    return _async_inner(a)


def returns_gen(n: int) -> Iterator[int]:
    return iter_gen(n)


def iter_gen(n: int) -> Iterator[int]:
    yield from range(n)


def returns_lock() -> Any:
    return threading.Lock()


class _NoLoad:
    def __reduce__(self) -> Any:
        return (_refuse_load, ())


def _refuse_load() -> Any:
    if os.getpid() == PARENT:
        raise RuntimeError("cannot be loaded in the server")
    return _NoLoad()


def returns_noload() -> Any:
    return _NoLoad()


def returns_set() -> Any:
    return {1, 2}  # picklable, but not encodable as MessagePack


def returns_bigint() -> Any:
    return 2**70


def returns_none() -> Any:
    return None


def returns_bytes(n: int) -> Any:
    return b"y" * n


def arg_info(x: Any) -> Any:
    return [type(x).__name__, len(x) if hasattr(x, "__len__") else None]


class Boom(Exception):
    pass


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str")


class CustomBase(BaseException):
    pass


class WithLock(Exception):
    def __init__(self) -> None:
        super().__init__("holds a lock")
        self.lock = threading.Lock()


def raises(kind: str) -> Any:
    if kind == "value":
        raise ValueError("bad value")
    if kind == "boom":
        raise Boom("boom!")
    if kind == "exit":
        raise SystemExit(3)
    if kind == "exit0":
        raise SystemExit
    if kind == "interrupt":
        raise KeyboardInterrupt("stop")
    if kind == "custom":
        raise CustomBase("mine")
    if kind == "genexit":
        raise GeneratorExit
    if kind == "stopiter":
        raise StopIteration(5)
    if kind == "cancelled":
        raise asyncio.CancelledError("inner")
    if kind == "timeout":
        raise TimeoutError("slow")
    if kind == "unprintable":
        raise Unprintable
    if kind == "withlock":
        raise WithLock
    if kind == "recursion":
        return raises(kind)
    raise KeyError(kind)


def die(code: int = 3) -> Any:
    os._exit(code)


def kill_self() -> Any:
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(5)


def where() -> Any:
    return [
        "main-thread" if threading.current_thread() is threading.main_thread() else "other",
        "server-process" if os.getpid() == PARENT else "other-process",
    ]


def block(tmp: str, tag: str, seconds: float = 30.0) -> Any:
    """Publish this process's pid under `tag`, then sleep (or until `tag.go` exists)."""
    p = Path(tmp)
    part = p / f".{tag}.{os.getpid()}"
    part.write_text(str(os.getpid()))
    part.rename(p / f"{tag}.pid")
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if (p / f"{tag}.go").exists():
            return ["released", tag]
        time.sleep(0.005)
    return ["slept", tag]


def pid() -> Any:
    return os.getpid()


def typed_add(a: int, b: int) -> Any:
    return a + b


def typed_echo(a: Any) -> Any:
    return a


def typed_len(s: str) -> Any:
    return len(s)


class Counter:
    def __init__(self) -> None:
        self.n = 0

    def bump(self, by: int = 1) -> Any:
        self.n += by
        return self.n

    def c_where(self) -> Any:
        return where()

    def c_boom(self) -> Any:
        raise Boom("method boom")

    def c_ctx(self) -> Any:
        return ctx_fields()

    @logged
    def c_decorated(self, x: Any, y: Any = 0) -> Any:
        return ["decorated", x, y]


class CallableObj:
    def __call__(self, x: Any) -> Any:
        return ["callable", x]


class AsyncCallObj:
    async def __call__(self, x: Any) -> Any:
        return ["async-callable", x]


def returns_async_iter() -> Any:
    return AIter([1, 2, 3])


class AIter:
    """A picklable async iterator: a plain function may return one."""

    def __init__(self, items: list[Any]) -> None:
        self.items = list(items)

    def __aiter__(self) -> AIter:
        return self

    async def __anext__(self) -> Any:
        if not self.items:
            raise StopAsyncIteration
        return self.items.pop(0)


_HELD: list[Any] = []


def hold_fds(n: int) -> Any:
    """Open `n` socket pairs and keep them (in this worker) after returning: a process
    that holds many descriptors takes a while to exit once killed."""
    import resource
    import socket

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 2 * n + 256
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    for _ in range(n):
        try:
            _HELD.append(socket.socketpair())
        except OSError:
            break
    return [os.getpid(), len(_HELD)]


def deep(n: int) -> Any:
    x: Any = []
    for _ in range(n):
        x = [x]
    return x


def bad_meta(kind: str) -> Any:
    """Response metadata a client cannot be sent as it is."""
    ctx = current_call()
    if kind == "int-value":
        ctx.response_metadata["k"] = 5  # type: ignore[assignment]
    elif kind == "int-key":
        ctx.response_metadata[5] = "v"  # type: ignore[index]
    elif kind == "api-int":
        ctx.set_response_metadata("k", 5)  # type: ignore[arg-type]
    elif kind == "big":
        ctx.set_response_metadata("k", "v" * 100_000)
    elif kind == "many":
        for i in range(5000):
            ctx.set_response_metadata(f"k{i}", "v")
    elif kind == "reserved":
        ctx.set_response_metadata("", "v")
    return kind


def fork_and_die(tmp: str, seconds: float, status: int = 3) -> Any:
    """The worker dies (`os._exit(status)`) while a child it forked keeps its socket to
    the server open (the child's pid in `tmp`/child.pid, for the test to end it)."""
    child = os.fork()
    if child == 0:
        p = Path(tmp)
        (p / ".child").write_text(str(os.getpid()))
        (p / ".child").rename(p / "child.pid")
        time.sleep(seconds)
        os._exit(0)
    while not (Path(tmp) / "child.pid").exists():
        time.sleep(0.001)
    os._exit(status)
