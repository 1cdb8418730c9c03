"""Attacks on the services table (`service X version "..."`, `register_service`,
`system.listServices`), written from the documented contract only (README, docs/protocol.md
"Introspection", the `pymprpc.services` and `Server.register_service` docstrings).

Odd versions, names and prefixes go through mprpcgen and the wire and must come back
unchanged; bad registrations must be refused without leaving a half-made entry; readers
must ignore keys they do not know; a pymprpc 0.0.3-style peer gets a plain MPRPC 0.1 answer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import msgpack
import pytest

from helpers import (
    OldServer,
    RawClient,
    ServerThread,
    arun,
    generated_package,
    json_decode,
    json_encode,
    send,
)
from pymprpc.client import RPC, AsyncRPC
from pymprpc.errors import UnsupportSysMethodError
from pymprpc.server import DuplicateServiceError, Server
from pymprpc.services import ServiceInfo, find_service, list_services, service_info

pytestmark = pytest.mark.timeout(60)

LONG_VERSION = "1." + "9" * 3000
# (service name, IDL literal, the version it declares)
VERSIONS = [
    ("Empty", '""', ""),
    ("Unicode", '"1.0-\u03b2 \u00e9t\u00e9 \U0001f680"', "1.0-\u03b2 \u00e9t\u00e9 \U0001f680"),
    ("Escaped", r'"1.0\t\u00e9\N{BULLET}"', "1.0\t\u00e9\N{BULLET}"),
    ("Quoted", r'"say \"hi\" \\ back\\"', 'say "hi" \\ back\\'),
    ("Nul", r'"\u0000"', "\x00"),
    ("Newline", r'"1\n2\r3"', "1\n2\r3"),
    ("Long", f'"{LONG_VERSION}"', LONG_VERSION),
    ("TripleQuote", r'"\"\"\" \u0027\u0027\u0027 {x} %s"', "\"\"\" ''' {x} %s"),
]


def _idl_versions() -> str:
    parts = []
    for name, literal, _ in VERSIONS:
        parts.append(f"/// Version {name}.\nservice {name} version {literal} {{\n")
        parts.append("    def ping(x: int) -> int;\n}\n\n")
    return "".join(parts)


@pytest.fixture(scope="module")
def odd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    root = tmp_path_factory.mktemp("odd")
    (root / "idl").mkdir()
    idl = root / "idl" / "svc_odd_versions.idl"
    idl.write_text(_idl_versions(), encoding="utf-8")
    with generated_package(idl, root / "out") as package:
        yield package


def _snake(name: str) -> str:
    out = ""
    for i, ch in enumerate(name):
        if ch.isupper() and i:
            out += "_"
        out += ch.lower()
    return out


def _servicer(package: ModuleType, name: str) -> Any:
    base = getattr(package, f"{name}Servicer")

    class Impl(base):  # type: ignore[misc, valid-type]
        def ping(self, x: int) -> int:
            return x + 1

    return Impl()


def _odd_server(package: ModuleType, prefix: str = "", *, introspection: bool = True) -> Server:
    server = Server(("127.0.0.1", 0), max_workers=1)
    if introspection:
        server.register_introspection_functions()
    for name, _, _ in VERSIONS:
        getattr(package, f"register_{_snake(name)}")(
            server, _servicer(package, name), prefix=prefix + name + "."
        )
    return server


# -- odd versions through the generator and the wire -----------------------------------


def test_odd_versions_reach_the_generated_classes(odd: Any) -> None:
    for name, _, version in VERSIONS:
        assert version == getattr(odd, f"{name}Servicer").VERSION, name
        assert version == getattr(odd, f"{name}Client").VERSION, name
        assert version == getattr(odd, f"Async{name}Client").VERSION, name
        assert name == getattr(odd, f"{name}Client").SERVICE
        assert name == getattr(odd, f"Async{name}Client").SERVICE


def test_odd_versions_come_back_unchanged_over_both_clients(odd: Any) -> None:
    server = _odd_server(odd)
    expected = {name: version for name, _, version in VERSIONS}
    table = {info.name: info.version for info in server.services}
    # "" is a declared version, not a missing one.
    assert table == expected
    with ServerThread(server) as thread:
        with RPC(thread.url) as rpc:
            listed = list_services(rpc)
            assert {i.name: i.version for i in listed} == expected
            assert [(i.name, i.prefix) for i in listed] == sorted(
                (i.name, i.prefix) for i in listed
            )
            raw = rpc.system.listServices()
            assert {e["name"]: e["version"] for e in raw} == expected
            for entry in raw:
                assert rpc.call(entry["prefix"] + "ping", 1) == 2

        async def run() -> list[ServiceInfo]:
            async with AsyncRPC(thread.url) as arpc:
                return await list_services(arpc)

        assert {i.name: i.version for i in arun(run())} == expected

        for name, _, version in VERSIONS:
            with getattr(odd, f"{name}Client")(thread.url, prefix=name + ".") as client:
                info = service_info(client)
                assert info is not None and info.version == version == client.VERSION
                assert info.doc == f"Version {name}."
                assert client.ping(4) == 5


def test_odd_versions_over_the_async_generated_clients(odd: Any) -> None:
    with ServerThread(_odd_server(odd)) as thread:

        async def run() -> dict[str, str | None]:
            found: dict[str, str | None] = {}
            for name, _, _ in VERSIONS:
                async with getattr(odd, f"Async{name}Client")(
                    thread.url, prefix=name + "."
                ) as client:
                    info = await service_info(client)
                    assert info is not None
                    found[name] = info.version
            return found

        assert arun(run()) == {name: version for name, _, version in VERSIONS}


def test_a_pymprpc_003_peer_reads_list_services(odd: Any) -> None:
    with ServerThread(_odd_server(odd)) as thread, RawClient(thread.port) as raw:
        welcome = raw.login()
        assert welcome["CODE"] == 100
        raw.send({"MPRPC": "0.1", "ID": "s1", "METHOD": "system.listServices"})
        reply = raw.recv()
        assert reply["CODE"] == 200 and reply["MESSAGE"]["ID"] == "s1"
        result = reply["MESSAGE"]["RESULT"]
        assert {e["name"]: e["version"] for e in result} == {n: v for n, _, v in VERSIONS}
        for entry in result:
            assert set(entry) >= {"name", "version", "prefix", "methods", "doc"}
            assert entry["methods"] == ["ping"]
        # The connection stays usable after the big reply.
        raw.send({"MPRPC": "0.1", "ID": "s2", "METHOD": "Nul.ping", "ARGS": [41]})
        assert raw.recv()["MESSAGE"] == {"ID": "s2", "RESULT": 42}


def test_a_pymprpc_003_peer_gets_406_without_introspection(odd: Any) -> None:
    server = _odd_server(odd, introspection=False)
    with ServerThread(server) as thread, RawClient(thread.port) as raw:
        assert raw.login()["CODE"] == 100
        raw.send({"MPRPC": "0.1", "ID": "s1", "METHOD": "system.listServices"})
        assert raw.recv()["CODE"] == 406
        raw.send({"MPRPC": "0.1", "ID": "s2", "METHOD": "Long.ping", "ARGS": [1]})
        assert raw.recv()["MESSAGE"]["RESULT"] == 2


def test_every_client_kind_gets_406_without_introspection_and_keeps_working(odd: Any) -> None:
    with ServerThread(_odd_server(odd, introspection=False)) as thread:
        with RPC(thread.url) as rpc:
            with pytest.raises(UnsupportSysMethodError):
                list_services(rpc)
            assert rpc.call("Empty.ping", 1) == 2
        with odd.UnicodeClient(thread.url, prefix="Unicode.") as client:
            with pytest.raises(UnsupportSysMethodError):
                service_info(client)
            assert client.ping(1) == 2

        async def run() -> int:
            async with AsyncRPC(thread.url) as arpc:
                with pytest.raises(UnsupportSysMethodError):
                    await list_services(arpc)
            async with odd.AsyncQuotedClient(thread.url, prefix="Quoted.") as client:
                with pytest.raises(UnsupportSysMethodError):
                    await service_info(client)
                return int(await client.ping(2))

        assert arun(run()) == 3


def test_registering_odd_services_leaves_health_alone(odd: Any) -> None:
    server = _odd_server(odd)
    for name, _, _ in VERSIONS:
        assert server.health.get(name) == "UNKNOWN"
    with ServerThread(server) as thread, RPC(thread.url) as rpc:
        assert rpc.system.health() == "SERVING"
        for name, _, _ in VERSIONS:
            assert rpc.system.health(name) == "UNKNOWN"


# -- prefixes ---------------------------------------------------------------------------

PREFIXES = ["", ".", "a.b.c.", "\u00fc\u00f1\u00ee.", "\U0001f680/", "x" * 2000 + ".", "sp ace:"]


def test_one_service_under_many_odd_prefixes(odd: Any) -> None:
    server = Server(("127.0.0.1", 0), max_workers=1)
    server.register_introspection_functions()
    for prefix in PREFIXES:
        odd.register_escaped(server, _servicer(odd, "Escaped"), prefix=prefix)
    assert [i.prefix for i in server.services] == sorted(PREFIXES)
    assert all(i.name == "Escaped" and i.methods == ("ping",) for i in server.services)
    with ServerThread(server) as thread:
        with RPC(thread.url) as rpc:
            listed = list_services(rpc)
            assert listed == list(server.services)
            for info in listed:
                assert find_service(listed, "Escaped", info.prefix) == info
                assert rpc.call(info.prefix + "ping", 0) == 1
        for prefix in PREFIXES:
            with odd.EscapedClient(thread.url, prefix=prefix) as client:
                info = service_info(client)
                assert info is not None and info.prefix == prefix
        # A prefix it is not served under.
        with odd.EscapedClient(thread.url, prefix="nope.") as client:
            assert service_info(client) is None


# -- names that collide with builtins and the runtime's own names ----------------------

CLASHING = ["Server", "Rpc", "Client", "Servicer", "ServiceInfo", "System", "Object", "Str"]


def test_service_names_that_clash_with_builtins_and_runtime_names(tmp_path: Path) -> None:
    (tmp_path / "idl").mkdir()
    body = "".join(
        f'service {n} version "{i}" {{\n    def ping(x: int) -> int;\n}}\n\n'
        for i, n in enumerate(CLASHING)
    )
    idl = tmp_path / "idl" / "svc_clashing_names.idl"
    idl.write_text(body)
    with generated_package(idl, tmp_path / "out") as pkg:
        server = Server(("127.0.0.1", 0), max_workers=1)
        server.register_introspection_functions()
        for name in CLASHING:
            getattr(pkg, f"register_{_snake(name)}")(
                server, _servicer(pkg, name), prefix=name.lower() + "."
            )
        assert [i.name for i in server.services] == sorted(CLASHING)
        with ServerThread(server) as thread:
            for i, name in enumerate(CLASHING):
                with getattr(pkg, f"{name}Client")(thread.url, prefix=name.lower() + ".") as c:
                    assert name == c.SERVICE
                    info = service_info(c)
                    assert info is not None and info.version == str(i)
                    assert c.ping(i) == i + 1


def test_a_hand_service_over_the_system_methods() -> None:
    server = Server(("127.0.0.1", 0), max_workers=1)
    server.register_introspection_functions()
    entry = server.register_service(
        "system", ["listMethods", "listServices"], version="x", prefix="system."
    )
    assert entry == ServiceInfo("system", "x", "system.", ("listMethods", "listServices"))
    with ServerThread(server) as thread, RPC(thread.url) as rpc:
        assert list_services(rpc) == [entry]
        assert rpc.system.health("system") == "UNKNOWN"


def test_names_differing_only_in_case_are_two_services() -> None:
    server = Server(("127.0.0.1", 0))
    server.register_function(name="ping", executor="inline")(lambda: "pong")
    a = server.register_service("calc", ["ping"])
    b = server.register_service("Calc", ["ping"])
    assert set(server.services) == {a, b}
    assert len(server.services) == 2


# -- registration rules --------------------------------------------------------------


def _pinger() -> Server:
    server = Server(("127.0.0.1", 0), max_workers=1)
    server.register_introspection_functions()
    for name in ("ping", "v1.ping", "v1.pong", "v2.ping"):
        server.register_function(name=name, executor="inline")(lambda: "pong")
    return server


def test_an_unregistered_method_leaves_no_entry_and_no_half_entry() -> None:
    server = _pinger()
    server.register_service("Pinger", ["ping"], prefix="v1.", version="1")
    before = server.services
    for methods in (["ping", "missing"], ["missing"], ["ping", "pong", "v1.ping"]):
        with pytest.raises(ValueError, match="not registered"):
            server.register_service("Pinger", methods, prefix="v1.", replace=True)
        with pytest.raises(ValueError, match="not registered"):
            server.register_service("Other", methods, prefix="v1.")
    # A prefix without its dot is another prefix.
    with pytest.raises(ValueError, match="not registered"):
        server.register_service("Pinger", ["ping"], prefix="v1")
    assert server.services == before


def test_replace_swaps_only_its_own_name_and_prefix() -> None:
    server = _pinger()
    # replace=True with nothing to replace just registers.
    first = server.register_service("Pinger", ["ping"], prefix="v1.", version="1", replace=True)
    other = server.register_service("Pinger", ["ping"], prefix="v2.", version="1")
    plain = server.register_service("Pinger", ["ping"], version="1")
    with pytest.raises(DuplicateServiceError):
        server.register_service("Pinger", ["ping", "pong"], prefix="v1.", version="2")
    assert isinstance(DuplicateServiceError("x"), ValueError)
    assert first in server.services
    new = server.register_service(
        "Pinger", ["pong", "ping"], prefix="v1.", version=None, doc="now", replace=True
    )
    assert new == ServiceInfo("Pinger", None, "v1.", ("pong", "ping"), "now")
    assert list(server.services) == [plain, new, other]
    assert first not in server.services
    # Replacing again with the very same entry is harmless.
    assert (
        server.register_service("Pinger", ["pong", "ping"], prefix="v1.", doc="now", replace=True)
        == new
    )
    assert len(server.services) == 3


def test_generated_registration_that_fails_lists_nothing(odd: Any) -> None:
    server = Server(("127.0.0.1", 0), max_workers=1)
    server.register_function(name="Nul.ping", executor="inline")(lambda x: x)
    with pytest.raises(ValueError):
        odd.register_nul(server, _servicer(odd, "Nul"), prefix="Nul.")
    assert server.services == ()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"name": 3},
        {"name": None},
        {"name": b"Pinger"},
        {"version": 1.2},
        {"version": 12},
        {"version": b"1.2"},
        {"prefix": None},
        {"prefix": 1},
        {"doc": None},
        {"doc": 3},
        {"methods": [1]},
        {"methods": [None]},
        {"methods": b"ping"},
        {"methods": None},
    ],
    ids=repr,
)
def test_non_string_arguments_are_refused_and_leave_the_table_alone(
    kwargs: dict[str, Any],
) -> None:
    server = _pinger()
    args: dict[str, Any] = {"name": "Pinger", "methods": ["ping"], "prefix": "v1."}
    args.update(kwargs)
    name = args.pop("name")
    methods = args.pop("methods")
    with pytest.raises((TypeError, ValueError)):
        server.register_service(name, methods, **args)
    assert server.services == ()
    # The server still answers a readable table.
    with ServerThread(server) as thread, RPC(thread.url) as rpc:
        assert list_services(rpc) == []


def test_methods_may_be_any_iterable_of_names() -> None:
    server = _pinger()
    entry = server.register_service("Pinger", (m for m in ["ping", "pong"]), prefix="v1.")
    assert entry.methods == ("ping", "pong")
    assert server.services == (entry,)


def test_the_table_is_a_snapshot_of_frozen_entries() -> None:
    server = _pinger()
    methods = ["ping"]
    entry = server.register_service("Pinger", methods, prefix="v1.")
    methods.append("pong")  # the caller's list is not kept
    table = server.services
    assert isinstance(table, tuple)
    with pytest.raises(dataclasses.FrozenInstanceError):
        entry.version = "hacked"  # type: ignore[misc]
    assert server.services == (ServiceInfo("Pinger", None, "v1.", ("ping",)),)
    server.register_service("Pinger", ["ping"], prefix="v2.")
    assert table == (entry,)  # an earlier snapshot does not change


def test_a_huge_doc_is_cleaned_and_served() -> None:
    server = _pinger()
    body = "\n".join(f"    line {i}: " + "\u00e9" * 60 for i in range(3000))
    doc = "\n    Summary.\n\n" + body + "\n    "
    entry = server.register_service("Big", ["ping"], prefix="v1.", doc=doc)
    assert entry.doc == inspect.cleandoc(doc)
    assert len(entry.doc.encode()) > 300_000
    with ServerThread(server) as thread:
        with RPC(thread.url) as rpc:
            assert list_services(rpc) == [entry]

        async def run() -> list[ServiceInfo]:
            async with AsyncRPC(thread.url) as arpc:
                return await list_services(arpc)

        assert arun(run()) == [entry]


# -- readers ignore keys they do not know ---------------------------------------------


def _old_server_answering(result: Any) -> OldServer:
    def on_call(conn: Any, msg: dict[str, Any]) -> None:
        send(conn, {"MPRPC": "0.1", "CODE": 200, "MESSAGE": {"ID": msg["ID"], "RESULT": result}})

    return OldServer(on_call)


NEWER_REPLY = [
    {
        "name": "Calculator",
        "version": "9.9",
        "prefix": "a.",
        "methods": ["add"],
        "doc": "d",
        "signatures": {"add": "add(a: int, b: int) -> int"},
        "deprecated": ["add"],
        "owner": None,
        "weights": [1, 2.5, b"\x00bin", {"nested": [None, True]}],
    },
    {"name": "Minimal", "future": {"x": 1}},
]
NEWER_PARSED = [
    ServiceInfo("Calculator", "9.9", "a.", ("add",), "d"),
    ServiceInfo("Minimal"),
]


def test_the_blocking_reader_ignores_unknown_keys_from_a_newer_server() -> None:
    old = _old_server_answering(NEWER_REPLY)
    try:
        with RPC(old.url) as rpc:
            assert list_services(rpc) == NEWER_PARSED
    finally:
        old.close()


def test_the_async_reader_ignores_unknown_keys_from_a_newer_server() -> None:
    old = _old_server_answering(NEWER_REPLY)

    async def run() -> list[ServiceInfo]:
        async with AsyncRPC(old.url) as arpc:
            return await list_services(arpc)

    try:
        assert arun(run()) == NEWER_PARSED
    finally:
        old.close()


def test_a_generated_client_reader_ignores_unknown_keys(odd: Any) -> None:
    old = _old_server_answering(
        [{**NEWER_REPLY[0], "name": "Unicode", "prefix": "u.", "version": "7"}]
    )
    try:
        with odd.UnicodeClient(old.url, prefix="u.") as client:
            info = service_info(client)
            assert info == ServiceInfo("Unicode", "7", "u.", ("add",), "d")
    finally:
        old.close()


def test_the_raw_reply_is_plain_msgpack_for_old_decoders(odd: Any) -> None:
    # An 0.0.3 peer decodes with msgpack defaults: every key and value must survive that.
    with (
        ServerThread(_odd_server(odd)) as thread,
        RawClient(thread.port, decode=lambda b: msgpack.unpackb(b)) as raw,
    ):
        raw.login()
        raw.send({"MPRPC": "0.1", "ID": "q", "METHOD": "system.listServices"})
        reply = raw.recv()
        assert reply["CODE"] == 200
        names = [e["name"] for e in reply["MESSAGE"]["RESULT"]]
        assert names == sorted(n for n, _, _ in VERSIONS)


# -- concurrency ------------------------------------------------------------------------


def test_services_registered_while_clients_list_them() -> None:
    server = Server(("127.0.0.1", 0), max_workers=2)
    server.register_introspection_functions()
    count = 60
    stop = threading.Event()
    errors: list[BaseException] = []
    seen_sizes: dict[int, list[int]] = {0: [], 1: []}

    def reader(url: str, who: int) -> None:
        try:
            with RPC(url) as rpc:
                while not stop.is_set():
                    listed = list_services(rpc)
                    keys = [(i.name, i.prefix) for i in listed]
                    assert keys == sorted(keys), keys
                    assert len(set(keys)) == len(keys)
                    names = set(rpc.system.listMethods())
                    for info in listed:
                        assert set(info.wire_names) <= names
                    seen_sizes[who].append(len(listed))
        except BaseException as exc:  # noqa: BLE001 - the main thread asserts none came
            errors.append(exc)

    with ServerThread(server) as thread:
        readers = [threading.Thread(target=reader, args=(thread.url, k)) for k in range(2)]
        for t in readers:
            t.start()
        try:
            for i in range(count):
                # Reverse order, so that each entry lands before the ones already listed.
                name = f"S{count - i:03d}"
                server.register_function(name=f"{name}.ping", executor="inline")(lambda: 1)
                server.register_service(name, ["ping"], prefix=f"{name}.", version=str(i))
                if i % 2:
                    server.register_service(
                        name, ["ping"], prefix=f"{name}.", version=f"r{i}", replace=True
                    )
        finally:
            stop.set()
            for t in readers:
                t.join(30)
        assert not errors, errors[0]
        with RPC(thread.url) as rpc:
            final = list_services(rpc)
    assert len(final) == count
    assert [i.name for i in final] == sorted(i.name for i in final)
    assert final == list(server.services)
    # Services are only added (or replaced in place): each reader sees the table grow.
    for sizes in seen_sizes.values():
        assert sizes == sorted(sizes)
        assert all(0 <= size <= count for size in sizes)


# -- more odd inputs --------------------------------------------------------------------


def test_json_debug_clients_read_odd_versions(odd: Any) -> None:
    expected = {name: version for name, _, version in VERSIONS}
    with ServerThread(_odd_server(odd)) as thread:
        with RPC(thread.url, debug=True) as rpc:
            assert {i.name: i.version for i in list_services(rpc)} == expected
        with RPC(thread.url, compression="zlib") as rpc:
            assert {i.name: i.version for i in list_services(rpc)} == expected

        async def run() -> list[ServiceInfo]:
            async with AsyncRPC(thread.url, debug=True) as arpc:
                return await list_services(arpc)

        assert {i.name: i.version for i in arun(run())} == expected


def test_a_json_pymprpc_003_peer_reads_list_services(odd: Any) -> None:
    with (
        ServerThread(_odd_server(odd)) as thread,
        RawClient(thread.port, encode=json_encode, decode=json_decode) as raw,
    ):
        assert raw.login()["CODE"] == 100
        raw.send({"MPRPC": "0.1", "ID": "j", "METHOD": "system.listServices"})
        reply = raw.recv()
        assert reply["CODE"] == 200
        got = {e["name"]: e["version"] for e in reply["MESSAGE"]["RESULT"]}
        assert got == {name: version for name, _, version in VERSIONS}


HAND_NAMES = ["Caf\u00e9 \u2603", "with space", "dotted.name", "\x00", "x" * 5000, "system"]


def test_hand_services_with_odd_names_round_trip() -> None:
    server = Server(("127.0.0.1", 0), max_workers=1)
    server.register_introspection_functions()
    server.register_function(name="\u00fc.ping", executor="inline")(lambda: 1)
    entries = [
        server.register_service(n, ["ping"], prefix="\u00fc.", version=n, doc=n) for n in HAND_NAMES
    ]
    assert list(server.services) == sorted(entries, key=lambda i: (i.name, i.prefix))
    with ServerThread(server) as thread, RPC(thread.url) as rpc:
        assert list_services(rpc) == list(server.services)
        for n in HAND_NAMES:
            assert rpc.system.health(n) == "UNKNOWN"


def test_many_services_are_listed(odd: Any) -> None:
    server = Server(("127.0.0.1", 0), max_workers=1)
    server.register_introspection_functions()
    for i in range(1500):
        odd.register_long(server, _servicer(odd, "Long"), prefix=f"p{i:04d}.")
    with ServerThread(server) as thread, RPC(thread.url) as rpc:
        listed = list_services(rpc)
        assert len(listed) == 1500
        assert [i.prefix for i in listed] == [f"p{i:04d}." for i in range(1500)]
        assert all(i.version == LONG_VERSION for i in listed)


def test_idl_doc_comments_with_quotes_and_backslashes(tmp_path: Path) -> None:
    (tmp_path / "idl").mkdir()
    idl = tmp_path / "idl" / "svc_doc_quotes.idl"
    doc = 'Says """hi""" and \\ \\n \'\'\' {x} %s \u00e9.'
    idl.write_text(f'/// {doc}\nservice Doc version "1" {{\n    def ping(x: int) -> int;\n}}\n')
    with generated_package(idl, tmp_path / "out") as pkg:
        server = Server(("127.0.0.1", 0), max_workers=1)
        server.register_introspection_functions()
        pkg.register_doc(server, _servicer(pkg, "Doc"))
        assert server.services[0].doc == doc
        with ServerThread(server) as thread, pkg.DocClient(thread.url) as client:
            info = service_info(client)
            assert info is not None and info.doc == doc


def test_a_doc_holding_the_separator_is_405_for_an_old_peer_and_fine_for_new_ones() -> None:
    server = _pinger()
    entry = server.register_service("Sep", ["ping"], prefix="v1.", doc="a ##PRO-END## b")
    with ServerThread(server) as thread:
        with RawClient(thread.port) as raw:
            assert raw.login()["CODE"] == 100
            raw.send({"MPRPC": "0.1", "ID": "s", "METHOD": "system.listServices"})
            reply = raw.recv()
            # The reply cannot be framed with the separator: 405, not a corrupt stream.
            assert reply["CODE"] == 405
            raw.send({"MPRPC": "0.1", "ID": "t", "METHOD": "v1.ping"})
            assert raw.recv()["MESSAGE"] == {"ID": "t", "RESULT": "pong"}
        with RPC(thread.url) as rpc:
            assert list_services(rpc) == [entry]


def test_a_service_with_no_methods_is_listed() -> None:
    server = _pinger()
    entry = server.register_service("Nothing", [], version="0", prefix="nowhere.")
    assert entry.methods == () and entry.wire_names == ()
    with ServerThread(server) as thread, RPC(thread.url) as rpc:
        assert rpc.system.listServices() == [
            {"name": "Nothing", "version": "0", "prefix": "nowhere.", "methods": [], "doc": ""}
        ]


@pytest.mark.parametrize("which", ["none", "int", "class", "async_class", "servicer"])
def test_service_info_refuses_what_is_not_a_generated_client(odd: Any, which: str) -> None:
    thing = {
        "none": None,
        "int": 42,
        "class": odd.EmptyClient,
        "async_class": odd.AsyncEmptyClient,
        "servicer": _servicer(odd, "Empty"),
    }[which]
    with pytest.raises(TypeError, match="generated by mprpcgen"):
        service_info(thing)


@pytest.mark.parametrize(
    "header",
    [
        'service Bad version "\\x" {',  # a bad escape
        'service Bad version "\\ud800" {',  # a lone surrogate
        "service Bad version 1.2 {",  # not a string
        "service Bad version {",
        'service Bad version "1" version "2" {',
        'service Bad version "unterminated {',
        'service Bad version """1""" {',
    ],
)
def test_a_bad_version_literal_is_a_compile_error(
    tmp_path: Path, header: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from mprpcgen.cli import main

    idl = tmp_path / "svc_bad_version.idl"
    idl.write_text(header + "\n    def ping() -> int;\n}\n", encoding="utf-8")
    assert main([str(idl), "-o", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "svc_bad_version.idl:1:" in err and "error" in err
    assert not (tmp_path / "out" / "svc_bad_version").exists()


def test_each_server_has_its_own_table(odd: Any) -> None:
    first, second = _pinger(), _pinger()
    odd.register_nul(first, _servicer(odd, "Nul"), prefix="n.")
    first.register_service("Pinger", ["ping"], prefix="v1.")
    assert second.services == ()
    odd.register_nul(second, _servicer(odd, "Nul"), prefix="n.")  # not a duplicate there
    assert [i.name for i in first.services] == ["Nul", "Pinger"]
    assert [i.name for i in second.services] == ["Nul"]


def test_an_asyncio_server_lists_services_added_while_async_clients_read(odd: Any) -> None:
    async def run() -> list[list[str]]:
        server = Server(("127.0.0.1", 0), max_workers=1)
        server.register_introspection_functions()
        async with server:
            url = f"tcp://127.0.0.1:{server.port}"
            seen: list[list[str]] = []

            async def read(rpc: AsyncRPC) -> None:
                for _ in range(20):
                    seen.append([i.prefix for i in await list_services(rpc)])

            async with AsyncRPC(url) as one, AsyncRPC(url) as two:
                reading = [asyncio.ensure_future(read(one)), asyncio.ensure_future(read(two))]
                for k in range(20):
                    odd.register_unicode(server, _servicer(odd, "Unicode"), prefix=f"{k:02d}.")
                    await asyncio.sleep(0)  # let the readers' calls interleave
                await asyncio.gather(*reading)
                seen.append([i.prefix for i in await list_services(one)])
            return seen

    seen = arun(run())
    for prefixes in seen:
        assert prefixes == sorted(prefixes)
        assert prefixes == [f"{k:02d}." for k in range(len(prefixes))]
    assert len(seen[-1]) == 20


def test_a_servicer_subclass_cannot_change_the_listed_version(odd: Any) -> None:
    class Hacked(odd.UnicodeServicer):  # type: ignore[misc, name-defined]
        VERSION = "hacked"

        def ping(self, x: int) -> int:
            return x

    server = _pinger()
    odd.register_unicode(server, Hacked(), prefix="u.")
    # The version is the interface file's, not whatever the servicer claims.
    assert server.services[0].version == odd.UnicodeClient.VERSION


def test_a_generated_registration_with_a_non_string_prefix_registers_nothing(odd: Any) -> None:
    server = Server(("127.0.0.1", 0), max_workers=1)
    server.register_introspection_functions()
    with pytest.raises(TypeError):
        odd.register_nul(server, _servicer(odd, "Nul"), prefix=None)
    assert server.services == ()
    with ServerThread(server) as thread, RPC(thread.url) as rpc:
        assert all(name.startswith("system.") for name in rpc.system.listMethods())
