"""The process pool: workers that die or are killed, values that cannot cross, large
values, many calls at once, deadlines, shutdown and signals, threads started first, and
functions defined inside `with Server(...)`."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from helpers import ServerThread, arun, wait_for
from pymprpc.client import RPC, AsyncRPC
from pymprpc.errors import (
    DeadlineExceeded,
    MPRPCError,
    ParamError,
    RestrictAccessError,
    ResultLimitError,
    RPCRuntimeError,
    RpcUnavailableException,
    ValidationError,
)
from pymprpc.server import Server

RUNTIME = Path(__file__).resolve().parents[2] / "runtime"


# Module-level functions: importable, so they also reach workers started by the
# forkserver when the test process already runs threads.
def add(a: int, b: int) -> int:
    return a + b


def pid() -> int:
    return os.getpid()


def echo(value: Any) -> Any:
    return value


def block(pid_path: str, release_path: str) -> int:
    """Say which worker runs the call, then wait until the test releases it."""
    Path(pid_path).write_text(str(os.getpid()))
    end = time.monotonic() + 30
    while not os.path.exists(release_path) and time.monotonic() < end:
        time.sleep(0.005)  # polling a file: the test's only way to reach a worker
    return os.getpid()


def deep_result(depth: int) -> Any:
    return nested(depth)


def recursion_limit() -> int:
    return sys.getrecursionlimit()


def die() -> None:
    os._exit(3)


def exit_call(code: int) -> None:
    sys.exit(code)


def interrupt() -> None:
    raise KeyboardInterrupt("from a handler")


def unpicklable_result() -> Any:
    return threading.Lock()


class _Unreadable:
    """Pickles fine in the worker, fails to unpickle in the server."""

    def __reduce__(self) -> tuple[Any, ...]:
        return _refuse, ()


def _refuse() -> None:
    raise ValueError("refusing to be unpickled")


def unreadable_result() -> Any:
    return _Unreadable()


def thread_name() -> str:
    return threading.current_thread().name


def build(**options: Any) -> Server:
    options.setdefault("max_message_size", 64 * 1024 * 1024)
    server = Server(("127.0.0.1", 0), **options)
    for func in (add, pid, echo, block, die, exit_call, interrupt, unpicklable_result):
        server.register_function()(func)
    server.register_function()(unreadable_result)
    server.register_function()(thread_name)
    server.register_function()(deep_result)
    server.register_function("deep_result_on_a_thread", executor="thread")(deep_result)
    server.register_function()(recursion_limit)
    return server


@pytest.fixture
def pool_server() -> Iterator[ServerThread]:
    with ServerThread(build(max_workers=2, max_inflight=10_000)) as srv:
        yield srv


class Latch:
    """A `block` call's pid file and release file."""

    def __init__(self, directory: Path, name: str = "call") -> None:
        self.pid_path = directory / f"{name}.pid"
        self.release_path = directory / f"{name}.release"

    @property
    def args(self) -> tuple[str, str]:
        return str(self.pid_path), str(self.release_path)

    def wait_started(self) -> int:
        wait_for(lambda: self.pid_path.exists() and self.pid_path.read_text() != "", 20)
        return int(self.pid_path.read_text())

    def release(self) -> None:
        self.release_path.write_text("go")


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_worker_killed_mid_call_fails_that_call_only(
    pool_server: ServerThread, tmp_path: Path
) -> None:
    latch = Latch(tmp_path)

    async def main() -> None:
        async with AsyncRPC(pool_server.url) as rpc:
            blocked = asyncio.ensure_future(rpc.block(*latch.args))
            worker = await asyncio.to_thread(latch.wait_started)
            # Calls in flight on both workers and in the queue while one worker dies.
            others = [asyncio.ensure_future(rpc.add(i, i)) for i in range(200)]
            os.kill(worker, signal.SIGKILL)
            with pytest.raises(RPCRuntimeError, match=r"'block'.*died") as info:
                await blocked
            assert info.value.exception == "WorkerDied"
            assert await asyncio.gather(*others) == [2 * i for i in range(200)]
            pids = {await rpc.pid() for _ in range(20)}
            assert worker not in pids and os.getpid() not in pids

    arun(main())


def test_calls_queued_behind_a_killed_call_run_elsewhere(tmp_path: Path) -> None:
    """One worker: the calls sent to it behind the running one never started, so they
    are run by its replacement instead of failing."""
    latch = Latch(tmp_path)

    async def main(srv: ServerThread) -> None:
        async with AsyncRPC(srv.url) as rpc:
            blocked = asyncio.ensure_future(rpc.block(*latch.args))
            worker = await asyncio.to_thread(latch.wait_started)
            queued = [asyncio.ensure_future(rpc.add(i, 1)) for i in range(10)]
            # Let the queued calls reach the server (and the worker) before the kill.
            await asyncio.to_thread(
                wait_for, lambda: srv.call_in_loop(lambda: srv.server.running_call_count) >= 11
            )
            os.kill(worker, signal.SIGKILL)
            with pytest.raises(RPCRuntimeError, match="'block'"):
                await blocked
            assert await asyncio.gather(*queued) == [i + 1 for i in range(10)]

    with ServerThread(build(max_workers=1)) as srv:
        arun(main(srv))


def test_os_exit_in_a_handler_fails_that_call_only(pool_server: ServerThread) -> None:
    async def main() -> None:
        async with AsyncRPC(pool_server.url) as rpc:
            calls = [rpc.add(i, 1) for i in range(50)] + [rpc.die()] + [rpc.add(1, 1)]
            results = await asyncio.gather(*calls, return_exceptions=True)
            assert results[:50] == [i + 1 for i in range(50)]
            assert isinstance(results[50], RPCRuntimeError)
            assert "'die'" in str(results[50]) and "died" in str(results[50])
            assert results[51] == 2

    arun(main())


def test_killing_an_idle_worker_fails_nothing(tmp_path: Path) -> None:
    with ServerThread(build(max_workers=1)) as srv, RPC(srv.url) as rpc:
        for _ in range(3):
            worker = rpc.pid()
            os.kill(worker, signal.SIGKILL)
            wait_for(lambda w=worker: gone(w))
            # The server may not have noticed yet: the call must still succeed.
            assert rpc.add(2, 3) == 5
            assert rpc.pid() != worker


def test_killing_an_idle_worker_fails_none_of_several_calls_sent_to_it() -> None:
    """Calls sent together to a worker killed while idle (it never started any of them)
    all run on its replacement: the server tells a worker that died idle from one that
    died running the first of them by the call the worker marked started."""

    async def main(url: str) -> None:
        async with AsyncRPC(url) as rpc:
            for _ in range(3):
                worker = await rpc.pid()
                await asyncio.sleep(0.05)  # past its spin window: asleep, idle
                os.kill(worker, signal.SIGKILL)
                got = await asyncio.gather(*(rpc.add(i, 1) for i in range(8)))
                assert got == [i + 1 for i in range(8)]
                assert await rpc.pid() != worker

    with ServerThread(build(max_workers=1)) as srv:
        arun(main(srv.url))


@pytest.mark.parametrize(
    ("method", "exception"), [("exit_call", "SystemExit"), ("interrupt", "KeyboardInterrupt")]
)
def test_system_exit_in_a_worker_fails_the_call_only(
    pool_server: ServerThread, method: str, exception: str
) -> None:
    with RPC(pool_server.url) as rpc:
        args = [3] if method == "exit_call" else []
        with pytest.raises(RPCRuntimeError) as info:
            rpc.call(method, *args)
        assert info.value.exception == exception
        assert rpc.add(1, 2) == 3


def test_unpicklable_and_unreadable_results_fail_their_call(pool_server: ServerThread) -> None:
    with RPC(pool_server.url) as rpc:
        with pytest.raises(RPCRuntimeError, match="'unpicklable_result' cannot be sent back"):
            rpc.unpicklable_result()
        with pytest.raises(RPCRuntimeError, match="'unreadable_result' cannot be read back"):
            rpc.unreadable_result()
        assert rpc.add(1, 2) == 3


def nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


def depth_of(value: Any) -> int:
    depth = 0
    while value:
        value, depth = value[0], depth + 1
    return depth


def test_values_as_deep_as_messagepack_carries_cross_the_pool(pool_server: ServerThread) -> None:
    """1,000 levels both ways (MessagePack carries 1,022; every other executor delivers
    them). Before 3.13 the C pickler stops short: the argument failed on the server's
    side, the result on the worker's; such lists and maps now travel as MessagePack."""
    deep = nested(1000)
    with RPC(pool_server.url) as rpc:
        assert depth_of(rpc.echo(deep)) == 1000
        assert depth_of(rpc.echo([deep, deep])) == 1001  # (the first of two branches)
        assert sys.getrecursionlimit() == 1000 or sys.version_info >= (3, 12)
        assert rpc.add(1, 2) == 3


def test_a_result_deeper_than_the_allowance_fails_its_call_only(
    pool_server: ServerThread,
) -> None:
    """Deeper than MessagePack carries (so deeper than its fallback takes too): the call
    fails with the 405 any other executor's gets, in the same words (review 18: it was a
    404 RecursionError, or StackError at 1,024 levels), the worker's recursion limit is
    unchanged, and the pool goes on. (The server's side of it, for an argument: no
    client sends one that deep.)"""
    with RPC(pool_server.url) as rpc:
        limits = {rpc.recursion_limit() for _ in range(4)}
        for depth in (1_024, 1_100, 5_000):
            with pytest.raises(ResultLimitError) as pool:
                rpc.deep_result(depth)
            with pytest.raises(ResultLimitError) as thread:
                rpc.deep_result_on_a_thread(depth)
            assert "nests deeper than MessagePack's 1024 levels" in str(pool.value)
            fields = (pool.value.exception, pool.value.data, str(pool.value))
            assert fields == (
                thread.value.exception,
                thread.value.data,
                str(thread.value).replace("deep_result_on_a_thread(", "deep_result("),
            )
            kept = rpc.delay("deep_result", depth)
            with pytest.raises(ResultLimitError):  # (a kept value's 405 has its own words)
                rpc.system.getresult(kept)
        assert {rpc.recursion_limit() for _ in range(4)} == limits
        assert rpc.add(1, 2) == 3
    limit = sys.getrecursionlimit()

    async def main() -> None:
        from pymprpc.server.workers.framing import encode

        with pytest.raises(RecursionError):
            encode(1, 0, nested(limit + 5_000))
        assert sys.getrecursionlimit() == limit

    arun(main(), timeout=10)


def test_50_mib_argument_and_result(pool_server: ServerThread) -> None:
    """Correct, and without needless copies: client and server (one process here) hold
    about five copies of the value at the peak; pickling it in band, as
    ProcessPoolExecutor did, took eight."""
    data = os.urandom(1024) * (50 * 1024)

    async def main() -> None:
        async with AsyncRPC(pool_server.url, max_message_size=64 * 1024 * 1024) as rpc:
            assert await rpc.echo(b"warm-up") == b"warm-up"
            tracemalloc.start()
            try:
                start = tracemalloc.get_traced_memory()[0]
                assert await rpc.echo(data) == data
                peak = tracemalloc.get_traced_memory()[1] - start
            finally:
                tracemalloc.stop()
            assert peak < 6.5 * len(data), peak / len(data)
            assert await rpc.add(1, 1) == 2

    arun(main(), timeout=50)


def test_10000_calls_in_flight(pool_server: ServerThread) -> None:
    async def main() -> None:
        async with AsyncRPC(pool_server.url) as rpc:
            results = await asyncio.gather(*(rpc.add(i, i) for i in range(10_000)))
            assert results == [2 * i for i in range(10_000)]

    arun(main(), timeout=50)


def test_deadlines_reach_pool_calls_and_do_not_starve_others(
    pool_server: ServerThread, tmp_path: Path
) -> None:
    """Two calls past their deadline must not keep both workers busy."""
    latches = [Latch(tmp_path, "a"), Latch(tmp_path, "b")]

    async def main() -> None:
        async with AsyncRPC(pool_server.url) as rpc:
            late = [rpc.block.with_options(timeout=0.3)(*latch.args) for latch in latches]
            results = await asyncio.gather(*late, return_exceptions=True)
            assert all(isinstance(r, DeadlineExceeded) for r in results), results
            workers = [latch.wait_started() for latch in latches]
            assert await rpc.add(2, 2) == 4
            await asyncio.to_thread(wait_for, lambda: all(gone(w) for w in workers))

    arun(main())


def test_shutdown_lets_running_pool_calls_finish(tmp_path: Path) -> None:
    latch = Latch(tmp_path)

    async def main() -> None:
        server = build(max_workers=1, grace_period=20)
        await server.start()
        async with AsyncRPC(f"tcp://127.0.0.1:{server.port}") as rpc:
            running = asyncio.ensure_future(rpc.block(*latch.args))
            worker = await asyncio.to_thread(latch.wait_started)
            closing = asyncio.ensure_future(server.close())
            while not server.draining:
                await asyncio.sleep(0.01)
            assert not running.done()
            latch.release()
            assert await running == worker
            await closing
        # Its socket closed as it exited; the kernel releases it a moment later.
        await asyncio.to_thread(wait_for, lambda: gone(worker), 5)

    arun(main())


def test_shutdown_past_the_grace_period_stops_the_workers(tmp_path: Path) -> None:
    latch = Latch(tmp_path)

    async def main() -> None:
        server = build(max_workers=1, grace_period=0.2)
        await server.start()
        async with AsyncRPC(f"tcp://127.0.0.1:{server.port}", features=()) as rpc:
            running = asyncio.ensure_future(rpc.block(*latch.args))
            worker = await asyncio.to_thread(latch.wait_started)
            await server.close()
            with pytest.raises(RpcUnavailableException):
                await running
        # Its socket closed as it exited; the kernel releases it a moment later.
        await asyncio.to_thread(wait_for, lambda: gone(worker), 5)

    arun(main())


def test_pool_recovers_without_accumulating_processes(pool_server: ServerThread) -> None:
    def children() -> set[int]:
        found = set()
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat = Path(f"/proc/{entry}/stat").read_text()
                except OSError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[1]) == os.getpid():
                    found.add(int(entry))
        return found

    if not os.path.isdir("/proc/self"):
        pytest.skip("needs /proc")
    with RPC(pool_server.url) as rpc:
        assert rpc.add(1, 1) == 2
        before = children()
        for _ in range(5):
            with pytest.raises(RPCRuntimeError):
                rpc.die()
        assert rpc.add(1, 1) == 2
        assert children() == before  # the same zygote: no retired pool left behind


def test_user_supplied_executor() -> None:
    with ThreadPoolExecutor(2, thread_name_prefix="users-pool") as executor:
        server = Server(("127.0.0.1", 0), executor=executor)
        server.register_function()(thread_name)
        with ServerThread(server) as srv, RPC(srv.url) as rpc:
            assert rpc.thread_name().startswith("users-pool")


def run_script(source: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run `source` in a fresh interpreter that turns DeprecationWarning into errors."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(RUNTIME), *sys.path])}
    return subprocess.run(
        [sys.executable, "-W", "error::DeprecationWarning", "-c", textwrap.dedent(source), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


CLIENT_THREAD = """
    def call_then_stop(server, results):
        from pymprpc.client import RPC
        try:
            with RPC(f"tcp://127.0.0.1:{server.port}") as rpc:
                results.append(rpc.mul(6, 7))
                results.append(rpc.mul(6, 7))
                if "square" in rpc.system.listMethods():
                    results.append(rpc.square(7))
        finally:
            server.stop()
"""


def test_threads_started_before_the_pool_no_fork_warning(tmp_path: Path) -> None:
    """Threads exist when the server registers and starts: workers come from the
    forkserver, and Python 3.12+ has no fork-with-threads to warn about."""
    script = tmp_path / "threads_first.py"
    script.write_text(
        textwrap.dedent(
            """
            import threading
            from pymprpc.server import Server

            def mul(a, b):
                return a * b

            def square(a):
                return a * a
            """
        )
        + textwrap.dedent(CLIENT_THREAD)
        + textwrap.dedent(
            """
            if __name__ == "__main__":
                idle = threading.Event()
                threading.Thread(target=idle.wait, daemon=True).start()
                results = []
                with Server(("127.0.0.1", 0), max_workers=2) as server:
                    server.register_introspection_functions()
                    server.register_function()(mul)
                    client = threading.Thread(target=call_then_stop, args=(server, results))
                    import asyncio
                    async def main():
                        await server.start()
                        # Registered after start: sent to the running workers, pickled.
                        server.register_function()(square)
                        client.start()
                        await server.serve_forever()
                    asyncio.run(main())
                client.join()
                print(results)
            """
        )
    )
    done = subprocess.run(
        [sys.executable, "-W", "error::DeprecationWarning", str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(RUNTIME)},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[42, 42, 49]"
    assert "DeprecationWarning" not in done.stderr


def test_an_unguarded_main_module_under_the_forkserver_says_what_to_do(tmp_path: Path) -> None:
    """Threads run at registration (a library's, say), so the zygote comes from the
    forkserver, which imports the main module afresh; that module starts the server at its
    top level, without `if __name__ == "__main__":`. Before, the child failed with
    "address already in use" and the server with "could not start a worker process": now
    both say to add the guard."""
    script = tmp_path / "unguarded.py"
    script.write_text(
        textwrap.dedent(
            """
            import threading
            from pymprpc.server import Server

            threading.Thread(target=threading.Event().wait, daemon=True).start()
            with Server(("127.0.0.1", 0), max_workers=1) as server:
                @server.register_function()
                def mul(a, b):
                    return a * b

                server.run_forever()
            """
        )
    )
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(RUNTIME)},
    )
    assert done.returncode != 0
    guard = 'put the code that starts the server under `if __name__ == "__main__":`'
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("pymprpc.errors.RPCRuntimeError: could not start a worker"), last
    assert guard in last
    assert "RuntimeError: this process was started by multiprocessing" in done.stderr
    assert "Address already in use" not in done.stderr


def test_functions_defined_inside_with_server_reach_the_workers() -> None:
    """The usage page's pattern: nested functions and closures, registered in the main
    thread, then a client thread starts before the server: no warning either."""
    done = run_script(
        CLIENT_THREAD
        + """
    import threading
    from pymprpc.server import Server

    def main():
        factor = 6  # a closure: cannot be pickled, must be inherited
        results = []
        with Server(("127.0.0.1", 0), max_workers=2) as server:
            server.register_introspection_functions()
            @server.register_function()
            def mul(a, b):
                return a * b * factor // 6

            client = threading.Thread(target=call_then_stop, args=(server, results))
            client.start()
            server.run_forever()
        client.join()
        print(results)

    main()
    """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[42, 42]"
    assert "DeprecationWarning" not in done.stderr


def test_sigterm_to_the_process_group_lets_pool_calls_finish(tmp_path: Path) -> None:
    """What systemd and Ctrl-C do: every process of the group gets the signal. Workers
    ignore it; the server drains, the call finishes, then the workers are stopped."""
    latch = Latch(tmp_path)
    port_file = tmp_path / "port"
    script = f"""
    import os, sys
    sys.path.insert(0, {str(Path(__file__).parent)!r})
    from test_process_pool import build

    server = build(max_workers=1, grace_period=20)
    server.bind()
    with open({str(port_file)!r} + ".tmp", "w") as f:
        f.write(str(server.port))
    os.rename({str(port_file)!r} + ".tmp", {str(port_file)!r})
    server.run_forever()
    """
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(RUNTIME), *sys.path])}
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script)],
        env=env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(port_file.exists, 30)
        port = int(port_file.read_text())
        outcome: list[Any] = []

        def call() -> None:
            try:
                with RPC(f"tcp://127.0.0.1:{port}") as rpc:
                    outcome.append(rpc.block(*latch.args))
            except Exception as exc:  # noqa: BLE001 - reported by the assertion below
                outcome.append(exc)

        caller = threading.Thread(target=call)
        caller.start()
        worker = latch.wait_started()
        os.killpg(proc.pid, signal.SIGTERM)
        wait_for(lambda: _refused(port), 10)  # the server handled SIGTERM: it drains
        assert proc.poll() is None
        latch.release()
        caller.join(30)
        assert outcome == [worker]
        assert proc.wait(30) == 0
        wait_for(lambda: gone(worker), 10)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


def test_a_stuck_thread_call_does_not_keep_a_stopped_server_alive(tmp_path: Path) -> None:
    """A thread cannot be killed, but it must not hold the process open past shutdown."""
    port_file = tmp_path / "port"
    script = f"""
    import os, threading
    from pymprpc.server import Server

    server = Server(("127.0.0.1", 0), executor="thread", grace_period=0.2)

    @server.register_function()
    def stuck():
        threading.Event().wait(120)

    server.bind()
    with open({str(port_file)!r} + ".tmp", "w") as f:
        f.write(str(server.port))
    os.rename({str(port_file)!r} + ".tmp", {str(port_file)!r})
    server.run_forever()
    """
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(RUNTIME), *sys.path])}
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(port_file.exists, 30)
        port = int(port_file.read_text())
        rpc = RPC(f"tcp://127.0.0.1:{port}", features=()).connect()
        outcome: list[Any] = []

        def call() -> None:
            try:
                outcome.append(rpc.stuck())
            except Exception as exc:  # noqa: BLE001 - checked below
                outcome.append(exc)

        caller = threading.Thread(target=call)
        caller.start()
        wait_for(lambda: _thread_count(proc.pid) > 1, 20)  # the call runs in its thread
        proc.send_signal(signal.SIGTERM)
        # Bounded well below the 120 s the stuck call would hold a joined thread.
        assert proc.wait(30) == 0
        caller.join(20)
        assert len(outcome) == 1 and isinstance(outcome[0], Exception)
        rpc.close()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


def _thread_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def test_an_abandoned_thread_call_does_not_starve_the_others(tmp_path: Path) -> None:
    """One thread, held by one client's call past its deadline: another client's call
    still runs (the first client's own calls wait for its share, see `shares`)."""
    latch = Latch(tmp_path)
    server = Server(("127.0.0.1", 0), executor="thread", max_workers=1)
    server.register_function()(block)
    server.register_function()(add)
    with ServerThread(server) as srv, RPC(srv.url) as first, RPC(srv.url) as second:
        try:
            with pytest.raises(DeadlineExceeded):
                first.block.with_options(timeout=0.3)(*latch.args)
            latch.wait_started()  # it still holds the pool's only thread
            assert second.add.with_options(timeout=10)(2, 3) == 5
        finally:
            latch.release()


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads CPU time from /proc")
def test_a_worker_stops_spinning_when_its_calls_stop() -> None:
    # A 20 ms window, far longer than the default, so a worker that kept spinning after
    # its calls stopped would show: 1 s idle would cost it about 1 s of CPU.
    with ServerThread(build(max_workers=1, worker_spin=0.02)) as srv, RPC(srv.url) as rpc:
        worker = rpc.pid()
        for i in range(200):  # back to back: the worker spins between them
            assert rpc.add(i, 1) == i + 1
        before = _cpu_seconds(worker)
        time.sleep(1.0)
        idle = _cpu_seconds(worker) - before
        assert rpc.pid() == worker
    assert idle < 0.3, f"an idle worker used {idle:.2f} s of CPU in 1 s"


class _Denied(RestrictAccessError):
    """A user's own subclass of a coded error."""


def raise_coded(kind: str) -> None:
    if kind == "403":
        raise RestrictAccessError("no entry", data={"reason": "closed", "n": [1, 2]})
    if kind == "402":
        raise ParamError("bad param")
    if kind == "408":
        raise DeadlineExceeded("too slow")
    if kind == "subclass":
        raise _Denied("mine")
    if kind == "uncoded":
        raise ValidationError("x", "expected int, got str")  # no code: a 404 everywhere
    raise RPCRuntimeError("plain", data={"d": 1})


@pytest.mark.parametrize("kind", ["403", "402", "408", "subclass", "uncoded", "404"])
def test_a_coded_error_raised_on_the_pool_is_answered_as_on_a_thread(kind: str) -> None:
    """A plain function may answer with a code by raising a pymprpc.errors exception
    (README, Errors): on the process pool it was always a 404 naming the class (review
    20), and the DATA it carried was lost."""
    server = Server(("127.0.0.1", 0), max_workers=1)
    server.register_function("on_pool")(raise_coded)
    server.register_function("on_thread", executor="thread")(raise_coded)
    server.register_function()(add)
    with ServerThread(server) as srv, RPC(srv.url, timeout=20) as rpc:
        got = []
        for method in ("on_pool", "on_thread"):
            with pytest.raises(MPRPCError) as info:
                rpc.call(method, kind)
            error = info.value
            data = dict(error.data or {})
            assert data.pop("METHOD", method) == method
            text = str(error).replace(method, "M")  # (a 408's text names the call)
            got.append((type(error), error.code, error.exception, text, data))
        assert got[0] == got[1]
        expected = {"403": 403, "402": 402, "408": 408, "subclass": 403}.get(kind, 404)
        assert got[0][1] == expected
        assert rpc.add(1, 2) == 3


class _Hostile(RestrictAccessError):
    """A coded error whose attributes raise when read."""

    @property
    def code(self) -> Any:  # type: ignore[override]
        raise RuntimeError("no code for you")


def raise_hostile() -> None:
    raise _Hostile("hostile")


def test_a_coded_error_whose_attributes_raise_fails_its_call_only() -> None:
    server = Server(("127.0.0.1", 0), max_workers=1)
    server.register_function()(raise_hostile)
    server.register_function()(pid)
    with ServerThread(server) as srv, RPC(srv.url, timeout=20) as rpc:
        before = rpc.pid()
        with pytest.raises(RPCRuntimeError, match="hostile"):
            rpc.raise_hostile()
        assert rpc.pid() == before  # the same worker: it did not die
