"""Contract 6 (one shared servicer state) and 7 (0.0.3-style clients keep working)."""

from __future__ import annotations

import bz2
import functools
import json
import lzma
import threading
import zlib

import pytest

from pymprpc.client import RPC
from pymprpc.server import Server

from .kit import SEP, Raw, Srv, code, pack, unpack

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def srv():
    with Srv() as s:
        yield s


def test_register_instance_one_state_many_clients_threads(srv: Srv) -> None:
    url = f"tcp://127.0.0.1:{srv.port}"
    with RPC(addr=url, timeout=10) as r0:
        start = r0.value()
        pid = r0.pid()

    def work() -> None:
        with RPC(addr=url, timeout=10) as rpc:
            for _ in range(50):
                rpc.incr()

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    with RPC(addr=url, timeout=10) as r:
        assert r.value() == start + 300
        assert r.pid() == pid == srv.proc.pid


def test_bound_methods_via_register_function_share_state(srv: Srv) -> None:
    url = f"tcp://127.0.0.1:{srv.port}"
    with RPC(addr=url, timeout=10) as r0:
        start = r0.c2value()
        assert r0.c2pid() == srv.proc.pid

    def work() -> None:
        with RPC(addr=url, timeout=10) as rpc:
            for _ in range(40):
                rpc.c2incr()

    threads = [threading.Thread(target=work) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    with RPC(addr=url, timeout=10) as r:
        assert r.c2value() == start + 200


class _Counter:
    def __init__(self) -> None:
        self.n = 0
        self.lock = threading.Lock()

    def incr(self) -> int:
        with self.lock:
            self.n += 1
            return self.n

    def __call__(self) -> int:
        return self.incr()


@pytest.mark.parametrize("how", ["partial", "callable_object", "staticmethod_on_instance"])
def test_other_stateful_callables_share_state(how: str) -> None:
    """README: 'a bound method ... or a callable object' defaults to the thread pool."""
    import os

    c = _Counter()
    server = Server(("127.0.0.1", 0), grace_period=1)
    if how == "partial":
        server.register_function("inc")(functools.partial(c.incr))
    elif how == "callable_object":
        server.register_function("inc")(c)
    else:

        class Svc:
            def incr(self) -> int:
                return c.incr()

            @staticmethod
            def spid() -> int:
                return os.getpid()

        server.register_instance(Svc())
    from helpers import ServerThread

    with ServerThread(server) as st, RPC(addr=st.url, timeout=10) as rpc:
        name = "inc" if how != "staticmethod_on_instance" else "incr"
        for _ in range(5):
            getattr(rpc, name)()
        assert c.n == 5, f"{how}: server-side state {c.n} after 5 calls (forked copy?)"
        if how == "staticmethod_on_instance":
            assert rpc.spid() == os.getpid()


# -- 0.0.3-style clients -----------------------------------------------------------------

COMPRESS = {"none": lambda b: b, "zlib": zlib.compress, "bz2": bz2.compress, "lzma": lzma.compress}
DECOMPRESS = {
    "none": lambda b: b,
    "zlib": zlib.decompress,
    "bz2": bz2.decompress,
    "lzma": lzma.decompress,
}


@pytest.mark.parametrize("comp", sorted(COMPRESS))
@pytest.mark.parametrize("enc", ["msgpack", "json"])
def test_old_client_raw(srv: Srv, comp: str, enc: str) -> None:
    def encode(m: object) -> bytes:
        b = json.dumps(m).encode() if enc == "json" else pack(m)
        return COMPRESS[comp](b)

    def decode(b: bytes) -> object:
        d = DECOMPRESS[comp](b)
        return json.loads(d) if enc == "json" else unpack(d)

    with Raw(srv.port, timeout=5) as c:
        c.encode, c.decode = encode, decode  # type: ignore[method-assign]
        w = c.login()
        assert code(w) == 100 and "FEATURES" not in w, w
        assert w["DEBUG"] == (enc == "json") and w["COMPRESER"] == (
            None if comp == "none" else comp
        ), w
        assert c.rpc("echo", {"a": [1, "é"]})["MESSAGE"]["RESULT"] == {"a": [1, "é"]}
        c.call("s", "count", 2)
        assert [code(c.recv()) for _ in range(4)] == [201, 202, 202, 206]
        c.send({"MPRPC": "0.1", "HEARTBEAT": "ping"})
        assert code(c.recv()) == 101
        c.call("d", "echo", 5, RETURN=False)
        r = c.rpc("system.getresult", "d", id="g")
        assert r["MESSAGE"]["RESULT"] == 5
        # an old client gets a 503 from a call over max_inflight etc., never 407/408
        c.call("dl", "asleep", 0.01, DEADLINE=0)
        assert code(c.recv()) == 200  # DEADLINE ignored without the feature


@pytest.mark.parametrize("compression", [None, "zlib", "bz2", "lzma"])
@pytest.mark.parametrize("debug", [False, True])
def test_package_client_features_off(srv: Srv, compression: str | None, debug: bool) -> None:
    with RPC(
        addr=f"tcp://127.0.0.1:{srv.port}",
        timeout=10,
        features=(),
        debug=debug,
        compression=compression,
    ) as rpc:
        assert rpc.echo([1, 2]) == [1, 2]
        assert list(rpc.count(3)) == [0, 1, 2]
        i = rpc.delay("echo", 7)
        assert rpc.system.getresult(i) == 7


def test_old_client_separator_in_result(srv: Srv) -> None:
    with Raw(srv.port, timeout=5) as c:
        c.login()
        c.call("s", "echo_sep")
        r = c.recv()
        assert code(r) in (405, 401), r
        assert c.rpc("echo", 1, id="after")["MESSAGE"]["RESULT"] == 1


def test_old_client_pipelined_split_reads(srv: Srv) -> None:
    """Frames split at every byte boundary, including inside the separator."""
    with Raw(srv.port, timeout=5) as c:
        c.login()
        data = b"".join(
            pack({"MPRPC": "0.1", "ID": f"i{i}", "METHOD": "echo", "ARGS": [i]}) + SEP
            for i in range(30)
        )
        for i in range(0, len(data), 7):
            c.send_raw(data[i : i + 7])
        got = {c.recv()["MESSAGE"]["ID"] for _ in range(30)}
        assert got == {f"i{i}" for i in range(30)}


def test_json_mode_bytes_args_and_unicode(srv: Srv) -> None:
    with Raw(srv.port, timeout=5, enc="json") as c:
        c.login()
        assert c.rpc("echo", "😀\u2028")["MESSAGE"]["RESULT"] == "😀\u2028"
        c.send_raw(b'{"MPRPC":"0.1","ID":"j","METHOD":"echo","ARGS":["\\ud800"]}' + SEP)
        r = c.recv()
        assert 200 <= code(r) < 500, r
        assert c.rpc("echo", 1, id="k")["MESSAGE"]["RESULT"] == 1
