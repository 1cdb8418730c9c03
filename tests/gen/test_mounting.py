"""Two services with methods of the same name on one server: refused unless asked, and
servable side by side under a prefix (issue 11: `Customers.get` must not run
`Invoices.get`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from helpers import ServerThread, arun, generated_package
from pymprpc import RPC
from pymprpc.server import DuplicateMethodError, Server

SHOP = Path(__file__).resolve().parent / "corpus" / "valid" / "shop.idl"


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[ModuleType]:
    with generated_package(SHOP, tmp_path) as shop:
        yield shop


def _servicers(shop: Any) -> tuple[Any, Any]:
    class Customers(shop.CustomersServicer):  # type: ignore[misc,name-defined]
        def get(self, id: str) -> Any:
            return shop.Customer(id=id, name="customer", email=None)

        def list(self, limit: int = 10) -> Any:
            return []

        def create(self, name: str, email: str | None = None) -> Any:
            return shop.Customer(id="c1", name=name, email=email)

    class Invoices(shop.InvoicesServicer):  # type: ignore[misc,name-defined]
        def get(self, id: str) -> Any:
            return shop.Invoice(id=id, customer_id="c1", lines=[])

        def list(self, customer_id: str) -> Any:
            return []

        def pay(self, id: str) -> bool:
            return True

    return Customers(), Invoices()


def test_a_second_service_may_not_replace_a_method(shop: Any) -> None:
    customers, invoices = _servicers(shop)
    server = Server(("127.0.0.1", 0))
    shop.register_customers(server, customers)
    with pytest.raises(DuplicateMethodError) as info:
        shop.register_invoices(server, invoices)
    message = str(info.value)
    assert "'get' is already registered" in message
    assert "Customers.get" in message and "Invoices.get" in message
    assert "prefix=" in message


def test_replace_must_be_asked_for() -> None:
    server = Server(("127.0.0.1", 0))
    server.register_function(name="ping")(lambda: 1)
    with pytest.raises(DuplicateMethodError):
        server.register_function(name="ping")(lambda: 2)
    server.register_function(name="ping", replace=True)(lambda: 3)


def test_services_share_a_server_under_prefixes(shop: Any) -> None:
    customers, invoices = _servicers(shop)
    server = Server(("127.0.0.1", 0))
    shop.register_customers(server, customers)
    shop.register_invoices(server, invoices, prefix="invoices.")
    with ServerThread(server) as thread:
        with (
            shop.CustomersClient(thread.url) as cust,
            shop.InvoicesClient(thread.url, prefix="invoices.") as inv,
        ):
            assert cust.get("c7").name == "customer"
            assert inv.get("i9").customer_id == "c1"

        async def run() -> None:
            async with shop.AsyncInvoicesClient(thread.url, prefix="invoices.") as inv:
                assert (await inv.get("i3")).id == "i3"
                assert await inv.pay("i3") is True

        arun(run())


def test_a_registration_that_fails_midway_registers_nothing(shop: Any) -> None:
    """`pay` is taken: register_invoices() refuses it after `get` and `list` went in, and
    takes them out again, so the server never serves half of Invoices."""
    _, invoices = _servicers(shop)
    server = Server(("127.0.0.1", 0), max_workers=1)
    server.register_introspection_functions()

    async def pay(id: str) -> str:
        return f"paid elsewhere: {id}"

    server.register_function(pay)
    with pytest.raises(DuplicateMethodError, match="'pay' is already registered"):
        shop.register_invoices(server, invoices)
    assert server.services == ()
    # Served under a prefix afterwards, the whole service is there.
    shop.register_invoices(server, invoices, prefix="invoices.")
    with ServerThread(server) as thread, RPC(thread.url) as rpc:
        names = [n for n in rpc.system.listMethods() if not n.startswith("system.")]
        assert sorted(names) == ["invoices.get", "invoices.list", "invoices.pay", "pay"]
        assert rpc.call("pay", "i1") == "paid elsewhere: i1"
        assert rpc.call("invoices.pay", "i1") is True
