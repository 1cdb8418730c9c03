"""Attacks on what kinds of callables can be registered and where/how they run (README
"Executors: which one for a plain function?", `register_function`/`register_instance`
docstrings, the original usage page, docs/protocol.md "Calls" and "Introspection").

Servers run in a subprocess (callables_server.py) with `-W error::RuntimeWarning`, so a
coroutine that is never awaited shows in their stderr; each `where` handler answers the
pid and thread it ran on, which tells the executor apart. Every call is made with both
the blocking `RPC` and the asyncio `AsyncRPC` client."""

from __future__ import annotations

import asyncio
import functools
import json
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pymprpc import RPC, AsyncRPC
from pymprpc.errors import MPRPCError, ParamError, RemoteError, ResultLimitError
from pymprpc.server import DuplicateMethodError, Server

from . import callables_handlers as h

HERE = Path(__file__).parent

pytestmark = [pytest.mark.timeout(90), pytest.mark.filterwarnings("error::RuntimeWarning")]

CLIENTS = ["sync", "async"]
EXECUTORS = ["thread", "inline", "process", "user_thread", "user_process"]


# ---------------------------------------------------------------------------------------
# kit


class CallablesServer:
    """callables_server.py in a subprocess; `stderr()` stops it and returns its log."""

    def __init__(self, executor: str | None) -> None:
        self.errfile = tempfile.TemporaryFile("w+")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-W",
                "error::RuntimeWarning",
                str(HERE / "callables_server.py"),
                json.dumps({"executor": executor}),
            ],
            stdout=subprocess.PIPE,
            stderr=self.errfile,
            text=True,
        )
        line = self.proc.stdout.readline()  # type: ignore[union-attr]
        if not line.strip():
            raise RuntimeError(f"server did not start: {self.stderr()}")
        self.port = int(line)
        self.url = f"tcp://127.0.0.1:{self.port}"
        self._log: str | None = None
        self.loop = call(self, "sync", "loopinfo")  # where the event loop runs

    def stderr(self) -> str:
        if self._log is None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(20)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(5)
            self.errfile.seek(0)
            self._log = self.errfile.read()
            self.errfile.close()
        return self._log


def call(srv: CallablesServer, client: str, name: str, *args: Any, **kwargs: Any) -> Any:
    """Call `name` with a fresh client of the given kind; a stream is read to a list."""
    if client == "sync":
        with RPC(srv.url, timeout=30) as rpc:
            out = rpc.method(name)(*args, **kwargs)
            if not isinstance(out, (dict, list, str, int, float, type(None))):
                out = list(out)
            return out

    async def main() -> Any:
        async with AsyncRPC(srv.url, timeout=30) as rpc:
            out = await rpc.method(name)(*args, **kwargs)
            if hasattr(out, "__aiter__"):
                out = [item async for item in out]
            return out

    return asyncio.run(main())


def still_serves(srv: CallablesServer, client: str) -> None:
    assert call(srv, client, "fn.add", 20, 22) == 42


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str | None, CallablesServer]]:
    """One server per `Server(executor=...)`, started on first use."""
    started: dict[str | None, CallablesServer] = {}
    yield started
    for srv in started.values():
        # A handler's exception is logged with its traceback (README "Logging"); what
        # must never show is a coroutine left unawaited or an error Python ignored.
        log = srv.stderr()
        for bad in ("never awaited", "RuntimeWarning", "Exception ignored"):
            assert bad not in log, log


def server(servers: dict[str | None, CallablesServer], executor: str | None) -> CallablesServer:
    if executor not in servers:
        servers[executor] = CallablesServer(executor)
    return servers[executor]


@pytest.fixture(scope="module")
def default(servers: dict[str | None, CallablesServer]) -> CallablesServer:
    return server(servers, None)


def assert_ran_on(srv: CallablesServer, got: dict[str, Any], executor: str) -> None:
    loop_pid, loop_thread = srv.loop["pid"], srv.loop["thread"]
    if executor == "process":
        assert got["pid"] != loop_pid and not got["user_pool"], got
    elif executor == "user_process":
        assert got["pid"] != loop_pid and got["user_pool"], got
    elif executor == "inline":
        assert (got["pid"], got["thread"]) == (loop_pid, loop_thread), got
    elif executor == "thread":
        assert got["pid"] == loop_pid, got
        assert got["thread"] != loop_thread and not got["thread"].startswith("userpool"), got
    elif executor == "user_thread":
        assert got["pid"] == loop_pid and got["thread"].startswith("userpool"), got
    else:  # pragma: no cover - a typo in a parameter list
        raise AssertionError(executor)


# ---------------------------------------------------------------------------------------
# where plain callables run

# kind -> (the arguments it adds in front, where it runs on a server with no executor=)
WHERE_KINDS: dict[str, tuple[list[Any], str]] = {
    "fn": ([], "process"),
    "partial": (["p"], "process"),
    "partial2": (["p1", "p2"], "process"),
    "wraps": ([], "process"),
    "lambda": ([], "process"),
    "inner": ([], "process"),
    "static": ([], "process"),
    "method": ([], "thread"),
    "classmethod": ([], "thread"),
    "callable": ([], "thread"),
    "partial_method": (["pm"], "thread"),
    "partial_callable": (["pc"], "thread"),
}
# What pickle cannot send to a user ProcessPoolExecutor (README: it "needs picklable,
# importable functions").
UNPICKLABLE = {"lambda"}


def check_where(srv: CallablesServer, name: str, kind: str, executor: str) -> None:
    prefix, _ = WHERE_KINDS[kind]
    for client in CLIENTS:
        if executor == "user_process" and kind in UNPICKLABLE:
            with pytest.raises(RemoteError) as info:
                call(srv, client, name, 1, k=2)
            assert info.value.code == 404
            assert "pickle" in str(info.value).lower(), info.value
        else:
            got = call(srv, client, name, 1, k=2)
            assert got["args"] == [*prefix, 1] and got["kwargs"] == {"k": 2}, got
            assert_ran_on(srv, got, executor)
        still_serves(srv, client)


@pytest.mark.parametrize("kind", sorted(WHERE_KINDS))
def test_default_executor_by_kind(default: CallablesServer, kind: str) -> None:
    """Functions (and what wraps one) go to the process pool, bound methods and callable
    objects (and what wraps one) to the thread pool."""
    check_where(default, f"w.{kind}", kind, WHERE_KINDS[kind][1])


@pytest.mark.parametrize("executor", EXECUTORS)
@pytest.mark.parametrize("kind", sorted(WHERE_KINDS))
def test_register_function_executor(default: CallablesServer, kind: str, executor: str) -> None:
    check_where(default, f"w.{kind}@{executor}", kind, executor)


@pytest.mark.parametrize("executor", EXECUTORS)
@pytest.mark.parametrize("kind", sorted(WHERE_KINDS))
def test_server_executor(
    servers: dict[str | None, CallablesServer], kind: str, executor: str
) -> None:
    """`Server(executor=...)` chooses for every plain callable, functions and methods."""
    check_where(server(servers, executor), f"w.{kind}", kind, executor)


# kind -> (call arguments, the `args` the handler sees)
LOOP_KINDS: dict[str, tuple[list[Any], dict[str, Any], list[Any]]] = {
    "async": ([1], {"k": 2}, [1]),
    "partial_async": ([1], {"k": 2}, ["pa", 1]),
    "async_callable": ([1], {"b": 2}, [1, 2]),
    "partial_async_callable": ([2], {}, [1, 2]),
    "async_wrapper": ([1], {"k": 2}, [1]),
}


@pytest.mark.parametrize("executor", EXECUTORS)
@pytest.mark.parametrize("kind", sorted(LOOP_KINDS))
def test_coroutines_run_on_the_loop_whatever_register_function_says(
    default: CallablesServer, kind: str, executor: str
) -> None:
    """README: "Coroutines and async generators always run on the event loop"."""
    args, kwargs, seen = LOOP_KINDS[kind]
    for client in CLIENTS:
        got = call(default, client, f"l.{kind}@{executor}", *args, **kwargs)
        assert got["args"] == seen, got
        assert_ran_on(default, got, "inline")


@pytest.mark.parametrize("executor", [None, *EXECUTORS])
@pytest.mark.parametrize("kind", sorted(LOOP_KINDS))
def test_coroutines_run_on_the_loop(
    servers: dict[str | None, CallablesServer], kind: str, executor: str | None
) -> None:
    """Coroutine functions, async `__call__` objects, partials of them and async
    wrappers of sync functions run on the event loop whatever the executor."""
    srv = server(servers, executor)
    args, kwargs, seen = LOOP_KINDS[kind]
    for client in CLIENTS:
        got = call(srv, client, f"l.{kind}", *args, **kwargs)
        assert got["args"] == seen, got
        assert_ran_on(srv, got, "inline")
        still_serves(srv, client)


def test_a_thread_call_does_not_hold_up_other_calls(default: CallablesServer) -> None:
    """A plain function blocking its pool thread: other calls (loop, inline, process,
    another thread) are answered meanwhile, on another connection and on its own."""

    async def main() -> None:
        async with AsyncRPC(default.url, timeout=30) as rpc, AsyncRPC(default.url) as other:
            held = asyncio.ensure_future(rpc.method("b.hold")("k1"))
            for _ in range(2000):  # until the call runs on its thread (bounded)
                if await other.method("b.started")("k1"):
                    break
                await asyncio.sleep(0.005)
            else:
                raise AssertionError("b.hold never started")
            assert not held.done()
            for r in (rpc, other):
                assert await r.method("fn.add")(1, 2) == 3  # process pool
                assert await r.method("fn.aadd")(1, 2) == 3  # loop
                assert (await r.method("w.method")())["pid"] == default.loop["pid"]  # thread
            assert not held.done()
            await other.method("b.release")("k1")
            assert await held is True

    asyncio.run(main())


# ---------------------------------------------------------------------------------------
# results and argument binding

OK_CASES: list[tuple[str, list[Any], dict[str, Any], Any]] = [
    ("fn.add", [1, 2], {}, 3),
    ("fn.add", [], {"a": 1, "b": 2}, 3),
    ("fn.add", [1], {}, 11),
    ("fn.kwonly", [2], {"scale": 5}, 10),
    ("fn.posonly", [1, 2], {}, [1, 2]),
    ("fn.varargs", [1, 2], {"x": 1, "y": 2}, [[1, 2], {"x": 1, "y": 2}]),
    ("fn.strann", [1], {"b": "x"}, [1, "x"]),
    ("fn.aadd", [1], {"b": 2}, 3),
    ("fn.sa_add@thread", [1], {"b": 2}, 3),
    ("fn.sa_add@inline", [1], {"b": 2}, 3),
    ("fn.sa_add@user_thread", [1], {"b": 2}, 3),
    ("fn.u_add", [1, 2], {}, "3"),
    ("fn.partial_add", [2], {}, 3),
    ("fn.partial_add", [], {"b": 5}, 6),
    ("fn.partial_kw_add", [1], {}, 101),
    ("fn.partial_kw_add", [], {"a": 1, "b": 2}, 3),
    ("fn.partial_aadd", [1], {}, 6),
    ("fn.partial2_aadd", [], {}, 3),
    ("fn.lambda_mul", [2], {}, 6),
    ("fn.lambda_mul", [], {"a": 2, "b": 5}, 10),
    ("fn.len", [[1, 2, 3]], {}, 3),
    ("fn.max", [1, 5, 3], {}, 5),
    ("fn.max", [[1, 5]], {}, 5),
    ("fn.opadd", [1, 2], {}, 3),
    ("fn.partial_opadd", [1], {}, 101),
    ("fn.dict", [], {"a": 1}, {"a": 1}),
    ("fn.count", [2], {}, 3),
    ("s.agen", [3], {}, [0, 1, 2]),
    ("s.agen", [2], {"start": 5}, [5, 6]),
    ("s.partial", [2], {}, [100, 101]),
    ("s.partial2", [2], {}, [7, 8]),
    ("s.callable", [3], {}, [0, 10, 20]),
    ("s.partial_callable", [], {}, [0, 10]),
    ("s.inner", [3], {}, [0, -1, -2]),
    # a sync wrapper returning an async generator streams, like one returning a coroutine
    ("s.sync_wrapped@thread", [3], {}, [0, 1, 2]),
    ("sacount", [], {}, "static-async"),
]


@pytest.mark.parametrize(("name", "args", "kwargs", "want"), OK_CASES)
def test_results(
    default: CallablesServer, name: str, args: list[Any], kwargs: dict[str, Any], want: Any
) -> None:
    for client in CLIENTS:
        assert call(default, client, name, *args, **kwargs) == want


ERROR_CASES: list[tuple[str, list[Any], dict[str, Any], type[MPRPCError], str]] = [
    ("fn.add", [1, 2, 3], {}, ParamError, "fn.add(): too many positional arguments"),
    ("fn.add", [1], {"c": 3}, ParamError, "unexpected keyword argument 'c'"),
    ("fn.add", [], {}, ParamError, "'a'"),
    ("fn.kwonly", [2, 5], {}, ParamError, "too many positional arguments"),
    # Python's own wording, which changed in 3.13 ("positional-only arguments passed as")
    ("fn.posonly", [], {"a": 1, "b": 2}, ParamError, "fn.posonly(): "),
    ("fn.partial_add", [1, 2], {}, ParamError, "too many positional arguments"),
    ("l.partial_async_callable", [1], {"b": 2}, ParamError, "multiple values for argument 'b'"),
    ("s.partial_callable", [3], {}, ParamError, "too many positional arguments"),
    # README: a sync wrapper around an async def fails in a worker process, saying why
    ("fn.sa_add", [1], {"b": 2}, RemoteError, "declare it `async def`"),
    # docs/protocol.md: a result that cannot be encoded is 405 naming its type
    ("fn.point", [1, 2], {}, ResultLimitError, "MESSAGE.RESULT is a callables_handlers.Point"),
]


@pytest.mark.parametrize(("name", "args", "kwargs", "exc", "text"), ERROR_CASES)
def test_errors_say_what_is_wrong(
    default: CallablesServer,
    name: str,
    args: list[Any],
    kwargs: dict[str, Any],
    exc: type[MPRPCError],
    text: str,
) -> None:
    for client in CLIENTS:
        with pytest.raises(exc) as info:
            call(default, client, name, *args, **kwargs)
        assert text in str(info.value), info.value
        if name == "fn.posonly":
            assert "positional" in str(info.value) and "'a" in str(info.value), info.value
        still_serves(default, client)


@pytest.mark.parametrize("client", CLIENTS)
def test_decorator_that_adds_a_keyword(default: CallablesServer, client: str) -> None:
    assert h.u_add(1, 2, unit="m") == "3m"  # what calling it in Python does
    assert call(default, client, "fn.u_add", 1, 2, unit="m") == "3m"


@pytest.mark.parametrize("client", CLIENTS)
def test_decorated_sync_generator_says_use_async_generator(
    default: CallablesServer, client: str
) -> None:
    with pytest.raises(MPRPCError) as info:
        call(default, client, "fn.wgen", 3)
    assert "async generator" in str(info.value), info.value


# ---------------------------------------------------------------------------------------
# current_call()


@pytest.mark.parametrize("executor", ["thread", "inline", "process", "user_thread"])
@pytest.mark.parametrize("name", ["ctx", "ctx.partial"])
def test_current_call_names_the_call(default: CallablesServer, name: str, executor: str) -> None:
    """README: current_call() works in plain functions on the server's executors, worker
    processes included, and on a ThreadPoolExecutor of your own; partials too."""
    for client in CLIENTS:
        assert call(default, client, f"{name}@{executor}") == f"{name}@{executor}"
    assert call(default, "sync", "ctx") == "ctx"  # default executor


def test_current_call_in_a_user_process_pool_is_never_another_calls() -> None:
    """README: a user ProcessPoolExecutor cannot offer current_call(); then it must fail
    (LookupError, 404), never answer with some other call's context."""
    srv = CallablesServer(None)  # its user pool forks its workers during the calls below
    try:
        for name in ["ctx@user_process", "ctx.partial@user_process"] * 2:
            for client in CLIENTS:
                try:
                    got = call(srv, client, name)
                except RemoteError as exc:
                    assert "LookupError" in str(exc) or "current_call" in str(exc), exc
                else:
                    assert got == name
    finally:
        srv.stderr()


# ---------------------------------------------------------------------------------------
# state: shared on threads, per worker in processes


def test_thread_state_is_shared_and_process_state_is_per_worker(default: CallablesServer) -> None:
    pid = default.loop["pid"]
    first = call(default, "sync", "st.bump")
    assert first[0] == pid
    counts = [call(default, c, "st.bump") for c in CLIENTS * 3]
    assert [c[0] for c in counts] == [pid] * 6
    assert [c[1] for c in counts] == list(range(first[1] + 1, first[1] + 7))
    assert call(default, "async", "st.value") == first[1] + 6  # one counter, seen inline
    # the same bound method on the process pool changes a worker's copy only
    in_workers = [call(default, c, "st.bump@process") for c in CLIENTS * 2]
    assert all(p != pid for p, _ in in_workers), in_workers
    by_pid: dict[int, list[int]] = {}
    for p, n in in_workers:
        by_pid.setdefault(p, []).append(n)
    assert all(ns == sorted(ns) for ns in by_pid.values()), in_workers
    assert call(default, "sync", "st.value") == first[1] + 6


def test_server_executor_process_gives_each_worker_its_own_instance(
    servers: dict[str | None, CallablesServer],
) -> None:
    """`Server(executor="process")`: `register_instance` methods run in workers on their
    own copies; its async methods run on the loop and see the server's, unchanged."""
    srv = server(servers, "process")
    bumps = [call(srv, c, "bump") for c in CLIENTS * 2]
    assert call(srv, "sync", "acount") == 0 and call(srv, "async", "stream", 1) == [0]
    assert all(1 <= b <= 4 for b in bumps), bumps  # some worker's copy counted each
    srv_inline = server(servers, "inline")
    n = call(srv_inline, "sync", "bump")
    assert call(srv_inline, "async", "acount") == n  # inline: the one instance


def test_callable_object_and_builtin_methods_share_state(default: CallablesServer) -> None:
    before = call(default, "sync", "st.obj")["calls"]
    after = call(default, "async", "st.obj")
    assert after["calls"] == before + 1 and after["pid"] == default.loop["pid"], after
    # a dict's own bound methods are bound methods: one dict, seen by every call
    assert call(default, "sync", "st.update", answer=42) is None
    assert call(default, "async", "st.get", "answer") == 42


def test_instance_methods_of_every_kind_share_one_instance(default: CallablesServer) -> None:
    n = call(default, "sync", "bump")
    assert call(default, "async", "count") == n  # thread pool
    assert call(default, "sync", "acount") == n  # event loop
    assert call(default, "async", "stream", 2) == [n, n + 1]
    for name, extra in [("swhere", {}), ("cwhere", {"cls": "Service"})]:
        got = call(default, "sync", name, 1)
        assert {k: got[k] for k in extra} == extra
        assert_ran_on(default, got, "thread")  # register_instance: every method on threads


# ---------------------------------------------------------------------------------------
# introspection


def test_list_methods_names_what_was_registered(default: CallablesServer) -> None:
    for client in CLIENTS:
        names = call(default, client, "system.listMethods")
        assert names == sorted(names)
        public = {"where", "bump", "count", "acount", "stream", "swhere", "cwhere", "sacount"}
        assert public <= set(names)
        assert not {"prop", "greeting", "_private", "__call__"} & set(names)
        assert {f"w.{k}@{e}" for k in WHERE_KINDS for e in EXECUTORS} <= set(names)


SIGNATURES = [
    ("fn.add", "fn.add(a: int, b: int = 10) -> int"),
    ("fn.kwonly", "fn.kwonly(a: int, *, scale: int = 2) -> int"),
    ("fn.posonly", "fn.posonly(a: int, b: int, /) -> list[int]"),
    ("fn.partial_add", "fn.partial_add(b: int = 10) -> int"),
    ("fn.partial_kw_add", "fn.partial_kw_add(a: int, *, b: int = 100) -> int"),
    ("fn.lambda_mul", "fn.lambda_mul(a, b=3)"),
    ("fn.len", "fn.len(obj, /)"),
    ("fn.opadd", "fn.opadd(a, b, /)"),
    ("acount", "acount() -> int"),
]


@pytest.mark.parametrize(("name", "want"), SIGNATURES)
def test_method_signature(default: CallablesServer, name: str, want: str) -> None:
    for client in CLIENTS:
        assert call(default, client, "system.methodSignature", name) == want


@pytest.mark.parametrize("name", ["fn.max", "fn.dict", "fn.strann", "fn.varargs", "s.callable"])
def test_method_signature_never_fails(default: CallablesServer, name: str) -> None:
    """Builtins with no signature, string annotations naming nothing, objects."""
    for client in CLIENTS:
        assert call(default, client, "system.methodSignature", name).startswith(name + "(")


HELP = [
    ("fn.add", "Add two numbers."),
    ("w.wraps", "Where this decorated call ran."),
    ("w.inner", "Defined inside the with block."),
    ("acount", "The counter, from the event loop."),
    ("fn.len", "Return the number of items in a container."),
]


@pytest.mark.parametrize(("name", "want"), HELP)
def test_method_help(default: CallablesServer, name: str, want: str) -> None:
    for client in CLIENTS:
        assert call(default, client, "system.methodHelp", name) == want


@pytest.mark.parametrize(
    ("name", "want"),
    [("w.partial", "Where this call ran."), ("fn.partial_add", "Add two numbers.")],
)
def test_method_help_of_a_partial(default: CallablesServer, name: str, want: str) -> None:
    assert call(default, "sync", "system.methodHelp", name) == want


# ---------------------------------------------------------------------------------------
# no coroutine is left unawaited


def test_no_coroutine_is_left_unawaited() -> None:
    """A sync wrapper around an async def on the process pool (refused) and on a thread
    (awaited), async wrappers, partials of coroutines: the server's stderr, with
    RuntimeWarning turned into errors, names no coroutine that was never awaited."""
    srv = CallablesServer(None)
    try:
        for client in CLIENTS:
            for _ in range(3):
                with pytest.raises(RemoteError):
                    call(srv, client, "fn.sa_add", 1)
                assert call(srv, client, "fn.sa_add@thread", 1) == 11
                assert call(srv, client, "fn.partial2_aadd") == 3
                assert call(srv, client, "l.async_wrapper")["args"] == []
    finally:
        log = srv.stderr()
    assert "never awaited" not in log and "RuntimeWarning" not in log, log


def test_coroutine_returned_in_a_user_process_pool_says_what_to_do() -> None:
    """README: a plain function returning a coroutine "in a worker process ... fails with
    404 saying so (declare it `async def`, or register it with executor="thread")"."""
    srv = CallablesServer(None)
    try:
        for client in CLIENTS:
            with pytest.raises(RemoteError) as info:
                call(srv, client, "fn.sa_add@user_process", 1)
            assert "async def" in str(info.value), info.value
            still_serves(srv, client)
    finally:
        log = srv.stderr()
    assert "never awaited" not in log, log


# ---------------------------------------------------------------------------------------
# registration: what cannot work is refused when registered, saying why


def _sync_gen_method() -> Any:
    class Gen:
        def items(self, n: int) -> Any:
            yield from range(n)

    return Gen()


REFUSED: list[tuple[str, Any]] = [
    ("generator function", lambda s: s.register_function()(h.sync_gen)),
    ("partial of one", lambda s: s.register_function("g")(functools.partial(h.sync_gen, 3))),
    ("object with a generator __call__", lambda s: s.register_function("g")(h.SyncGenCallable())),
    ("instance generator method", lambda s: s.register_instance(_sync_gen_method())),
]


@pytest.mark.parametrize(("what", "register"), REFUSED, ids=[w for w, _ in REFUSED])
def test_sync_generators_are_refused_at_registration(what: str, register: Any) -> None:
    server = Server(("127.0.0.1", 0), executor="thread")
    with pytest.raises(TypeError, match="async generator"):
        register(server)


def test_names_that_cannot_be_inferred_say_pass_name() -> None:
    server = Server(("127.0.0.1", 0), executor="thread")
    for func in [functools.partial(h.add, 1), h.SyncCallable()]:
        with pytest.raises(ValueError, match="pass name="):
            server.register_function()(func)


def test_duplicate_names_name_both() -> None:
    server = Server(("127.0.0.1", 0), executor="thread")
    server.register_function("where")(h.add)
    with pytest.raises(DuplicateMethodError) as info:
        server.register_instance(h.Service())
    assert "'where'" in str(info.value) and "add" in str(info.value)
    assert "Service.where" in str(info.value) and "replace=True" in str(info.value)
    server.register_instance(h.Service(), replace=True)  # what the message says to do


@pytest.mark.parametrize("thing", [42, None, "add"])
def test_non_callable_is_refused_at_registration(thing: Any) -> None:
    server = Server(("127.0.0.1", 0), executor="thread")
    with pytest.raises(TypeError):
        server.register_function("x")(thing)


def test_non_string_name_is_refused() -> None:
    server = Server(("127.0.0.1", 0), executor="thread")
    with pytest.raises(TypeError):
        server.register_function(123)(h.add)


def test_register_function_without_parentheses_registers_it() -> None:
    """`@server.register_function` (no call) is an easy slip: it registers the function
    under its own name rather than silently replacing it with a decorator."""
    from pymprpc.testing import sync_client_for

    server = Server(("127.0.0.1", 0), executor="thread")
    registered = server.register_function(h.add)
    assert registered is h.add
    with sync_client_for(server, timeout=10) as rpc:
        assert rpc.add(1, 2) == 3
