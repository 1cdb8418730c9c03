"""A server with every pool attack function registered, on asyncio or uvloop, with or
without a pass-through interceptor (the general path), and helpers to compare replies."""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
import re
from collections.abc import AsyncIterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

from attacks_server.fastlane_kit import ALL, Wire, code, mid, passthrough

from pymprpc.schema import INT, STR, Param, Signature
from pymprpc.server import Server

from . import pool_funcs as f

TYPED_ADD = Signature((Param("a", INT), Param("b", INT)), INT, name="typed_add")
TYPED_LEN = Signature((Param("s", STR),), INT, name="typed_len")
TYPED_WRONG = Signature((Param("a", INT),), STR, name="typed_wrong")
TYPED_ANY_ARG = Signature((Param("a", INT),), INT, name="typed_coro")

PLAIN = (
    f.add,
    f.star,
    f.head_star,
    f.kwonly,
    f.kwonly_required,
    f.posonly,
    f.varkw,
    f.noargs,
    f.ctx_fields,
    f.ctx_twice,
    f.ctx_from_thread,
    f.set_meta,
    f.set_meta_then_raise,
    f.set_meta_many,
    f.returns_coro,
    f.returns_gen,
    f.returns_lock,
    f.returns_noload,
    f.returns_set,
    f.returns_bigint,
    f.returns_none,
    f.returns_bytes,
    f.arg_info,
    f.raises,
    f.die,
    f.kill_self,
    f.where,
    f.pid,
    f.block,
    f.hold_fds,
    f.deep,
    f.bad_meta,
    f.fork_and_die,
)


class PCounter:
    """Methods of an instance registered with executor="process"."""

    def p_bump(self, by: int = 1) -> Any:
        self.n += by
        return self.n

    def p_where(self) -> Any:
        return f.where()

    def p_boom(self) -> Any:
        raise f.Boom("p boom")

    def p_ctx(self) -> Any:
        return f.ctx_fields()

    @f.logged
    def p_decorated(self, x: Any, y: Any = 0) -> Any:
        return ["decorated", x, y]

    n = 0


def build(
    interceptors: tuple[Any, ...],
    pools: contextlib.ExitStack,
    *,
    default: Any = None,
    max_workers: int = 2,
    **options: Any,
) -> Server:
    options.setdefault("grace_period", 1)
    server = Server(
        ("127.0.0.1", 0),
        max_workers=max_workers,
        interceptors=list(interceptors),
        executor=default,
        **options,
    )
    reg = server.register_function
    for func in PLAIN:
        reg()(func)
    reg(name="deco_logged")(f.deco_logged)
    reg(name="deco_unit")(f.deco_unit)
    reg(name="deco_stacked")(f.deco_stacked)
    reg(name="deco_fixed")(f.deco_fixed)
    reg(name="old_add", deprecated=True)(f.add)
    reg(schema=TYPED_ADD)(f.typed_add)
    reg(schema=TYPED_LEN)(f.typed_len)
    reg(name="typed_wrong", schema=TYPED_WRONG)(f.typed_echo)
    reg(name="typed_coro", schema=TYPED_ANY_ARG)(f.typed_returns_coro)
    reg(name="p_add", executor="process")(f.add)
    reg(name="p_where2", executor="process")(f.where)
    reg(name="p_coro", executor="process")(f.returns_coro)
    for kind in ("thread", "inline"):
        k = kind[0]
        reg(name=f"{k}_add", executor=kind)(f.add)
        reg(name=f"{k}_where", executor=kind)(f.where)
        reg(name=f"{k}_ctx", executor=kind)(f.ctx_fields)
        reg(name=f"{k}_coro", executor=kind)(f.returns_coro)
        reg(name=f"{k}_gen", executor=kind)(f.returns_gen)
        reg(name=f"{k}_raises", executor=kind)(f.raises)
        reg(name=f"{k}_meta", executor=kind)(f.set_meta)
        reg(name=f"{k}_bad_meta", executor=kind)(f.bad_meta)
    app_threads = pools.enter_context(ThreadPoolExecutor(2, thread_name_prefix="app"))
    reg(name="a_where", executor=app_threads)(f.where)
    reg(name="a_ctx", executor=app_threads)(f.ctx_fields)
    reg(name="a_coro", executor=app_threads)(f.returns_coro)
    reg(name="a_add", executor=app_threads)(f.add)
    app_procs = pools.enter_context(
        ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("forkserver"))
    )
    reg(name="x_where", executor=app_procs)(f.where)
    reg(name="x_coro", executor=app_procs)(f.returns_coro)
    reg(name="x_add", executor=app_procs)(f.add)
    server.register_instance(f.Counter())
    server.register_instance(PCounter(), executor="process")
    reg(name="cobj")(f.CallableObj())
    reg(name="cobj_p", executor="process")(f.CallableObj())
    reg(name="acobj")(f.AsyncCallObj())
    reg(name="part_p", executor="process")(functools.partial(f.add, 10))
    reg(name="bm_p", executor="process")(f.Counter().bump)
    return server


@contextlib.asynccontextmanager
async def serving(general: bool, **options: Any) -> AsyncIterator[tuple[Server, int]]:
    with contextlib.ExitStack() as pools:
        server = build((passthrough,) if general else (), pools, **options)
        await server.start()
        try:
            yield server, server.address[1]
        finally:
            await server.close()


_PID = re.compile(r"\b(pid|process) \d+")


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return _PID.sub(r"\1 N", value)
    return value


def _key(item: tuple[Any, Any]) -> str:
    return str(item[0])


def outcome(m: dict[str, Any]) -> tuple[Any, ...]:
    """What a reply says, without what may differ between two runs (a traceback's
    frames, a worker's pid, the peer's port)."""
    body = dict(m.get("MESSAGE") or {})
    body.pop("ID", None)
    body.pop("TRACEBACK", None)
    if isinstance(body.get("DATA"), dict):
        body["DATA"] = dict(body["DATA"])
    body = {k: _scrub(v) for k, v in body.items()}
    top = {k: v for k, v in m.items() if k not in ("MESSAGE", "MPRPC")}
    return (code(m), sorted(top.items(), key=_key), sorted(body.items(), key=_key))


def by_id(replies: list[dict[str, Any]]) -> dict[str, tuple[Any, ...]]:
    out: dict[str, tuple[Any, ...]] = {}
    for m in replies:
        key = str(mid(m)).lstrip("-")
        assert key not in out, ("two replies for one ID", key, m)
        out[key] = outcome(m)
    return out


def diff(fast: dict[str, Any], general: dict[str, Any]) -> dict[str, Any]:
    keys = sorted(set(fast) | set(general))
    return {k: (fast.get(k), general.get(k)) for k in keys if fast.get(k) != general.get(k)}


async def open_wire(port: int, features: list[str] | None = ALL) -> Wire:
    """`Wire.open`, with a reader that takes large replies under separator framing."""
    return await Wire.open(port, features, limit=64 * 1024 * 1024)
