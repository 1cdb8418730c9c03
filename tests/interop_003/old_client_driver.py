# ruff: noqa: UP031, UP041, BLE001, B904, N806, SIM105
# (Runs on Python 3.6 under the old code: no modern spellings here; asyncio.TimeoutError is
# not the builtin TimeoutError before 3.11.)
"""Drive the REAL pymprpc 0.0.3 clients (run by the old code's own venv, Python 3.6+).

    python old_client_driver.py SCENARIO '{"url": "tcp://admin:admin@127.0.0.1:PORT", ...}'

prints one JSON line on stdout: {"scenario", "python", "msgpack", "steps": [[name, outcome],
...], "hung": step name or null}. An outcome is {"value": ...} or {"raised": class name,
"module", "message", "code"}; bytes come back as {"bytes": hex}. Everything 0.0.3 prints
(it prints every query) goes to stderr. A step that does not finish within "hang" seconds
(default 8) is reported as hung and ends the scenario: 0.0.3 clients have no timeouts.

The old code is used as its users used it; nothing of it is patched.
"""

import asyncio
import json
import math
import signal
import sys
import time
import traceback
import warnings

OUT = sys.stdout
sys.stdout = sys.stderr  # 0.0.3 prints every query it sends

import msgpack  # noqa: E402


class Hung(BaseException):
    pass


def enc(value):
    """A JSON-able picture of a value (keeps bytes apart from str)."""
    if isinstance(value, bytes):
        return {"bytes": value.hex()}
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return {"float": repr(value)}
    if isinstance(value, (list, tuple)):
        return [enc(v) for v in value]
    if isinstance(value, dict):
        return {str(k): enc(v) for k, v in value.items()}
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return {"repr": repr(value)}


def failure(exc):
    return {
        "raised": type(exc).__name__,
        "module": type(exc).__module__,
        "message": str(exc),
        "code": getattr(exc, "status_code", None),
        "where": traceback.format_exception(type(exc), exc, exc.__traceback__)[-2].strip()[:300],
    }


class Recorder:
    def __init__(self, hang):
        self.steps = []
        self.hang = hang

    def _alarm(self, *_):
        raise Hung()

    def run(self, name, fn, *args, **kwargs):
        """Run fn(*args, **kwargs) as a step (sync); a hang ends the scenario."""
        signal.signal(signal.SIGALRM, self._alarm)
        signal.setitimer(signal.ITIMER_REAL, self.hang)
        try:
            with warnings.catch_warnings(record=True) as seen:
                warnings.simplefilter("always")
                value = fn(*args, **kwargs)
                if hasattr(value, "__next__"):  # a stream: read it to the end
                    value = list(value)
        except Hung:
            self.steps.append([name, {"hung": True}])
            raise
        except Exception as exc:
            self.steps.append([name, failure(exc)])
            return None
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        outcome = {"value": enc(value)}
        warned = [str(w.message) for w in seen if w.category is not DeprecationWarning]
        if warned:
            outcome["warnings"] = warned
        self.steps.append([name, outcome])
        return value

    async def arun(self, name, aw):
        """Await aw as a step (asyncio); a hang ends the scenario."""
        try:
            with warnings.catch_warnings(record=True) as seen:
                warnings.simplefilter("always")
                value = await asyncio.wait_for(aw, self.hang)
                if hasattr(value, "__anext__"):  # a stream: read it to the end
                    items = []

                    async def read():
                        async for item in value:
                            items.append(item)

                    try:
                        await asyncio.wait_for(read(), self.hang)
                    except asyncio.TimeoutError:
                        self.steps.append([name, {"hung": True, "items": enc(items)}])
                        raise Hung()
                    value = items
        except asyncio.TimeoutError:
            self.steps.append([name, {"hung": True}])
            raise Hung()
        except Hung:
            raise
        except Exception as exc:
            self.steps.append([name, failure(exc)])
            return None
        outcome = {"value": enc(value)}
        warned = [str(w.message) for w in seen if w.category is not DeprecationWarning]
        if warned:
            outcome["warnings"] = warned
        self.steps.append([name, outcome])
        return value


# --------------------------- the blocking client (pymprpc.client.RPC) -------------------


def sync_client(p):
    from pymprpc.client.sync import RPC

    options = {"debug": p.get("debug", True)}
    if p.get("compreser"):
        options["compreser"] = p["compreser"]
    return RPC(addr=p["url"], **options)


def s_usage_page(r, p):
    """The usage page's blocking example, line by line (its sleep and last call aside)."""
    rpc = sync_client(p)
    r.run("connect", lambda: rpc.connect() or rpc.remote_info)
    r.run("listMethods", lambda: rpc.system.listMethods())
    r.run("methodSignature", lambda: rpc.system.methodSignature("testclassmethod"))
    r.run("methodHelp", lambda: rpc.system.methodHelp("testfunc"))
    r.run("lenConnections", lambda: rpc.system.lenConnections())
    r.run("lenUndoneTasks", lambda: rpc.system.lenUndoneTasks())
    r.run("testclassmethod", lambda: rpc.testclassmethod(1, 2))
    r.run("testclasscoro", lambda: rpc.testclasscoro(2, 3))
    r.run("testcoro", lambda: rpc.testcoro(5, 6))
    r.run("testfunc", lambda: rpc.testfunc(5, 4))
    r.run("testcorogen", lambda: rpc.testcorogen(1, 2))
    r.run("testclasscorogen", lambda: rpc.testclasscorogen(1, 2))
    r.run("close", rpc.close)


def s_args(r, p):
    with sync_client(p) as rpc:
        r.run("kw(1)", lambda: rpc.kw(1))
        r.run("kw(1, b=5)", lambda: rpc.kw(1, b=5))
        r.run("kw(a=1, c=9)", lambda: rpc.kw(a=1, c=9))
        r.run("kw(1, 2, c=4)", lambda: rpc.kw(1, 2, c=4))
        r.run("testfunc(a=1, b=2)", lambda: rpc.testfunc(a=1, b=2))


VALUES = {
    "unicode": "héllo wörld ✓ 中文 😀",
    "empty str": "",
    "nested": {"a": [1, {"b": [None, True, False, {"c": {"d": ["deep"]}}]}], "e": {}},
    "list": [1, "two", 3.5, None, [], {}],
    "None": None,
    "True": True,
    "False": False,
    "float": 0.1,
    "negative float": -1.5e300,
    "int64 max": 2**63 - 1,
    "int64 min": -(2**63),
    "uint64 max": 2**64 - 1,
    "2**70": 2**70,
    "0": 0,
    "17": 17,
    "-1": -1,
    "255": 255,
    "16 items": list(range(1, 17)),
    "str of 40": "abcdefghij" * 4,
}


def s_values(r, p):
    """echo(v) for every value in p["values"] (names of VALUES), one step each."""
    with sync_client(p) as rpc:
        for name in p["values"]:
            r.run(name, lambda name=name: rpc.echo(VALUES[name]))
        r.run("after", lambda: rpc.testcoro(1, 2))


def s_nan(r, p):
    with sync_client(p) as rpc:
        r.run("echo(nan)", lambda: rpc.echo(float("nan")))
        r.run("echo(inf)", lambda: rpc.echo(float("inf")))
        r.run("after", lambda: rpc.testcoro(1, 2))


def s_bytes(r, p):
    """str vs bytes, in MessagePack mode."""
    with sync_client(p) as rpc:
        r.run("typeof('abc')", lambda: rpc.typeof("abc"))
        r.run("typeof(b'abc')", lambda: rpc.typeof(b"abc"))
        r.run("make_bytes('abc')", lambda: rpc.make_bytes("abc"))
        r.run("echo(b'\\xfe\\x80')", lambda: rpc.echo(b"\xfe\x80"))
        r.run("after", lambda: rpc.testcoro(1, 2))


def s_errors(r, p):
    with sync_client(p) as rpc:
        r.run("boom", lambda: rpc.boom("kaput"))
        r.run("unknown method", lambda: rpc.nosuch(1))
        r.run("too few args", lambda: rpc.testfunc(1))
        r.run("too many args", lambda: rpc.testfunc(1, 2, 3))
        r.run("unknown keyword", lambda: rpc.kw(1, d=4))
        r.run("unknown system method", lambda: rpc.system.nosuch())
        r.run("methodHelp(unknown)", lambda: rpc.system.methodHelp("nosuch"))
        r.run("methodSignature(unknown)", lambda: rpc.system.methodSignature("nosuch"))
        r.run("after", lambda: rpc.testcoro(1, 2))


def s_login(r, p):
    rpc = sync_client(p)
    if r.run("connect", lambda: rpc.connect() or rpc.remote_info) is not None:
        r.run("call", lambda: rpc.testcoro(1, 2))
        r.run("close", rpc.close)


def s_stream_fail(r, p):
    with sync_client(p) as rpc:
        r.run("count(3)", lambda: rpc.count(3))
        r.run("count_then_fail(3)", lambda: rpc.count_then_fail(3))
        r.run("after", lambda: rpc.testcoro(1, 2))


def s_deprecated(r, p):
    with sync_client(p) as rpc:
        r.run("old_add", lambda: rpc.old_add(1, 2))
        r.run("old_count", lambda: rpc.old_count(3))
        r.run("after", lambda: rpc.testcoro(1, 2))


def s_idle(r, p):
    """A call, then silence longer than the server's idle timeout, then calls."""
    with sync_client(p) as rpc:
        r.run("before", lambda: rpc.testcoro(1, 2))
        time.sleep(p["idle"])
        r.run("after idle", lambda: rpc.testcoro(2, 3))
        r.run("again", lambda: rpc.testcoro(3, 4))
        r.run("reconnect", rpc.reconnect)
        r.run("after reconnect", lambda: rpc.testcoro(4, 5))


def s_many(r, p):
    n = p.get("n", 200)
    with sync_client(p) as rpc:
        r.run("calls", lambda: sum(rpc.testfunc(i, 1) for i in range(n)))
        method = rpc.testcoro  # one Method object: every call reuses its ID
        r.run("same ID twice", lambda: [method(1, 2), method(3, 4)])
        r.run("streams", lambda: [list(rpc.count(3)) for _ in range(20)])


def s_big(r, p):
    with sync_client(p) as rpc:
        for size in p.get("results", []):
            r.run("result of %d" % size, lambda size=size: len(rpc.big(size)))
        for size in p.get("arguments", []):
            r.run("argument of %d" % size, lambda size=size: rpc.size("y" * size))
        r.run("after", lambda: rpc.testcoro(1, 2))


def s_separator(r, p):
    with sync_client(p) as rpc:
        r.run("result holds separator", lambda: rpc.with_separator())
        r.run("after result", lambda: rpc.testcoro(1, 2))
        r.run("argument holds separator", lambda: rpc.echo("a##PRO-END##b"))
        r.run("after argument", lambda: rpc.testcoro(1, 2))


def s_close(r, p):
    rpc = sync_client(p)
    r.run("connect", lambda: rpc.connect() or True)
    r.run("lenConnections", lambda: rpc.system.lenConnections())
    r.run("close", rpc.close)
    r.run("call after close", lambda: rpc.testcoro(1, 2))


def s_sleep_then_close(r, p):
    """Starts a slow call, reads nothing, closes the socket (the server should clean up)."""
    rpc = sync_client(p)
    r.run("connect", lambda: rpc.connect() or True)
    r.run("send", lambda: rpc.send_query("slow-1", "sleep", p.get("seconds", 30)))
    r.run("close", rpc.close)


def s_slow_call(r, p):
    """One slow call (the test shuts the server down meanwhile), then another."""
    with sync_client(p) as rpc:
        r.run("sleep", lambda: rpc.sleep(p.get("seconds", 5)))
        r.run("after", lambda: rpc.testcoro(1, 2))


# --------------------------- the asyncio client (pymprpc.client.AsyncRPC) ---------------


def async_client(p, loop):
    from pymprpc.client.aio import AsyncRPC

    options = {"debug": p.get("debug", False), "loop": loop}
    if p.get("compreser"):
        options["compreser"] = p["compreser"]
    if "heart_beat" in p:
        options["heart_beat"] = p["heart_beat"]
    return AsyncRPC(addr=p["url"], **options)


async def a_connect(r, rpc):
    async def connect():
        await rpc.connect()
        return rpc.remote_info

    return await r.arun("connect", connect())


async def a_close(r, rpc):
    async def close():
        rpc.close()

    await r.arun("close", close())


async def a_usage_page(r, p, loop):
    """The usage page's asyncio example, line by line."""
    rpc = async_client(dict(p, heart_beat=p.get("heart_beat", 40)), loop)
    await a_connect(r, rpc)
    await r.arun("listMethods", rpc.system.listMethods())
    await r.arun("methodSignature", rpc.system.methodSignature("testclassmethod"))
    await r.arun("methodHelp", rpc.system.methodHelp("testfunc"))
    await r.arun("lenConnections", rpc.system.lenConnections())
    await r.arun("lenUndoneTasks", rpc.system.lenUndoneTasks())
    await r.arun("testclassmethod", rpc.testclassmethod(1, 2))
    await r.arun("testclasscoro", rpc.testclasscoro(2, 3))
    await r.arun("testcoro", rpc.testcoro(5, 6))
    await r.arun("testfunc", rpc.testfunc(5, 4))
    await r.arun("testcorogen", rpc.testcorogen(1, 2))
    await r.arun("testclasscorogen", rpc.testclasscorogen(1, 2))
    await a_close(r, rpc)


async def a_args(r, p, loop):
    rpc = async_client(dict(p, heart_beat=40), loop)
    await a_connect(r, rpc)
    await r.arun("kw(1)", rpc.kw(1))
    await r.arun("kw(1, b=5)", rpc.kw(1, b=5))
    await r.arun("kw(a=1, c=9)", rpc.kw(a=1, c=9))
    await r.arun("kw(1, 2, c=4)", rpc.kw(1, 2, c=4))
    await a_close(r, rpc)


async def a_values(r, p, loop):
    rpc = async_client(dict(p, heart_beat=40), loop)
    await a_connect(r, rpc)
    for name in p["values"]:
        await r.arun(name, rpc.echo(VALUES[name]))
    await r.arun("after", rpc.testcoro(1, 2))
    await a_close(r, rpc)


async def a_bytes(r, p, loop):
    rpc = async_client(dict(p, heart_beat=40), loop)
    await a_connect(r, rpc)
    await r.arun("typeof('abc')", rpc.typeof("abc"))
    await r.arun("typeof(b'abc')", rpc.typeof(b"abc"))
    await r.arun("make_bytes('abc')", rpc.make_bytes("abc"))
    await r.arun("echo(b'\\x00\\xff')", rpc.echo(b"\x00\xff"))
    await r.arun("after", rpc.testcoro(1, 2))
    await a_close(r, rpc)


async def a_errors(r, p, loop):
    rpc = async_client(dict(p, heart_beat=40), loop)
    await a_connect(r, rpc)
    await r.arun("boom", rpc.boom("kaput"))
    await r.arun("unknown method", rpc.nosuch(1))
    await r.arun("too few args", rpc.testfunc(1))
    await r.arun("too many args", rpc.testfunc(1, 2, 3))
    await r.arun("unknown keyword", rpc.kw(1, d=4))

    async def unknown_system():
        return await rpc.system.nosuch()

    await r.arun("unknown system method", unknown_system())
    await r.arun("methodHelp(unknown)", rpc.system.methodHelp("nosuch"))
    await r.arun("after", rpc.testcoro(1, 2))
    await a_close(r, rpc)


async def a_login(r, p, loop):
    rpc = async_client(dict(p, heart_beat=40), loop)
    if await a_connect(r, rpc) is not None:
        await r.arun("call", rpc.testcoro(1, 2))
        await a_close(r, rpc)


async def a_stream_fail(r, p, loop):
    rpc = async_client(dict(p, heart_beat=40), loop)
    await a_connect(r, rpc)
    await r.arun("count(3)", rpc.count(3))
    method = p.get("method", "count_then_fail")
    try:
        await r.arun(method + "(3)", getattr(rpc, method)(3))
    except Hung:
        pass  # 0.0.3's own server sends nothing after the failure: the stream hangs
    await asyncio.sleep(0.2)
    await r.arun("after", rpc.testcoro(1, 2))
    await a_close(r, rpc)


async def a_heartbeat(r, p, loop):
    """Silence longer than the server's idle timeout, with or without heart_beat."""
    rpc = async_client(p, loop)
    await a_connect(r, rpc)
    await r.arun("before", rpc.testcoro(1, 2))
    await asyncio.sleep(p["idle"])
    await r.arun("after idle", rpc.testcoro(2, 3))
    await a_close(r, rpc)


async def a_concurrent(r, p, loop):
    rpc = async_client(dict(p, heart_beat=40), loop)
    await a_connect(r, rpc)
    n = p.get("n", 50)
    await r.arun("gather", asyncio.gather(*[rpc.testcoro(i, 1) for i in range(n)]))

    async def streams():
        agens = await asyncio.gather(rpc.count(5), rpc.testcorogen(0, 0))
        out = []
        for agen in agens:
            out.append([i async for i in agen])
        return out

    await r.arun("two streams", streams())
    await r.arun("sequential", _sequential(rpc, p.get("sequential", 200)))
    await a_close(r, rpc)


async def _sequential(rpc, n):
    total = 0
    for i in range(n):
        total += await rpc.testfunc(i, 1)
    return total


async def a_delay(r, p, loop):
    """RETURN false, then system.getresult (the old AsyncRPC's delay())."""
    rpc = async_client(dict(p, heart_beat=40), loop)
    await a_connect(r, rpc)

    async def delayed(method, *args):
        ID = rpc.delay(method, *args)
        await asyncio.sleep(0.1)
        return await rpc.system.getresult(ID)

    await r.arun("delay testcoro", delayed("testcoro", 1, 2))
    await r.arun("delay boom", delayed("boom", "kaput"))
    await r.arun("delay count", delayed("count", 3))
    await r.arun("after", rpc.testcoro(1, 2))
    await a_close(r, rpc)


async def a_big(r, p, loop):
    rpc = async_client(dict(p, heart_beat=40), loop)
    await a_connect(r, rpc)
    for size in p.get("arguments", []):
        await r.arun("argument of %d" % size, rpc.size("y" * size))
    for size in p.get("results", []):
        await r.arun("result of %d" % size, _length(rpc.big(size)))
    await a_close(r, rpc)


async def _length(aw):
    return len(await aw)


async def a_deprecated(r, p, loop):
    rpc = async_client(dict(p, heart_beat=40), loop)
    await a_connect(r, rpc)
    await r.arun("old_add", rpc.old_add(1, 2))
    await r.arun("old_count", rpc.old_count(3))
    await a_close(r, rpc)


async def a_separator(r, p, loop):
    rpc = async_client(dict(p, heart_beat=40), loop)
    await a_connect(r, rpc)
    await r.arun("result holds separator", rpc.with_separator())
    await r.arun("after result", rpc.testcoro(1, 2))
    await a_close(r, rpc)


async def a_slow_call(r, p, loop):
    """One slow call (the test shuts the server down meanwhile), then another."""
    rpc = async_client(dict(p, heart_beat=40), loop)
    await a_connect(r, rpc)
    await r.arun("sleep", rpc.sleep(p.get("seconds", 5)))
    await r.arun("after", rpc.testcoro(1, 2))
    await a_close(r, rpc)


async def a_no_heartbeat_close(r, p, loop):
    """AsyncRPC without heart_beat, as its own docstring's example: connect, call, close."""
    rpc = async_client(p, loop)
    await a_connect(r, rpc)
    await r.arun("call", rpc.testcoro(1, 2))
    await a_close(r, rpc)


def main():
    scenario = sys.argv[1]
    p = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
    r = Recorder(p.get("hang", 8.0))
    hung = None
    try:
        if scenario.startswith("aio_"):
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            loop.set_exception_handler(lambda loop, context: None)  # its dead tasks
            loop.run_until_complete(globals()["a_" + scenario[4:]](r, p, loop))
        else:
            globals()["s_" + scenario](r, p)
    except Hung:
        hung = r.steps[-1][0]
    except Exception as exc:  # the driver itself (or 0.0.3 outside a step)
        r.steps.append(["<scenario>", failure(exc)])
    OUT.write(
        json.dumps(
            {
                "scenario": scenario,
                "python": "%d.%d" % sys.version_info[:2],
                "msgpack": ".".join(map(str, msgpack.version)),
                "pymprpc": __import__("pymprpc").__file__,
                "steps": r.steps,
                "hung": hung,
            }
        )
        + "\n"
    )
    OUT.flush()
    sys.stderr.flush()
    import os

    os._exit(0)  # do not wait for 0.0.3's leftover tasks or sockets


if __name__ == "__main__":
    main()
