"""A hostile-test server run in a subprocess: prints its port, serves until SIGTERM.

argv[1]: JSON of Server options. Methods of every nasty kind are registered."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import faulthandler
import json
import logging
import os
import signal
import sys
import threading
import time

from pymprpc.server import Server

logging.basicConfig(
    level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s"
)


class MyBase(BaseException):
    pass


class Counter:
    def __init__(self) -> None:
        self.n = 0
        self.lock = threading.Lock()
        self.pids: set[int] = set()

    def incr(self) -> int:
        with self.lock:
            self.n += 1
            return self.n

    def value(self) -> int:
        return self.n

    def pid(self) -> int:
        return os.getpid()


def main() -> None:
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    opts = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    if "auth" in opts and opts["auth"] is not None:
        opts["auth"] = [tuple(p) for p in opts["auth"]]
    server = Server(("127.0.0.1", 0), **opts)
    server.register_introspection_functions()
    reg = server.register_function

    @reg(executor="thread")
    def echo(x):
        return x

    @reg(executor="inline")
    def big(n):
        return b"x" * n

    @reg(executor="inline")
    def bigstr(n):
        return "y" * n

    @reg()
    def padd(a, b):
        return a + b

    @reg(executor="process")
    def p_osexit():
        os._exit(1)

    @reg(executor="process")
    def p_sysexit():
        sys.exit(4)

    @reg(executor="process")
    def p_kbint():
        raise KeyboardInterrupt

    @reg(executor="process")
    def p_unpicklable():
        return threading.Lock()

    @reg(executor="process")
    def p_sleep(s):
        time.sleep(min(float(s), 10))
        return s

    @reg(executor="thread")
    def sysexit():
        sys.exit(3)

    @reg(executor="inline")
    def sysexit_inline():
        sys.exit(3)

    @reg(executor="thread")
    def kbint():
        raise KeyboardInterrupt

    @reg(executor="inline")
    def kbint_inline():
        raise KeyboardInterrupt

    @reg()
    async def akbint():
        raise KeyboardInterrupt

    @reg()
    async def asysexit():
        raise SystemExit(1)

    @reg()
    async def acancel():
        raise asyncio.CancelledError

    @reg(executor="thread")
    def tcancel():
        raise asyncio.CancelledError

    @reg()
    async def abase():
        raise MyBase("custom base")

    @reg(executor="thread")
    def tbase():
        raise MyBase("custom base")

    @reg()
    async def agenexit():
        raise GeneratorExit

    @reg(executor="inline")
    def ret_set():
        return {1, 2}

    @reg(executor="inline")
    def ret_dt():
        return datetime.datetime.now()

    @reg(executor="inline")
    def ret_obj():
        return object()

    @reg(executor="inline")
    def ret_rec():
        a: list = []
        a.append(a)
        return a

    @reg(executor="inline")
    def ret_bigint():
        return 2**70

    @reg(executor="inline")
    def echo_sep():
        return "a##PRO-" + "END##b"

    @reg(executor="inline")
    def ret_nan():
        return float("nan")

    @reg(executor="inline")
    def ret_inf():
        return float("inf")

    @reg(executor="inline")
    def ret_bytes():
        return b"\x00\x01"

    @reg(executor="inline")
    def ret_intkey():
        return {1: "a", (1, 2): "b"}

    @reg()
    async def never():
        await asyncio.Event().wait()

    @reg()
    async def never_shielded():
        while True:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(100)

    @reg(executor="thread")
    def tsleep(s):
        time.sleep(min(float(s), 10))
        return s

    @reg()
    async def asleep(s):
        await asyncio.sleep(s)
        return s

    @reg()
    async def count(n):
        for i in range(n):
            yield i

    @reg()
    async def agen_raise(n):
        for i in range(n):
            yield i
        raise ValueError("mid-stream")

    @reg()
    async def agen_sysexit(n):
        for i in range(n):
            yield i
        raise SystemExit(2)

    @reg()
    async def agen_ignore_exit():
        i = 0
        while True:
            try:
                yield i
                i += 1
                await asyncio.sleep(0.001)
            except GeneratorExit:
                # misbehave: keep yielding
                continue

    @reg()
    async def agen_bad_item(n):
        yield 1
        yield {1, 2}
        yield 3

    @reg()
    async def bigstream():
        while True:
            yield "z" * 100_000
            await asyncio.sleep(0)

    @reg()
    async def aendless():
        i = 0
        while True:
            yield i
            i += 1
            await asyncio.sleep(0.0005)

    counter = Counter()
    server.register_instance(counter)
    c2 = Counter()
    reg("c2incr")(c2.incr)
    reg("c2value")(c2.value)
    reg("c2pid")(c2.pid)

    server.bind()
    print(server.port, flush=True)
    server.run_forever()


if __name__ == "__main__":
    main()
