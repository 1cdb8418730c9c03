"""A blocking `RPC` across fork (README, "Processes"): a client connected in a process that
then forks connects again in the child on the child's first call; the child never reads or
writes the parent's connection, and its `close()` leaves that connection open.

Every scenario forks inside a script run in a subprocess (never the test process); the
server runs in the test process, and `port()` answers the caller's own TCP port, which
names the connection a call went over.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from attacks_review11.kit import run_script, serving, slow_welcome
from helpers import tls_contexts

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

PY313 = "/work/main/.venv313/bin/python"
PYTHONS = [sys.executable] + ([PY313] if os.path.exists(PY313) else [])


PREFORK = """
url, exit_with, beat = sys.argv[1], sys.argv[2], sys.argv[3]
rpc = RPC(url, timeout=10, heart_beat=0.2 if beat == "beat" else None)
rpc.connect()  # module level, before the workers fork (gunicorn --preload)
parent_port = rpc.port()
base_fds, base_threads = fds(), threading.active_count()
stop = threading.Event()
crossed = []

def parent_load(tag):
    n = 0
    while not stop.is_set():
        got = rpc.echo([tag, n, "p" * 3000])
        if got != [tag, n, "p" * 3000]:
            crossed.append([tag, n, str(got)[:50]])
        n += 1

threads = [threading.Thread(target=parent_load, args=(f"t{k}",)) for k in range(3)]
for t in threads:
    t.start()

def worker(k):
    bad = [i for i in range(60) if rpc.echo([k, i, "c" * 3000]) != [k, i, "c" * 3000]]
    rpc.notify("echo", "oneway first")   # delay/notify on the child's own connection
    got = rpc.system.getresult(rpc.delay("echo", k))
    if beat == "beat":
        time.sleep(0.5)   # the child's own reader pings meanwhile
    return {"bad": bad, "own": rpc.port() != parent_port, "delay": got == k,
            "threads": threading.active_count()}

children = []
for k in range(5):
    time.sleep(0.03)   # the parent's threads are mid-call as each child forks
    children.append(in_child(lambda: worker(k), exit_with))
time.sleep(0.3)   # a shutdown sent by a child would have reached the parent by now
stop.set()
for t in threads:
    t.join()
report({"children": children, "crossed": crossed, "same_port": rpc.port() == parent_port,
        "connected": rpc.connected, "fds": [base_fds, fds()],
        "threads": [base_threads, threading.active_count()]})
rpc.close()
"""


@pytest.mark.timeout(60)
@pytest.mark.parametrize("python", PYTHONS, ids=["py311", "py313"][: len(PYTHONS)])
@pytest.mark.parametrize(("exit_with", "beat"), [("sys", "none"), ("os", "none"), ("sys", "beat")])
def test_prefork_children_and_parent_threads_never_cross(
    tmp_path: Path, python: str, exit_with: str, beat: str
) -> None:
    with serving() as running:
        [out] = run_script(tmp_path, PREFORK, running.url, exit_with, beat, python=python)
    for child in out["children"]:
        assert child["bad"] == [] and child["own"] and child["delay"], child
        # its own reader only: the parent's reader and load threads do not exist here
        assert child["threads"] == 2, child
    assert out["crossed"] == []
    assert out["same_port"] and out["connected"]  # the parent never reconnected
    assert out["fds"][0] == out["fds"][1]
    assert out["threads"][0] == out["threads"][1]


MP_POOL = """
import multiprocessing
url = sys.argv[1]
rpc = RPC(url, timeout=10)
rpc.connect()
parent_port = rpc.port()

def work(tag):
    got = [rpc.echo([tag, i]) for i in range(40)]
    return [got == [[tag, i] for i in range(40)], rpc.port() != parent_port, os.getpid()]

if __name__ == "__main__":
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(4) as pool:
        results = pool.map(work, [f"job{i}" for i in range(12)])
    # also a plain Process that returns normally (multiprocessing ends it with os._exit)
    p = ctx.Process(target=work, args=("proc",))
    p.start(); p.join()
    report({"results": results, "exitcode": p.exitcode,
            "parent": [rpc.echo("after"), rpc.port() == parent_port]})
"""


@pytest.mark.timeout(60)
def test_multiprocessing_fork_pool_workers_connect_on_their_own(tmp_path: Path) -> None:
    with serving() as running:
        [out] = run_script(tmp_path, MP_POOL, running.url)
    assert all(ok and own for ok, own, _ in out["results"]), out
    assert out["exitcode"] == 0
    assert out["parent"] == ["after", True]


TLS = """
import ssl
url, cafile = sys.argv[1], sys.argv[2]
rpc = RPC(url, timeout=10, heart_beat=0.3, ssl=ssl.create_default_context(cafile=cafile))
rpc.connect()
parent_port = rpc.port()
stop = threading.Event(); crossed = []

def load(tag):
    n = 0
    while not stop.is_set():
        if rpc.echo([tag, n, "x" * 20000]) != [tag, n, "x" * 20000]:
            crossed.append(n)
        n += 1

threads = [threading.Thread(target=load, args=(k,)) for k in range(3)]
[t.start() for t in threads]

def child():
    ok = all(rpc.echo(["c", i, "y" * 20000]) == ["c", i, "y" * 20000] for i in range(30))
    items = list(rpc.count(50))
    time.sleep(0.7)   # pings over the child's own TLS connection
    return [ok, items == list(range(50)), rpc.echo("late"), rpc.port() != parent_port]

children = []
for k in range(4):
    time.sleep(0.05)
    children.append(in_child(child))
time.sleep(0.3); stop.set(); [t.join() for t in threads]
report({"children": children, "crossed": crossed, "parent": [rpc.port() == parent_port,
        rpc.connected]})
"""


@pytest.mark.timeout(60)
def test_fork_over_tls_with_heartbeat_while_parent_threads_call(tmp_path: Path) -> None:
    server_ctx, _ = tls_contexts(tmp_path)
    with serving(ssl=server_ctx) as running:
        url = running.url.replace("tcp://", "tls://")
        [out] = run_script(tmp_path, TLS, url, str(tmp_path / "cert.pem"))
    assert out["children"] == [[True, True, "late", True]] * 4, out
    assert out["crossed"] == []
    assert out["parent"] == [True, True]


CHILD_KINDS = """
url = sys.argv[1]
rpc = RPC(url, timeout=10)
rpc.connect()
parent_port = rpc.port()
out = {}
out["never_calls_sys_exit"] = in_child(lambda: "idle", "sys")
out["never_calls_os_exit"] = in_child(lambda: "idle", "os")

def close_then_connect():
    rpc.close()
    rpc.connect()
    got = [rpc.echo("again"), rpc.port() != parent_port]
    rpc.close()
    return got + [rpc.connected]
out["close_then_connect"] = in_child(close_then_connect)

def with_block():
    with rpc:
        got = [rpc.echo("with"), rpc.port() != parent_port]
    return got + [rpc.connected]
out["with_block"] = in_child(with_block)

def grandchild():
    child_port = rpc.port()
    below = in_child(lambda: [rpc.echo("g"), rpc.port() not in (parent_port, child_port)])
    return [child_port != parent_port, below, rpc.port() == child_port]
out["grandchild"] = in_child(grandchild)
time.sleep(0.3)
out["parent"] = [rpc.echo("p"), rpc.port() == parent_port, rpc.connected]
report(out)
"""


@pytest.mark.timeout(60)
def test_children_that_idle_close_reconnect_use_with_or_fork_again(tmp_path: Path) -> None:
    with serving() as running:
        [out] = run_script(tmp_path, CHILD_KINDS, running.url)
    assert out["never_calls_sys_exit"] == "idle"
    assert out["never_calls_os_exit"] == "idle"
    assert out["close_then_connect"] == ["again", True, False]
    assert out["with_block"] == ["with", True, False]
    assert out["grandchild"] == [True, ["g", True], True]
    assert out["parent"] == ["p", True, True]


IN_FLIGHT = """
url = sys.argv[1]
rpc = RPC(url, timeout=10)
rpc.connect()
parent_port = rpc.port()
got = {}
t = threading.Thread(target=lambda: got.setdefault("slow", rpc.slow_echo("parent's", 0.6)))
t.start()
time.sleep(0.15)   # the parent's call waits for its reply as the process forks
child = in_child(lambda: [rpc.slow_echo("child's", 0.2), rpc.echo("c"), rpc.port() != parent_port])
t.join()
report({"child": child, "parent": [got.get("slow"), rpc.port() == parent_port]})
"""


@pytest.mark.timeout(60)
def test_fork_while_a_parent_thread_waits_for_a_reply(tmp_path: Path) -> None:
    with serving() as running:
        [out] = run_script(tmp_path, IN_FLIGHT, running.url)
    assert out["child"] == ["child's", "c", True]
    assert out["parent"] == ["parent's", True]


RECONNECTING = """
url, first = sys.argv[1], sys.argv[2] == "first"
rpc = RPC(url, timeout=10)
parent_port = None
if not first:
    rpc.connect()
    parent_port = rpc.port()
    time.sleep(1.6)   # the server's idle timeout (1 s) closes it: the next call reconnects
got = {}
def connect_or_call():
    got["value"] = rpc.connect() and "connected" if first else rpc.echo("reconnected")
t = threading.Thread(target=connect_or_call)
t.start()
time.sleep(0.2)   # forks while that thread waits for the (slow) welcome

def child():
    first_call = outcome(lambda: rpc.echo("child"))
    if first_call[0] == "error":   # a client that was not connected yet at fork
        rpc.connect()
    return [first_call, rpc.echo("child 2"), rpc.port()]
child_out = in_child(child)
t.join()
report({"child": child_out, "parent": [got.get("value"), rpc.echo("p"), rpc.port()]})
"""


@pytest.mark.timeout(60)
@pytest.mark.parametrize("first", ["first", "again"])
def test_fork_while_another_thread_logs_in(tmp_path: Path, first: str) -> None:
    """The parent connects (first) or reconnects (again, after an idle close) in a thread,
    the welcome held back 0.6 s, when the process forks. The child connects on its own: a
    reconnection is due, so its call connects; a client never connected yet says so."""
    with serving(timeout=1.0) as running, slow_welcome(running, 0.6) as proxy:
        [out] = run_script(tmp_path, RECONNECTING, proxy.url(), first)
    first_call, second, child_port = out["child"]
    if first == "again":
        assert first_call == ["ok", "child"]
    else:
        assert first_call[:2] == ["error", "ConnectionLostError"]
        assert "not connected" in first_call[2]
    assert second == "child 2"
    parent_value, p, parent_port = out["parent"]
    assert parent_value in ("connected", "reconnected")
    assert p == "p" and parent_port != child_port


HALF_READ = """
url, deadline = sys.argv[1], sys.argv[2] == "deadline"
rpc = RPC(url, timeout=10 if deadline else None)
rpc.connect()
items = rpc.count(6, 0.2)
first = next(items)

def child():
    # The loop that was reading the stream goes on in the child (a worker forked per
    # item): the stream's replies are the parent's to read.
    try:
        rest = list(items)
        return ["ended", rest]
    except Exception as exc:
        return ["raised", type(exc).__name__, str(exc)[:100]]

child_out = in_child(child)
report({"first": first, "child": child_out, "parent_rest": list(items)})
"""


@pytest.mark.timeout(60)
@pytest.mark.parametrize("deadline", ["deadline", "none"])
def test_a_child_reading_a_half_read_stream_gets_connection_lost(
    tmp_path: Path, deadline: str
) -> None:
    with serving() as running:
        [out] = run_script(tmp_path, HALF_READ, running.url, deadline)
    assert out["first"] == 0
    assert out["parent_rest"] == [1, 2, 3, 4, 5]  # the parent's stream is untouched
    assert out["child"][:2] == ["raised", "ConnectionLostError"], out["child"]


FD_CYCLES = """
url = sys.argv[1]
rpc = RPC(url, timeout=10)
rpc.connect()
parent_port = rpc.port()
base = [fds(), threading.active_count()]
children = []
for i in range(30):
    children.append(in_child(lambda: [rpc.echo(i), fds(), threading.active_count()], "os"))
report({"base": base, "after": [fds(), threading.active_count()], "children": children,
        "parent": rpc.port() == parent_port})
"""


@pytest.mark.timeout(60)
def test_many_fork_cycles_leak_no_descriptor_or_thread(tmp_path: Path) -> None:
    with serving() as running:
        [out] = run_script(tmp_path, FD_CYCLES, running.url)
    assert out["after"] == out["base"]
    assert out["parent"]
    for i, (value, child_fds, child_threads) in enumerate(out["children"]):
        assert value == i
        # the inherited socket closed, its own one open (plus the pipe the child writes to)
        assert child_fds == out["base"][0] + 1, out["children"][i]
        assert child_threads == 2


STREAMS_LEFT_TO_PARENT = """
from pymprpc.errors import DeadlineExceeded
url, proxy = sys.argv[1], sys.argv[2]
# a tiny stream buffer: the parent's unread stream pauses its reader (TCP flow control)
tiny = RPC(url, timeout=10, stream_buffer_size=200)
tiny.connect()
paused = tiny.count(300)
first = next(paused)
rpc = RPC(url, timeout=10)
rpc.connect()
parent_port = rpc.port()
slow = rpc.count(5, 0.2)
slow_first = next(slow)
time.sleep(0.3)   # the paused stream has filled its buffer

def child():
    # streams untouched; the child's own calls, the first one bounded by its deadline
    # while it connects (to the proxy address: the welcome is held back 0.6 s)
    quick = RPC(proxy, timeout=10)
    quick.connect()   # connected before the fork below: the grandchild reconnects
    g = in_child(lambda: outcome(lambda: quick.echo.with_options(timeout=0.1)("late")))
    got = [rpc.echo("c"), list(tiny.count(3)), rpc.port() != parent_port, g,
           quick.echo("fine"), quick.port() != parent_port]
    quick.close()
    return got   # exits by sys.exit with both streams alive: their generators end here

child_out = in_child(child)
rest_paused = list(paused)
rest_slow = list(slow)
report({"child": child_out, "paused": [first] + rest_paused == list(range(300)),
        "slow": [slow_first] + rest_slow, "parent": [rpc.echo("p"), rpc.port() == parent_port]})
"""


@pytest.mark.timeout(60)
def test_parent_streams_half_read_or_paused_at_fork_carry_on_in_the_parent(
    tmp_path: Path,
) -> None:
    with serving() as running, slow_welcome(running, 0.6) as proxy:
        [out] = run_script(tmp_path, STREAMS_LEFT_TO_PARENT, running.url, proxy.url())
    echo, items, own, grandchild, fine, quick_own = out["child"]
    assert [echo, items, own] == ["c", [0, 1, 2], True]
    # the grandchild's first call reconnects within its 0.1 s deadline: DeadlineExceeded
    assert grandchild[:2] == ["error", "DeadlineExceeded"], grandchild
    assert fine == "fine" and quick_own
    assert out["paused"] is True
    assert out["slow"] == [0, 1, 2, 3, 4]
    assert out["parent"] == ["p", True]
