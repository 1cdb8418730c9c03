"""Review 25: a corpus of interface files as different users write them (payments,
telemetry, chat, a game lobby, CI, maps, a ledger, an ML server, an IoT fleet, a library,
plus names that collide with builtins, typing names and the generated code's own), generated
in one run: mypy --strict, ruff, import, and a round trip of every method through a real
server with both clients."""

from __future__ import annotations

import importlib
import inspect
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from .r25_util import (
    CORPUS,
    generate,
    importable,
    mypy_strict,
    packages,
    round_trip,
    ruff_defaults,
    ruff_project,
    show,
)

FILES = sorted(CORPUS.glob("*.idl"))
PACKAGES = sorted(p.stem for p in FILES)


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("r25corpus")
    done = generate(FILES, target)
    assert done.returncode == 0, show(done)
    return target


@pytest.fixture(scope="module")
def imported(out: Path) -> Iterator[Path]:
    with importable(out):
        yield out


def test_corpus_is_broad() -> None:
    assert len(FILES) >= 15


@pytest.mark.timeout(60)
def test_one_package_per_file(out: Path) -> None:
    assert packages(out) == PACKAGES


@pytest.mark.timeout(120)
def test_mypy_strict(out: Path, tmp_path: Path) -> None:
    done = mypy_strict(out, tmp_path / "cache")
    assert done.returncode == 0, show(done)


@pytest.mark.timeout(60)
def test_ruff_defaults(out: Path) -> None:
    done = ruff_defaults(out)
    assert done.returncode == 0, show(done)


@pytest.mark.timeout(60)
def test_ruff_project_rules(out: Path) -> None:
    done = ruff_project(out)
    assert done.returncode == 0, show(done)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", PACKAGES)
def test_round_trip(imported: Path, name: str) -> None:
    package = importlib.import_module(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # @deprecated methods warn (ExpireWarning)
        problems = round_trip(package, seed=len(name))
    assert not problems, "\n".join(problems)


@pytest.mark.timeout(60)
def test_typed_values_come_back_as_classes(imported: Path) -> None:
    """A struct comes back as its dataclass, an enum as its IntEnum, nested too."""
    from money_types import Currency, Money
    from payments import PaymentsClient, PaymentsServicer, register_payments
    from payments.types import Payment, PaymentState

    from .r25_util import serving

    class Impl(PaymentsServicer):
        def charge(
            self, amount: Money, idempotency_key: str, capture: bool = True, type: str = "card"
        ) -> Payment:
            return Payment(id=idempotency_key, amount=amount, refunds=[amount], type=type)

        async def refund(self, id: str, amount: Money | None = None) -> Payment:
            raise NotImplementedError

        async def get(self, id: str) -> Payment | None:
            return None

        async def list(self, state: PaymentState = PaymentState.CAPTURED, limit: int = 100):  # type: ignore[no-untyped-def]
            for i in range(limit):
                yield Payment(id=str(i), amount=Money(cents=i), state=state)

        def audit(self, line: str, level: int = 20) -> None:
            pass

        def legacy_charge(self, cents: int, currency: Currency = Currency.EUR) -> str:
            return currency.name

    with serving((register_payments, Impl())) as addr, PaymentsClient(addr) as client:
        got = client.charge(Money(cents=5, currency=Currency.JPY), "k")
        assert type(got) is Payment and type(got.amount) is Money
        assert got.amount.currency is Currency.JPY and got.state is PaymentState.PENDING
        assert got.refunds == [Money(cents=5, currency=Currency.JPY)] and got.type == "card"
        items = list(client.list(limit=3))
        assert [p.state for p in items] == [PaymentState.CAPTURED] * 3
        assert all(type(p.amount.currency) is Currency for p in items)
        assert client.get("x") is None
        with pytest.warns(Warning, match="deprecated"):
            assert client.legacy_charge(1) == "EUR"
    assert inspect.getdoc(PaymentsServicer.charge) == "Charge `amount`; returns the payment."
