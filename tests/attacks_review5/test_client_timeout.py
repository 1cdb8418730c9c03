"""`rpc.timeout` is a public attribute read and assigned at any time: the next calls use
it, through every way of calling (proxies made earlier, call(), typed clients); and the
per-client state behind it is not shared with anything else."""

from __future__ import annotations

import asyncio
import copy
import pickle
from typing import Any

import pytest

from pymprpc import AsyncRPC
from pymprpc.errors import DeadlineExceeded

from .kit import Probe, run_on, serving, url

pytestmark = pytest.mark.timeout(30)


def test_timeout_set_before_connect_applies(loop: str) -> None:
    async def main() -> None:
        async with serving(Probe()) as server:
            rpc = AsyncRPC(url(server))
            rpc.timeout = 0.1
            async with rpc:
                with pytest.raises(DeadlineExceeded):
                    await rpc.sleep(2)
                assert await rpc.add(1, 2) == 3

    run_on(loop, main)


def test_timeout_set_after_connect_applies_to_proxy_made_earlier(loop: str) -> None:
    async def main() -> None:
        async with serving(Probe()) as server, AsyncRPC(url(server)) as rpc:
            sleep = rpc.sleep  # cached proxy, made with no deadline
            named = rpc.method("sleep")
            assert await sleep(0.01) == 0.01
            rpc.timeout = 0.1
            with pytest.raises(DeadlineExceeded):
                await sleep(2)
            with pytest.raises(DeadlineExceeded):
                await named(2)
            with pytest.raises(DeadlineExceeded):
                await rpc.call("sleep", 2)
            rpc.timeout = None
            assert await sleep(0.3) == 0.3

    run_on(loop, main)


def test_timeout_set_at_construction_then_cleared(loop: str) -> None:
    async def main() -> None:
        async with serving(Probe()) as server, AsyncRPC(url(server), timeout=0.05) as rpc:
            sleep = rpc.sleep
            with pytest.raises(DeadlineExceeded):
                await sleep(2)
            rpc.timeout = None
            assert await sleep(0.2) == 0.2
            assert rpc.timeout is None

    run_on(loop, main)


def test_dotted_proxy_made_earlier_follows_timeout(loop: str) -> None:
    async def main() -> None:
        async with serving(Probe()) as server, AsyncRPC(url(server)) as rpc:
            proxy = rpc.system.listMethods
            assert "sleep" in await proxy()
            sleep = rpc.method("sleep")
            rpc.timeout = 0.05
            with pytest.raises(DeadlineExceeded):
                await sleep(1)

    run_on(loop, main)


def test_with_options_overrides_the_default_both_ways(loop: str) -> None:
    async def main() -> None:
        async with serving(Probe()) as server, AsyncRPC(url(server)) as rpc:
            long = rpc.method("sleep").with_options(timeout=5)
            short = rpc.method("sleep").with_options(timeout=0.05)
            none = rpc.method("sleep").with_options(timeout=None)
            rpc.timeout = 0.05
            assert await long(0.2) == 0.2
            assert await none(0.2) == 0.2
            rpc.timeout = None
            with pytest.raises(DeadlineExceeded):
                await short(1)

    run_on(loop, main)


def test_timeout_with_an_interceptor(loop: str) -> None:
    seen: list[Any] = []

    async def interceptor(ctx: Any, call_next: Any) -> Any:
        seen.append(ctx.timeout)
        return await call_next(ctx)

    async def main() -> None:
        async with (
            serving(Probe()) as server,
            AsyncRPC(url(server), interceptors=[interceptor]) as rpc,
        ):
            sleep = rpc.sleep
            rpc.timeout = 0.05
            with pytest.raises(DeadlineExceeded):
                await sleep(1)
            with pytest.raises(DeadlineExceeded):
                await rpc.call("sleep", 1)
        assert seen == [0.05, 0.05]

    run_on(loop, main)


def test_timeout_change_does_not_shorten_a_call_in_flight(loop: str) -> None:
    async def main() -> None:
        async with serving(Probe()) as server, AsyncRPC(url(server)) as rpc:
            first = asyncio.ensure_future(rpc.sleep(0.3))
            await asyncio.sleep(0.01)
            rpc.timeout = 0.05
            with pytest.raises(DeadlineExceeded):
                await rpc.sleep(1)
            assert await first == 0.3

    run_on(loop, main)


def test_zero_timeout_fails_at_once_and_client_stays_usable(loop: str) -> None:
    async def main() -> None:
        async with serving(Probe()) as server, AsyncRPC(url(server)) as rpc:
            rpc.timeout = 0
            with pytest.raises(DeadlineExceeded):
                await rpc.sleep(0.5)
            rpc.timeout = 5
            assert await rpc.add(2, 3) == 5

    run_on(loop, main)


def test_two_clients_timeouts_are_independent(loop: str) -> None:
    async def main() -> None:
        async with (
            serving(Probe()) as server,
            AsyncRPC(url(server)) as a,
            AsyncRPC(url(server)) as b,
        ):
            a.timeout = 0.05
            assert b.timeout is None
            res = await asyncio.gather(a.sleep(0.3), b.sleep(0.3), return_exceptions=True)
            assert isinstance(res[0], DeadlineExceeded) and res[1] == 0.3
            b.timeout = 0.05
            a.timeout = None
            res = await asyncio.gather(a.sleep(0.3), b.sleep(0.3), return_exceptions=True)
            assert res[0] == 0.3 and isinstance(res[1], DeadlineExceeded)

    run_on(loop, main)


def test_typed_client_follows_rpc_timeout(loop: str) -> None:
    pytest.importorskip("generated_examples.calculator.client")
    from generated_examples.calculator.client import AsyncCalculatorClient
    from generated_examples.calculator.server import CalculatorServicer, register_calculator

    class Calc(CalculatorServicer):
        def add(self, a: int, b: int) -> int:
            return a + b

        async def slow_add(self, a: int, b: int = 1) -> int:
            await asyncio.sleep(0.5)
            return a + b

        async def count(self, n: int) -> Any:
            for i in range(n):
                yield i

        def area(self, shape: Any) -> float:
            return 0.0

        def old_add(self, a: int, b: int) -> int:
            return a + b

        def log(self, line: str) -> None:
            return None

        async def translate(self, shape: Any, dx: float = 0.0, dy: float = 0.0) -> Any:
            return shape

    async def main() -> None:
        from pymprpc.server import Server
        from pymprpc.testing import server_url

        server = Server(("127.0.0.1", 0), grace_period=0.5)
        register_calculator(server, Calc())
        await server.start()
        try:
            async with AsyncCalculatorClient(server_url(server)) as client:
                assert await client.add(1, 2) == 3
                client.rpc.timeout = 0.05
                with pytest.raises(DeadlineExceeded):
                    await client.slow_add(1, 2)
                client.rpc.timeout = None
                assert await client.slow_add(1, 2) == 3
        finally:
            await server.close()

    run_on(loop, main)


# -- the state object vs. what users do with a client object -----------------------------


def test_vars_and_getattr_agree_on_timeout() -> None:
    rpc = AsyncRPC("tcp://127.0.0.1:1", timeout=3)
    assert getattr(rpc, "timeout") == 3  # noqa: B009
    assert rpc.timeout == 3


def test_vars_still_shows_timeout() -> None:
    rpc = AsyncRPC("tcp://127.0.0.1:1", timeout=3)
    assert vars(rpc)["timeout"] == 3


def test_copy_copy_has_its_own_timeout() -> None:
    rpc = AsyncRPC("tcp://127.0.0.1:1", timeout=3)
    twin = copy.copy(rpc)
    twin.timeout = 9
    assert rpc.timeout == 3 and twin.timeout == 9


def test_deepcopy_has_its_own_timeout() -> None:
    rpc = AsyncRPC("tcp://127.0.0.1:1", timeout=3)
    twin = copy.deepcopy(rpc)
    twin.timeout = 9
    assert rpc.timeout == 3 and twin.timeout == 9


def test_pickle_round_trip_keeps_timeout_and_is_independent() -> None:
    rpc = AsyncRPC("tcp://u:p@127.0.0.1:1", timeout=3)
    twin = pickle.loads(pickle.dumps(rpc))
    assert twin.timeout == 3
    twin.timeout = 1
    assert rpc.timeout == 3


def test_pickled_client_connects_and_times_out(loop: str) -> None:
    async def main() -> None:
        async with serving(Probe()) as server:
            rpc = pickle.loads(pickle.dumps(AsyncRPC(url(server), timeout=0.05)))
            async with rpc:
                with pytest.raises(DeadlineExceeded):
                    await rpc.sleep(1)
                rpc.timeout = None
                assert await rpc.add(1, 1) == 2

    run_on(loop, main)


def test_unknown_attribute_is_still_a_method_proxy() -> None:
    rpc = AsyncRPC("tcp://127.0.0.1:1")
    assert callable(rpc.some_method)
    with pytest.raises(AttributeError):
        rpc._nope  # noqa: B018


# -- subclasses ------------------------------------------------------------------------


def test_subclass_sets_timeout_before_super_init() -> None:
    class Mine(AsyncRPC):
        def __init__(self, addr: str) -> None:
            self.timeout = 5
            super().__init__(addr, timeout=self.timeout)

    assert Mine("tcp://127.0.0.1:1").timeout == 5


def test_subclass_sets_timeout_after_super_init(loop: str) -> None:
    class Mine(AsyncRPC):
        def __init__(self, addr: str) -> None:
            super().__init__(addr)
            self.timeout = 0.05

    async def main() -> None:
        async with serving(Probe()) as server, Mine(url(server)) as rpc:
            with pytest.raises(DeadlineExceeded):
                await rpc.sleep(1)

    run_on(loop, main)


def test_subclass_other_attributes_before_super_init(loop: str) -> None:
    class Mine(AsyncRPC):
        def __init__(self, addr: str) -> None:
            self.label = "mine"
            self.calls: list[str] = []
            super().__init__(addr, timeout=0.05)

    async def main() -> None:
        async with serving(Probe()) as server, Mine(url(server)) as rpc:
            assert rpc.label == "mine"
            with pytest.raises(DeadlineExceeded):
                await rpc.sleep(1)

    run_on(loop, main)


def test_subclass_with_class_level_timeout_default(loop: str) -> None:
    class Mine(AsyncRPC):
        timeout = 7.0

    async def main() -> list[str]:
        out = []
        async with serving(Probe()) as server, Mine(url(server)) as rpc:
            rpc.timeout = 0.05
            for how in (lambda: rpc.call("sleep", 0.5), lambda: rpc.sleep(0.5)):
                try:
                    await how()
                    out.append("no-deadline")
                except DeadlineExceeded:
                    out.append("deadline")
        return out

    assert run_on(loop, main) == ["deadline", "deadline"]


def test_subclass_with_its_own_timeout_property(loop: str) -> None:
    class Mine(AsyncRPC):
        @property
        def timeout(self) -> float | None:
            return self.__dict__.get("_mine")

        @timeout.setter
        def timeout(self, value: float | None) -> None:
            self.__dict__["_mine"] = None if value is None else min(value, 0.05)

    async def main() -> list[str]:
        out = []
        async with serving(Probe()) as server, Mine(url(server), timeout=10) as rpc:
            assert rpc.timeout == 0.05
            for how in (lambda: rpc.call("sleep", 0.5), lambda: rpc.sleep(0.5)):
                try:
                    await how()
                    out.append("no-deadline")
                except DeadlineExceeded:
                    out.append("deadline")
        return out

    assert run_on(loop, main) == ["deadline", "deadline"]


def test_subclass_with_slots_and_extra_state(loop: str) -> None:
    class Mine(AsyncRPC):
        extra = "class"

    async def main() -> None:
        async with serving(Probe()) as server, Mine(url(server), timeout=0.05) as rpc:
            rpc.extra = "instance"
            with pytest.raises(DeadlineExceeded):
                await rpc.sleep(1)
            assert Mine.extra == "class"

    run_on(loop, main)
