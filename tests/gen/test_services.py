"""The services table (issue 11: `service X version "1.0"` must reach introspection).

Generated `register_<service>()` lists each service, with its IDL version and prefix, in
the server's table; `system.listServices()` answers it over both clients, and
`pymprpc.services.service_info` finds a generated client's own entry.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from generated_examples.calculator import (
    AsyncCalculatorClient,
    CalculatorClient,
    CalculatorServicer,
    register_calculator,
)
from generated_examples.inventory import (
    AsyncHealthClient,
    HealthClient,
    InventoryClient,
    register_health,
    register_inventory,
)
from helpers import ServerThread, arun, generated_package
from mprpcgen.demo import Calculator, Health, Inventory
from pymprpc.client import RPC, AsyncRPC
from pymprpc.errors import UnsupportSysMethodError, ValidationError
from pymprpc.server import DuplicateServiceError, Server
from pymprpc.services import ServiceInfo, find_service, list_services, service_info

CALC_METHODS = ("add", "slow_add", "count", "area", "old_add", "log", "translate")

EXPECTED = [
    ServiceInfo("Calculator", "1.2.0", "a.", CALC_METHODS, "Arithmetic as a service."),
    ServiceInfo("Calculator", "1.2.0", "b.", CALC_METHODS, "Arithmetic as a service."),
    ServiceInfo(
        "Health",
        None,
        "health.",
        ("ping", "uptime"),
        "Liveness checks: a second service in the same file.",
    ),
    ServiceInfo(
        "Inventory", "0.3.0", "", ("put", "get", "listItems", "by_status", "clear"), "Items by SKU."
    ),
    ServiceInfo("Legacy", "0.9", "legacy.", ("echo", "shout"), "Hand-written, registered by hand."),
]


def build_server(*, introspection: bool = True) -> Server:
    """Services from two IDL files (calculator.idl, inventory.idl), Calculator twice under
    prefixes, Health without a version, and a hand-registered service."""
    server = Server(("127.0.0.1", 0), max_workers=1)
    if introspection:
        server.register_introspection_functions()
    register_calculator(server, Calculator(), prefix="a.")
    register_calculator(server, Calculator(), prefix="b.")
    register_inventory(server, Inventory())
    register_health(server, Health(), prefix="health.")

    @server.register_function(name="legacy.echo", executor="inline")
    def echo(text: str) -> str:
        return text

    @server.register_function(name="legacy.shout", executor="inline")
    def shout(text: str) -> str:
        return text.upper()

    server.register_service(
        "Legacy",
        ["echo", "shout"],
        version="0.9",
        prefix="legacy.",
        doc="""
            Hand-written, registered by hand.
        """,
    )
    return server


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with ServerThread(build_server()) as thread:
        yield thread.url


def test_the_server_keeps_one_entry_per_served_service() -> None:
    assert list(build_server(introspection=False).services) == EXPECTED


def test_list_services_over_the_blocking_client(url: str) -> None:
    with RPC(url) as rpc:
        assert list_services(rpc) == EXPECTED
        raw = rpc.system.listServices()
    health = next(entry for entry in raw if entry["name"] == "Health")
    # A service that declares no version says so with nil, not with a missing key.
    assert health == {
        "name": "Health",
        "version": None,
        "prefix": "health.",
        "methods": ["ping", "uptime"],
        "doc": "Liveness checks: a second service in the same file.",
    }


def test_list_services_over_the_async_client(url: str) -> None:
    async def run() -> list[ServiceInfo]:
        async with AsyncRPC(url) as rpc:
            return await list_services(rpc)

    assert arun(run()) == EXPECTED


def test_listed_methods_are_callable_under_their_prefix(url: str) -> None:
    with RPC(url) as rpc:
        names = set(rpc.system.listMethods())
        for info in list_services(rpc):
            assert set(info.wire_names) <= names, info.name
        assert rpc.call("b.add", 2, 3) == 5
        assert rpc.call("legacy.shout", "hi") == "HI"


def test_a_generated_client_finds_its_own_service(url: str) -> None:
    with CalculatorClient(url, prefix="b.") as calc:
        info = service_info(calc)
        assert info is not None and info.prefix == "b."
        assert info.version == calc.VERSION == "1.2.0"
        # Through the client's options too (with_options returns a view of it).
        assert service_info(calc.with_options(timeout=5)) == info
    with HealthClient(url, prefix="health.") as health:
        found = service_info(health)
        assert found is not None and found.version is None
    # Served, but not under that prefix (Calculator is under "a." and "b." only).
    with CalculatorClient(url) as unprefixed:
        assert service_info(unprefixed) is None
    with InventoryClient(url) as inventory:
        found = service_info(inventory)
        assert found is not None and found.version == "0.3.0"


def test_a_generated_async_client_finds_its_own_service(url: str) -> None:
    async def run() -> tuple[ServiceInfo | None, ServiceInfo | None]:
        async with (
            AsyncCalculatorClient(url, prefix="a.") as calc,
            AsyncHealthClient(url, prefix="health.") as health,
        ):
            return await service_info(calc), await service_info(health)

    calc, health = arun(run())
    assert calc == EXPECTED[0]
    assert health is not None and health.version is None


def test_service_info_wants_a_generated_client(url: str) -> None:
    with RPC(url) as rpc, pytest.raises(TypeError, match="generated by mprpcgen"):
        service_info(rpc)  # type: ignore[call-overload]


def test_without_introspection_list_services_is_406_like_other_system_methods() -> None:
    with ServerThread(build_server(introspection=False)) as thread:
        with RPC(thread.url) as rpc, pytest.raises(UnsupportSysMethodError):
            list_services(rpc)
        with CalculatorClient(thread.url, prefix="a.") as calc:
            with pytest.raises(UnsupportSysMethodError):
                service_info(calc)
            assert calc.add(1, 2) == 3


def test_registering_a_service_leaves_its_health_to_the_application(url: str) -> None:
    server = build_server(introspection=False)
    assert server.health.get("Calculator") == "UNKNOWN"
    with RPC(url) as rpc:
        assert rpc.system.health("Inventory") == "UNKNOWN"
        assert rpc.system.health() == "SERVING"


# -- registration rules ----------------------------------------------------------------


def test_a_service_lists_only_registered_methods() -> None:
    server = Server(("127.0.0.1", 0))
    server.register_function(name="v1.ping")(lambda: "pong")
    with pytest.raises(ValueError, match=r"'v1\.pong', which is not registered"):
        server.register_service("Pinger", ["ping", "pong"], prefix="v1.")
    with pytest.raises(ValueError, match="'ping', which is not registered"):
        server.register_service("Pinger", ["ping"])  # registered with the prefix only
    with pytest.raises(ValueError, match="'ping' twice"):
        server.register_service("Pinger", ["ping", "ping"], prefix="v1.")
    with pytest.raises(ValueError, match="needs a name"):
        server.register_service("", ["ping"], prefix="v1.")
    with pytest.raises(TypeError, match="not the string 'ping'"):
        server.register_service("Pinger", "ping", prefix="v1.")
    assert server.services == ()


def test_the_same_service_twice_under_one_prefix_is_refused_unless_replaced() -> None:
    server = Server(("127.0.0.1", 0))
    server.register_function(name="ping")(lambda: "pong")
    server.register_service("Pinger", ["ping"], version="1")
    with pytest.raises(DuplicateServiceError, match="'Pinger' is already registered without"):
        server.register_service("Pinger", ["ping"], version="2")
    server.register_service("Pinger", ["ping"], version="2", replace=True)
    assert server.services == (ServiceInfo("Pinger", "2", "", ("ping",)),)


def test_a_second_generated_registration_under_the_same_prefix_is_refused() -> None:
    server = Server(("127.0.0.1", 0))
    register_calculator(server, Calculator())
    with pytest.raises(ValueError, match="already registered"):
        register_calculator(server, Calculator())
    assert [info.prefix for info in server.services] == [""]


IDL = """\
/// Nothing to call yet: listed for its version.
service Placeholder version "2.0-beta" {}

service Bare {
    def ping() -> str;
}
"""


@pytest.fixture
def generated(tmp_path: Path) -> Iterator[ModuleType]:
    (tmp_path / "idl").mkdir()
    (tmp_path / "idl" / "listed.idl").write_text(IDL)
    with generated_package(tmp_path / "idl" / "listed.idl", tmp_path / "out") as listed:
        yield listed


def test_a_service_without_methods_or_version_is_listed(generated: Any) -> None:
    class Placeholder(generated.PlaceholderServicer):  # type: ignore[misc]
        pass

    class Bare(generated.BareServicer):  # type: ignore[misc]
        def ping(self) -> str:
            return "pong"

    server = Server(("127.0.0.1", 0))
    server.register_introspection_functions()
    generated.register_placeholder(server, Placeholder(), prefix="p.")
    generated.register_bare(server, Bare())
    with ServerThread(server) as thread, RPC(thread.url) as rpc:
        assert rpc.system.listServices() == [
            {"name": "Bare", "version": None, "prefix": "", "methods": ["ping"], "doc": ""},
            {
                "name": "Placeholder",
                "version": "2.0-beta",
                "prefix": "p.",
                "methods": [],
                "doc": "Nothing to call yet: listed for its version.",
            },
        ]
    assert generated.BareClient.SERVICE == "Bare"


# -- the wire form -----------------------------------------------------------------------


def test_the_wire_form_round_trips_and_ignores_keys_it_does_not_know() -> None:
    for info in EXPECTED:
        assert ServiceInfo.from_wire(info.to_wire()) == info
    newer = {**EXPECTED[0].to_wire(), "signatures": {"add": "add(a: int, b: int) -> int"}}
    assert ServiceInfo.from_wire(newer) == EXPECTED[0]
    assert ServiceInfo.from_wire({"name": "Minimal"}) == ServiceInfo("Minimal")


@pytest.mark.parametrize(
    ("value", "where"),
    [
        ([{"name": 3}], r"listServices\[0\]\.name: expected str, got int"),
        ([{"version": "1"}], r"listServices\[0\]: missing key 'name'"),
        ([{"name": "X", "version": 1}], r"\[0\]\.version: expected a string or nil"),
        ([{"name": "X", "methods": ["a", 2]}], r"\[0\]\.methods: expected a list of strings"),
        ([{"name": "X", "prefix": None}], r"\[0\]\.prefix: expected str, got NoneType"),
        (["X"], r"listServices\[0\]: expected a map, got str"),
        ({"name": "X"}, r"listServices: expected a list, got dict"),
    ],
)
def test_a_malformed_reply_is_a_validation_error(value: Any, where: str) -> None:
    class Answers:
        def call(self, method: str) -> Any:
            assert method == "system.listServices"
            return value

    with pytest.raises(ValidationError, match=where):
        list_services(Answers())  # type: ignore[call-overload]


def test_find_service_matches_name_and_prefix() -> None:
    assert find_service(EXPECTED, "Calculator", "b.") is EXPECTED[1]
    assert find_service(EXPECTED, "Calculator") is None
    assert find_service(EXPECTED, "Inventory") is EXPECTED[3]


def test_the_generated_registration_reads_the_servicers_version() -> None:
    # The servicer's VERSION is the one place the IDL version lives in server.py.
    assert CalculatorServicer.VERSION == "1.2.0"
    assert AsyncCalculatorClient.VERSION == CalculatorClient.VERSION == "1.2.0"
    assert CalculatorClient.SERVICE == AsyncCalculatorClient.SERVICE == "Calculator"
