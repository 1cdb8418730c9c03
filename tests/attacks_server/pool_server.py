"""A server for the process-pool contract attacks, run in a subprocess.

argv[1]: JSON {"server": Server options, "threads_first": bool, "banner": bool,
"server_executor": "user_thread" | null, "spawn_timeout": seconds a zygote may take to
answer, "threads_before_serving": bool}. Prints its port on stdout, serves until
SIGTERM, then prints the children still alive after the `with` block closed the server
(`CHILDREN_AFTER_CLOSE [...]`) and whether a user pool still works (`USERPOOL ok`).

Handlers are written as a user writes them: nested functions and closures inside the
`with Server(...)` block, like the original usage page."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(1, str(Path(__file__).parents[1]))  # tests/: procfs

import pool_handlers
from pool_handlers import mark, released
from procfs import children

from pymprpc import current_call
from pymprpc.server import Server
from pymprpc.server.workers import child as child_module
from pymprpc.server.workers import pool as pool_module

logging.basicConfig(
    level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s"
)


class MyBase(BaseException):
    pass


class ReqArgsError(Exception):
    """Pickles fine; unpickling calls __init__ with one argument and fails."""

    def __init__(self, a: int, b: int) -> None:
        super().__init__(f"needs two: {a} {b}")
        self.a, self.b = a, b


class LockedError(Exception):
    """Cannot be pickled: it holds a lock."""

    def __init__(self, msg: str) -> None:
        super().__init__(msg)
        self.lock = threading.Lock()


class BadStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("str() of this exception fails")


class Holder:
    """Registered with executor="process": each worker holds its own copy."""

    def __init__(self) -> None:
        self.bumps = 0

    def bump(self) -> list[int]:
        self.bumps += 1
        return [os.getpid(), self.bumps]


class ReduceRaises:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        raise RuntimeError("no pickling me")


def _boom() -> None:
    raise RuntimeError("unpickling fails in the parent")


class UnpickleFails:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (_boom, ())


def _exit_at_once(ctl: socket.socket, targets: dict[str, object]) -> None:
    """A zygote that exits before answering anything (see break_zygotes)."""


def main() -> None:
    cfg = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    opts = dict(cfg.get("server", {}))
    opts.setdefault("grace_period", 2)
    if "spawn_timeout" in cfg:  # how long a zygote may take to answer (seconds)
        pool_module.SPAWN_TIMEOUT = cfg["spawn_timeout"]
    if cfg.get("banner"):
        print("BANNER-UNFLUSHED")  # stays in the stdout buffer (a pipe) at fork time
    if cfg.get("threads_first"):
        stop = threading.Event()
        threading.Thread(target=stop.wait, daemon=True, name="early").start()
    user_thread = concurrent.futures.ThreadPoolExecutor(4)
    user_proc = concurrent.futures.ProcessPoolExecutor(2)
    if cfg.get("server_executor") == "user_thread":
        opts["executor"] = user_thread
    secret = "s3cret"
    settings: dict[str, object] = {}
    # a socket the application opened before the server (a statsd/syslog-style client)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if cfg.get("udp_port"):
        udp.connect(("127.0.0.1", cfg["udp_port"]))

    with Server(("127.0.0.1", 0), **opts) as server:
        reg = server.register_function

        if not cfg.get("only_module"):

            @reg()
            def add(a, b):
                return a + b

            after_first = "set after the first registration"

            @reg()
            def late():
                return [secret, after_first]

            @reg()
            def pid():
                return os.getpid()

            @reg()
            def block(tmp, tag):
                mark(tmp, tag)
                while not released(tmp, tag):
                    time.sleep(0.005)
                return tag

            @reg()
            def forever(tmp, tag):
                mark(tmp, tag)
                while True:
                    time.sleep(0.05)

            @reg()
            def osexit():
                os._exit(3)

            @reg()
            def segv():
                ctypes.string_at(0)

            @reg()
            def sysexit():
                sys.exit(4)

            @reg()
            def kbint():
                raise KeyboardInterrupt

            @reg()
            def mybase():
                raise MyBase("custom base")

            @reg()
            def cancelled():
                raise asyncio.CancelledError

            @reg()
            def genexit():
                raise GeneratorExit

            @reg()
            def ret_lambda():
                return lambda: 1

            @reg()
            def ret_socket():
                return socket.socket()

            @reg()
            def ret_gen():
                return (i for i in range(3))

            @reg()
            def ret_reduce_raises():
                return ReduceRaises()

            @reg()
            def ret_unpickle_fails():
                return UnpickleFails()

            @reg()
            def raise_locked():
                raise LockedError("locked inside")

            @reg()
            def raise_reqargs():
                raise ReqArgsError(1, 2)

            @reg()
            def raise_value():
                raise ValueError("plain value error")

            @reg()
            def big(n):
                return b"x" * n

            @reg()
            def size(b):
                return len(b)

            @reg()
            def echo(x):
                return x

            counter = {"n": 0}

            @reg()
            def count():
                counter["n"] += 1
                return [os.getpid(), counter["n"]]

            @reg(executor="thread")
            def server_count():
                return counter["n"]

            @reg(executor="thread")
            def server_pid():
                return os.getpid()

            reg("lam")(lambda x: x * 2)

            @reg()
            def ctx():
                c = current_call()
                return {
                    "id": c.id,
                    "method": c.method,
                    "peer": list(c.peer) if c.peer else None,
                    "user": c.user,
                    "metadata": dict(c.metadata),
                    "remaining": c.time_remaining(),
                    "pid": os.getpid(),
                }

            @reg()
            def ctx_meta(v):
                current_call().set_response_metadata("from-worker", v)
                return v

            @reg()
            def printer(text):
                # One write per line (a pipe keeps writes under PIPE_BUF whole): print()
                # may write the text and its newline apart, and two workers writing at
                # once would interleave them.
                sys.stdout.flush()
                os.write(sys.stdout.fileno(), f"OUT:{text}\n".encode())
                sys.stderr.flush()
                os.write(sys.stderr.fileno(), f"ERR:{text}\n".encode())
                return len(text)

            @reg()
            def forker():
                child = os.fork()
                if child == 0:
                    os._exit(7)
                _, status = os.waitpid(child, 0)
                return os.waitstatus_to_exitcode(status)

            @reg()
            def spawner():
                out = subprocess.run(
                    [sys.executable, "-c", "print(6 * 7)"], capture_output=True, timeout=20
                )
                return [out.returncode, out.stdout.decode().strip()]

            @reg()
            def threader():
                threading.Thread(target=threading.Event().wait, daemon=True).start()
                return threading.active_count()

            @reg()
            def closefds():
                os.closerange(3, 4096)
                return "closed"

            @reg()
            def scribble():
                for fd in os.listdir("/proc/self/fd"):
                    with contextlib.suppress(OSError):
                        if os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                            os.write(int(fd), b"\xff\x00garbage" * 64)
                return "scribbled"

            @reg()
            def raise_badstr():
                raise BadStr("never shown")

            @reg()
            def raise_huge(n):
                raise ValueError("h" * n)

            @reg()
            def ret_set():
                return {1, 2}

            @reg()
            def big_marked(tmp, tag, n):
                mark(tmp, tag)
                return b"q" * n

            @reg()
            def spin(ms):
                end = time.perf_counter() + ms / 1000
                while time.perf_counter() < end:
                    pass
                return ms

            @reg()
            def udp_send(text):
                udp.send(text.encode())
                return True

            @reg()
            def fork_linger(tmp, tag):
                child = os.fork()
                if child == 0:  # holds every fd of the worker, its channel too
                    time.sleep(60)
                    os._exit(0)
                Path(tmp, f"{tag}.child").write_text(str(child))
                mark(tmp, tag)
                while not released(tmp, tag):
                    time.sleep(0.005)
                return tag

            @reg()
            def terminate_child():
                p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
                p.terminate()
                try:
                    return p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
                    return "the child ignored SIGTERM"

            @reg()
            def ret_bytearray(n):
                return bytearray(b"b" * n)

            @reg()
            def ret_memoryview():
                return memoryview(b"mv")

            @reg()
            async def register_closure_swap(k):
                def swapped():
                    return k

                server.register_function("swapped", replace=True)(swapped)
                return True

            @reg()
            async def register_module_swap(which):
                f = pool_handlers.mod_one if which == "one" else pool_handlers.mod_two
                server.register_function("mod_swapped", replace=True)(f)
                return True

            if not cfg.get("no_process"):  # the one method that asks for the pool
                holder = Holder()
                server.register_instance(holder, executor="process")

            @reg()
            async def cadd(a, b):
                await asyncio.sleep(0)
                return a + b

            @reg()
            async def break_zygotes(broken):
                # Zygotes forked from now on exit at once (broken=True), or work again.
                pool_module.run_zygote = _exit_at_once if broken else child_module.run_zygote
                return True

            @reg()
            async def register_closure_late(k):
                def closure_late(x):
                    return x * k

                server.register_function("closure_late")(closure_late)
                return True

        @reg()
        async def register_module_late():
            server.register_function("mod_late")(pool_handlers.mod_add)
            return True

        reg("mod_add")(pool_handlers.mod_add)
        reg("mod_block")(pool_handlers.mod_block)
        reg("mod_pid")(pool_handlers.mod_pid)
        reg("mod_count")(pool_handlers.mod_count)

        if not cfg.get("only_module"):
            # user-supplied executors, per function
            @reg(executor=user_thread)
            def ut_ctx():
                c = current_call()
                return [c.method, threading.current_thread().name != "MainThread"]

            @reg(executor=user_thread)
            def ut_pid():
                return os.getpid()

            reg("up_add", executor=user_proc)(pool_handlers.mod_add)
            reg("up_pid", executor=user_proc)(pool_handlers.mod_pid)

            @reg(executor=user_proc)
            def up_nested():
                return 1

            @reg(executor=user_proc)
            def up_osexit():
                os._exit(5)

        @reg()
        def get_settings():
            return dict(settings)

        # configuration loaded after registering, before serving (as apps do)
        if cfg.get("threads_before_serving"):  # after registering, before serving
            threading.Thread(target=threading.Event().wait, daemon=True, name="late").start()
        settings["loaded"] = True
        print(server.port, flush=True)
        server.run_forever()

    kids = children(os.getpid())
    print("CHILDREN_AFTER_CLOSE " + json.dumps(kids), flush=True)
    with contextlib.suppress(Exception):
        if user_thread.submit(lambda: 41 + 1).result(5) == 42:
            print("USERPOOL ok", flush=True)
    user_thread.shutdown(wait=False)
    user_proc.shutdown(wait=False, cancel_futures=True)


if __name__ == "__main__":
    main()
