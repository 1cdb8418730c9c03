"""A server registering every kind of callable, run in a subprocess with
`-W error::RuntimeWarning` so that a coroutine never awaited shows in its stderr.

argv[1]: JSON {"executor": null | "thread" | "inline" | "process" | "user_thread" |
"user_process"}: the `Server(executor=...)`. With null (the default server) every
`where`-family handler is also registered once per executor as `NAME@EXECUTOR`.
Prints its port on stdout, serves until SIGTERM. Handlers that are not in
callables_handlers are defined inside the `with Server(...)` block, like the usage page."""

from __future__ import annotations

import concurrent.futures
import functools
import json
import logging
import operator
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import callables_handlers as h

from pymprpc.server import Server

logging.basicConfig(
    level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s"
)

if __name__ == "__main__":
    opts = json.loads(sys.argv[1])
    user_thread = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="userpool")
    user_process = concurrent.futures.ProcessPoolExecutor(2, initializer=h.mark_user_pool)
    pools: dict[str, Any] = {"user_thread": user_thread, "user_process": user_process}
    kind = opts["executor"]
    executor = pools.get(kind, kind)
    with Server(("127.0.0.1", 0), executor=executor, grace_period=2) as server:
        server.register_introspection_functions()

        def inner_where(*args: Any, **kwargs: Any) -> dict[str, Any]:
            """Defined inside the with block."""
            return h.here(*args, **kwargs)

        svc = h.Service()
        counter = h.Counter()
        obj = h.SyncCallable()
        store: dict[str, Any] = {}

        # every callable whose answer is where it ran
        where_family: dict[str, Any] = {
            "fn": h.where,
            "partial": functools.partial(h.where, "p"),
            "partial2": functools.partial(functools.partial(h.where, "p1"), "p2"),
            "wraps": h.w_where,
            "lambda": lambda *a, **k: h.here(*a, **k),
            "inner": inner_where,
            "method": svc.where,
            "static": h.Service.swhere,
            "classmethod": h.Service.cwhere,
            "callable": obj,
            "partial_method": functools.partial(svc.where, "pm"),
            "partial_callable": functools.partial(h.SyncCallable(), "pc"),
        }
        for name, func in where_family.items():
            server.register_function(f"w.{name}")(func)
        server.register_function("ctx")(h.whoami)
        if kind is None:
            for ex_name, ex in [
                ("thread", "thread"),
                ("inline", "inline"),
                ("process", "process"),
                ("user_thread", user_thread),
                ("user_process", user_process),
            ]:
                for name, func in where_family.items():
                    server.register_function(f"w.{name}@{ex_name}", executor=ex)(func)
                server.register_function(f"ctx@{ex_name}", executor=ex)(h.whoami)
                server.register_function(f"ctx.partial@{ex_name}", executor=ex)(
                    functools.partial(h.whoami, 1)
                )

        # coroutines and streams: always on the loop, whatever the executor
        loop_family: dict[str, Any] = {
            "async": h.awhere,
            "partial_async": functools.partial(h.awhere, "pa"),
            "async_callable": h.AsyncCallable(),
            "partial_async_callable": functools.partial(h.AsyncCallable(), 1),
            "async_wrapper": h.as_where,
        }
        for name, func in loop_family.items():
            server.register_function(f"l.{name}")(func)

        if kind is None:
            for ex_name, ex in [
                ("thread", "thread"),
                ("inline", "inline"),
                ("process", "process"),
                ("user_thread", user_thread),
                ("user_process", user_process),
            ]:
                for name, func in loop_family.items():
                    server.register_function(f"l.{name}@{ex_name}", executor=ex)(func)

        server.register_function("b.hold", executor="thread")(h.hold)
        server.register_function("b.started", executor="inline")(h.started)
        server.register_function("b.release", executor="inline")(h.release)
        server.register_function("s.sync_wrapped")(h.sg_agen)
        server.register_function("s.sync_wrapped@thread", executor="thread")(h.sg_agen)

        @server.register_function()
        async def loopinfo() -> dict[str, Any]:
            return h.here()

        # arithmetic: results and argument binding
        server.register_function("fn.add")(h.add)
        server.register_function("fn.kwonly")(h.kwonly)
        server.register_function("fn.posonly")(h.posonly)
        server.register_function("fn.varargs")(h.varargs)
        server.register_function("fn.strann")(h.strann)
        server.register_function("fn.aadd")(h.aadd)
        server.register_function("fn.sa_add")(h.sa_add)
        server.register_function("fn.sa_add@thread", executor="thread")(h.sa_add)
        server.register_function("fn.sa_add@inline", executor="inline")(h.sa_add)
        server.register_function("fn.sa_add@user_thread", executor=user_thread)(h.sa_add)
        server.register_function("fn.sa_add@user_process", executor=user_process)(h.sa_add)
        server.register_function("fn.u_add")(h.u_add)
        server.register_function("fn.wgen")(h.logged(h.sync_gen))
        server.register_function("fn.partial_add")(functools.partial(h.add, 1))
        server.register_function("fn.partial_kw_add")(functools.partial(h.add, b=100))
        server.register_function("fn.partial_aadd")(functools.partial(h.aadd, b=5))
        server.register_function("fn.partial2_aadd")(
            functools.partial(functools.partial(h.aadd, 1), b=2)
        )
        server.register_function("fn.lambda_mul")(lambda a, b=3: a * b)
        server.register_function("fn.len")(len)
        server.register_function("fn.max")(max)
        server.register_function("fn.opadd")(operator.add)
        server.register_function("fn.partial_opadd")(functools.partial(operator.add, 100))
        server.register_function("fn.dict")(dict)
        server.register_function("fn.point")(h.Point)
        server.register_function("fn.count")([1, 2, 2, 3, 2].count)

        # streams
        server.register_function("s.agen")(h.agen)
        server.register_function("s.partial")(functools.partial(h.agen, start=100))
        server.register_function("s.partial2")(
            functools.partial(functools.partial(h.agen), start=7)
        )
        server.register_function("s.callable")(h.StreamCallable())
        server.register_function("s.partial_callable")(functools.partial(h.StreamCallable(), 2))

        @server.register_function("s.inner")
        async def inner_stream(n: int) -> Any:
            for i in range(n):
                yield -i

        # state
        server.register_function("st.bump")(counter.bump)
        server.register_function("st.bump@process", executor="process")(counter.bump)
        server.register_function("st.value", executor="inline")(lambda: counter.n)
        server.register_function("st.obj")(obj)
        server.register_function("st.update")(store.update)
        server.register_function("st.get")(store.get)
        server.register_instance(svc)

        print(server.port, flush=True)
        server.run_forever()
    user_thread.shutdown()
    user_process.shutdown()
