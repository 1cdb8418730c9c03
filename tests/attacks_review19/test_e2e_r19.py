"""Review 19, end to end: hand-written servicers for corpus files, served and called with
both generated clients and an untyped one."""

from __future__ import annotations

import asyncio
import importlib
import threading
import time
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from pymprpc.client import RPC
from pymprpc.errors import ParamError

from .r19_util import CORPUS, generate, importable, same, serving, show

pytestmark = pytest.mark.timeout(90)
FILES = [
    "payments.idl",
    "common/money.idl",
    "scheduler.idl",
    "defaults_edge.idl",
    "auth.idl",
    "notifications.idl",
]


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    directory = tmp_path_factory.mktemp("r19e2e")
    done = generate([CORPUS / "valid" / f for f in FILES], directory)
    assert done.returncode == 0, show(done)
    with importable(directory):
        yield directory


def _payments_servicer(pay: Any, money: Any) -> Any:
    class Payments(pay.PaymentsServicer):
        def __init__(self) -> None:
            self.store: dict[str, Any] = {}
            self.acks: list[tuple[str, Any]] = []
            self.lock = threading.Lock()

        def authorize(
            self, amount: Any, card: Any, idempotency_key: str = "", capture: bool = False
        ) -> Any:
            state = pay.PaymentState.CAPTURED if capture else pay.PaymentState.AUTHORIZED
            p = pay.Payment(
                id=idempotency_key or f"p{len(self.store)}", amount=amount, state=state, card=card
            )
            with self.lock:
                self.store[p.id] = p
            return p

        async def capture(self, id: str, amount: Any = None) -> Any:
            p = self.store[id]
            return pay.Payment(
                id=id,
                amount=amount or p.amount,
                state=pay.PaymentState.CAPTURED,
                card=p.card,
                retries=[p],
            )

        def refund(self, id: str, amount: Any = None, reason: str = "requested_by_customer") -> Any:
            p = self.store[id]
            return pay.Payment(
                id=id + "-r",
                amount=amount or p.amount,
                state=pay.PaymentState.REFUNDED,
                refund_of=p,
                metadata={"reason": reason},
            )

        async def list_by_state(self, state: Any = None, limit: int = 100) -> AsyncIterator[Any]:
            for p in list(self.store.values())[:limit]:
                if p.state == state:
                    yield p

        def auth_v1(self, amount: int, currency: Any = None) -> str:
            return f"{amount}:{currency!r}"

        def ack_webhook(self, event_id: str, payload: Any) -> None:
            self.acks.append((event_id, payload))

    return Payments()


def test_payments_both_clients(out: Path) -> None:
    pay = importlib.import_module("payments")
    money = importlib.import_module("money")
    servicer = _payments_servicer(pay, money)
    card = pay.Card(
        token=bytes(range(256)), last4="4242", exp_month=12, exp_year=2099, holder="Zoë Ünïcødé 🎉"
    )
    big = money.Money(amount=2**64 - 1, currency=money.Currency.XBT)
    with serving((pay.register_payments, servicer)) as addr:
        with pay.PaymentsClient(addr) as client:
            p = client.authorize(big, card, "key-1")
            assert same(
                p, pay.Payment(id="key-1", amount=big, state=pay.PaymentState.AUTHORIZED, card=card)
            )
            assert client.capture("key-1").state is pay.PaymentState.CAPTURED
            r = client.refund("key-1", money.Money(amount=-(2**63)))
            assert r.refund_of is not None and r.refund_of.card == card
            assert (
                r.metadata == {"reason": "requested_by_customer"}
                and r.amount.currency is money.Currency.EUR
            )
            assert [x.id for x in client.list_by_state(pay.PaymentState.AUTHORIZED)] == ["key-1"]
            assert list(client.list_by_state()) == []
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                assert client.auth_v1(5) == "5:<Currency.EUR: 978>"
            assert any("deprecated" in str(w.message) for w in caught)
            client.ack_webhook("evt", {"nested": [1, None, "ü"]})
            with pytest.raises(ParamError, match=r"authorizePayment\(\): amount: expected Money"):
                client.authorize(5, card)  # type: ignore[arg-type]
            with pytest.raises(ParamError, match=r"card\.last4: expected str, got int"):
                client.authorize(big, pay.Card(token=b"", last4=4242, exp_month=1, exp_year=1))  # type: ignore[arg-type]
            with pytest.raises(ParamError, match=r"capture\(\): id: expected str, got bool"):
                client.capture(True)  # type: ignore[arg-type]

        async def run_async() -> None:
            async with pay.AsyncPaymentsClient(addr) as aclient:
                p2 = await aclient.authorize(big, card, capture=True)
                assert p2.state is pay.PaymentState.CAPTURED
                got = [x.id async for x in aclient.list_by_state()]
                assert got == [p2.id]
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    assert await aclient.auth_v1(7, money.Currency.JPY) == "7:<Currency.JPY: 392>"
                assert any("deprecated" in str(w.message) for w in caught)
                await aclient.ack_webhook("evt2", None)
                with pytest.raises(ParamError, match=r"refund\(\): reason: expected str"):
                    await aclient.refund("x", None, 3)  # type: ignore[arg-type]

        asyncio.run(asyncio.wait_for(run_async(), 30))
        # Wire names: the untyped client calls the names the IDL gave.
        with RPC(addr) as rpc:
            assert (
                rpc.call(
                    "authorizePayment",
                    {"amount": 1, "currency": 840},
                    {"token": b"t", "last4": "1", "exp_month": 1, "exp_year": 2},
                )["state"]
                == 1
            )
        end = time.monotonic() + 5
        while len(servicer.acks) < 2 and time.monotonic() < end:
            time.sleep(0.01)
        assert servicer.acks == [("evt", {"nested": [1, None, "ü"]}), ("evt2", None)]


def test_server_fills_in_defaults_for_untyped_callers(out: Path) -> None:
    dm = importlib.import_module("defaults_edge")
    seen: list[list[Any]] = []

    class Impl(dm.DefaultedServicer):
        def defaults(self, d: Any) -> Any:
            return d

        def params(self, *args: Any, **kwargs: Any) -> list[Any]:
            seen.append([*args, *kwargs.values()])
            return seen[-1]

    with serving((dm.register_defaulted, Impl())) as addr:
        with RPC(addr) as rpc:
            rpc.call("params")
            # A struct with every field left out: the server fills in every default.
            echoed = rpc.call("defaults", {})
        with dm.DefaultedClient(addr) as client:
            typed = client.params()
            full = client.defaults(dm.Defaults())
    expected = [
        -(2**63),
        2**64 - 1,
        -0.0,
        1e308,
        3.0,
        True,
        '\N{SNOWMAN}\t"{}"\\',
        None,
        dm.Edge.MAX,
        dm.Edge.MIN,
        "none",
    ]
    assert same(seen[0], expected), seen[0]
    assert same(seen[1], expected), seen[1]
    assert same(
        typed,
        [
            -(2**63),
            2**64 - 1,
            -0.0,
            1e308,
            3.0,
            True,
            '\N{SNOWMAN}\t"{}"\\',
            None,
            2**64 - 1,
            -(2**63),
            "none",
        ],
    )
    assert same(full, dm.Defaults())
    assert echoed["f_negzero"] == 0.0 and str(echoed["f_negzero"]) == "-0.0"
    assert (
        echoed["i_max"] == 2**64 - 1
        and echoed["s_named"] == "\N{BULLET} \N{GREEK SMALL LETTER ALPHA} \N{EURO SIGN}"
    )


def test_builtin_named_methods(out: Path) -> None:
    s = importlib.import_module("scheduler")

    class Impl(s.SchedulerServicer):
        def type(self, id: str) -> Any:
            return s.JobType.HTTP

        def id(self, type: Any) -> list[str]:
            return [repr(type)]

        def list(self, input: str = "*", format: str = "short") -> Any:
            return [
                s.Job(
                    id=input,
                    format=format,
                    list=["a"],
                    dict={"k": "v"},
                    bytes=b"\x00",
                    object={"x": 1},
                )
            ]

        async def print(self, job: Any, list: Any = None, dict: Any = None) -> str:
            return f"{job.id}:{list}:{dict}"

        def input(self, prompt: str) -> str:
            return prompt[::-1]

        def format(self, spec: str, hash: int = 0) -> str:
            return spec.format(hash)

        def hash(
            self, str: str, int: int = 0, float: float = 0.5, bool: bool = False, bytes: Any = None
        ) -> int:
            return len(str) + int + round(float) + bool + len(bytes or b"")

        async def iter(self, type: Any = None) -> AsyncIterator[Any]:
            yield s.Job(id="1", type=type or s.JobType.SHELL, object=None)

        def exec(self, id: str) -> None:
            pass

        def eval(self, expression: str) -> Any:
            return {"expr": expression}

        def open(self, id: str) -> Any:
            return s.Job(id=id, object=None)

        def len(self) -> int:
            return 2**64 - 1

        def next(self, after: Any = None) -> Any:
            return None

        def dict(self) -> Any:
            return {"j": s.Job(id="j", object=None)}

        def str(self, object: Any) -> str:
            return repr(object)

        def int(self, str: str) -> int:
            return -(2**63)

        def float(self, int: int) -> float:
            return -0.0

        def bytes(self, str: str) -> bytes:
            return str.encode()

        def bool(self, x: Any) -> bool:
            return x is None

        def object(self) -> Any:
            return [1, "2", None]

        def super(self) -> None:
            return None

        def vars(self, globals: Any, locals: Any = None) -> Any:
            return {**globals, **(locals or {})}

    with serving((s.register_scheduler, Impl())) as addr, s.SchedulerClient(addr) as c:
        assert c.type("x") is s.JobType.HTTP
        assert c.id(s.JobType.PYTHON) == ["<JobType.PYTHON: 3>"]
        assert c.list() == [
            s.Job(
                id="*", format="short", list=["a"], dict={"k": "v"}, bytes=b"\x00", object={"x": 1}
            )
        ]
        assert c.print(s.Job(id="j", object=None), ["l"], {"d": "e"}) == "j:['l']:{'d': 'e'}"
        assert c.input("abc") == "cba" and c.format("{}-{{}}", 7) == "7-{}"
        assert c.hash("abc", 1, 2.0, True, b"xy") == 9
        assert [j.type for j in c.iter(s.JobType.HTTP)] == [s.JobType.HTTP]
        c.exec("j")
        assert c.eval("1+1") == {"expr": "1+1"} and c.len() == 2**64 - 1 and c.next() is None
        assert c.dict() == {"j": s.Job(id="j", object=None)} and c.int("x") == -(2**63)
        assert same(c.float(1), -0.0) and c.bytes("é") == "é".encode() and c.bool(None) is True
        assert c.object() == [1, "2", None] and c.super() is None
        assert c.vars({"a": 1}, {"b": [2]}) == {"a": 1, "b": [2]}
        with pytest.raises(ParamError, match=r"hash\(\): int: expected int, got str"):
            c.hash("a", "1")  # type: ignore[arg-type]
        with pytest.raises(ParamError, match=r"float\(\): int: expected int, got bool"):
            c.float(True)
        with pytest.raises(ParamError, match=r"int\(\): str: expected str, got bytes"):
            c.int(b"x")  # type: ignore[arg-type]


def test_oneway_and_wire_names(out: Path) -> None:
    n = importlib.import_module("notifications")
    a = importlib.import_module("auth")
    got: list[Any] = []

    class Notify(n.NotificationsServicer):
        def send(self, notice: Any) -> None:
            got.append(notice)

        def send_many(self, notices: Any, channel: Any = None) -> None:
            got.append((notices, channel))

        def send_legacy(self, to: str, body: str) -> None:
            got.append((to, body))

        def flush(self) -> None:
            got.append("flush")

        def sent(self) -> Any:
            return [x for x in got if isinstance(x, n.Notice)]

    class Auth(a.AuthServicer):
        def login(self, credentials: Any, scopes: Any = None) -> Any:
            return a.Token(
                access=credentials.username.encode(), scopes=scopes or [], factors=[a.Factor.TOTP]
            )

        async def refresh(self, refresh: bytes) -> Any:
            return a.Token(access=refresh[::-1])

        def whoami(self, access: bytes) -> Any:
            return a.Principal(
                id=access.decode(), impersonating=a.Principal(id="root", roles={"admin": True})
            )

        def logout(self, access: bytes) -> None:
            got.append(access)

        def legacy_token(self, username: str, password: str) -> str:
            return username + password

        def unicode_wire(self, x: int) -> int:
            return x + 1

        def punctuated_wire(self, x: int) -> int:
            return x * 2

    notice = n.Notice(to="ü@example.org", body="שלום", channel=n.Channel.PUSH, data={"k": "v"})
    with serving((n.register_notifications, Notify()), (a.register_auth, Auth())) as addr:
        with n.NotificationsClient(addr) as c:
            c.send(notice)
            c.send_many([notice], n.Channel.SMS)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                c.send_legacy("a", "b")
            assert any("deprecated" in str(w.message) for w in caught), (
                "deprecated oneway warns at the call"
            )
            c.flush()
            with pytest.raises(ParamError, match=r"send\(\): notice: expected Notice"):
                c.send({"to": "x"})  # type: ignore[arg-type]
            end = time.monotonic() + 5
            while len(got) < 4 and time.monotonic() < end:
                time.sleep(0.01)
            # Oneway calls run concurrently (several executor threads): in any order.
            expected = [notice, ([notice], n.Channel.SMS), ("a", "b"), "flush"]
            assert sorted(map(repr, got)) == sorted(map(repr, expected))
            assert c.sent() == [notice]
        with a.AuthClient(addr) as ac:
            token = ac.login(a.Credentials(username="zoë", password="pw"), ["read"])
            assert token == a.Token(access="zoë".encode(), scopes=["read"], factors=[a.Factor.TOTP])
            assert ac.whoami(b"me").impersonating == a.Principal(id="root", roles={"admin": True})
            assert ac.unicode_wire(1) == 2 and ac.punctuated_wire(4) == 8
            ac.logout(b"tok")
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                assert ac.legacy_token("u", "p") == "up"
            assert caught
        with RPC(addr) as rpc:
            assert rpc.call("über.straße", 41) == 42
            assert rpc.call("ns:method/v2", 2) == 4
            assert rpc.call("whoAmI", b"x")["id"] == "x"

        async def run() -> None:
            async with a.AsyncAuthClient(addr) as aac:
                assert (await aac.refresh(b"abc")).access == b"cba"
                assert await aac.unicode_wire(-1) == 0

        asyncio.run(asyncio.wait_for(run(), 30))
