"""RateLimit: a token bucket per user or peer; 503 with RETRY_AFTER in DATA."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from attacks_review9.kit import Raw, new_server, serving
from pymprpc import RPC, AsyncRPC, Server
from pymprpc.errors import RpcUnavailableException
from pymprpc.interceptors import RateLimit
from pymprpc.testing import client_for

pytestmark = pytest.mark.timeout(30)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def build(limit: RateLimit, **options: Any) -> Server:
    server = new_server(interceptors=[limit], **options)

    @server.register_function()
    async def ping() -> str:
        return "pong"

    @server.register_function()
    async def slow(i: int) -> int:
        await asyncio.sleep(0.2)
        return i

    return server


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rate": 0},
        {"rate": -1},
        {"rate": float("nan")},
        {"rate": float("inf")},
        {"rate": 1, "burst": 0.5},
        {"rate": 1, "burst": float("nan")},
        {"rate": 1, "per": "host"},
    ],
)
def test_bad_settings_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        RateLimit(**kwargs)


def test_retry_after_is_enough() -> None:
    clock = Clock()
    limit = RateLimit(rate=3, burst=1, clock=clock)
    with serving(build(limit)) as running, RPC(running.url, timeout=5) as rpc:
        assert rpc.ping() == "pong"
        with pytest.raises(RpcUnavailableException) as info:
            rpc.ping()
        retry_after = info.value.data["RETRY_AFTER"]
        assert retry_after > 0
        clock.now += retry_after  # the client waited exactly what it was told
        assert rpc.ping() == "pong"


def test_negative_max_keys_refused_or_harmless() -> None:
    try:
        limit = RateLimit(rate=100, max_keys=-1)
    except ValueError:
        return
    with serving(build(limit)) as running, RPC(running.url, timeout=5) as rpc:
        assert rpc.ping() == "pong"


def test_pipelined_calls_over_the_burst_fail_alone() -> None:
    async def main() -> None:
        async with client_for(build(RateLimit(rate=0.01, burst=3)), AsyncRPC, timeout=5) as rpc:
            results = await asyncio.gather(*[rpc.slow(i) for i in range(8)], return_exceptions=True)
            ok = [r for r in results if not isinstance(r, BaseException)]
            refused = [r for r in results if isinstance(r, RpcUnavailableException)]
            assert len(ok) == 3 and len(refused) == 5
            for exc in refused:
                assert exc.data["RETRY_AFTER"] > 90

    asyncio.run(main())


def test_threads_sharing_a_blocking_client() -> None:
    with (
        serving(build(RateLimit(rate=0.01, burst=2))) as running,
        RPC(running.url, timeout=5) as rpc,
    ):
        out: list[Any] = []

        def call(i: int) -> None:
            try:
                out.append(rpc.slow(i))
            except RpcUnavailableException as exc:
                out.append(exc)

        threads = [threading.Thread(target=call, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sum(isinstance(x, int) for x in out) == 2
        assert sum(isinstance(x, RpcUnavailableException) for x in out) == 4


def test_per_user_and_per_peer() -> None:
    users = [("alice", "a"), ("bob", "b")]
    for per, expect_bob in (("user", "pong"), ("peer", RpcUnavailableException)):
        limit = RateLimit(rate=0.01, burst=1, per=per)
        with serving(build(limit, auth=users)) as running:
            with RPC(running.url_for("alice", "a"), timeout=5) as alice:
                assert alice.ping() == "pong"
                with pytest.raises(RpcUnavailableException):
                    alice.ping()
            with RPC(running.url_for("bob", "b"), timeout=5) as bob:
                if expect_bob == "pong":
                    assert bob.ping() == "pong"
                else:
                    with pytest.raises(RpcUnavailableException):
                        bob.ping()


def test_peers_beyond_max_keys_are_forgotten_not_kept() -> None:
    """Distinct loopback source addresses are distinct peers; the limiter keeps at most
    max_keys buckets, so the first peer's bucket is forgotten (a fresh burst)."""
    limit = RateLimit(rate=0.001, burst=1, per="peer", max_keys=4)
    with serving(build(limit)) as running:

        def call(source: str) -> int:
            with Raw(running.server.port, source=source) as raw:
                raw.login()
                raw.call("x", "ping")
                return int(raw.recv()["CODE"])

        assert call("127.0.0.2") == 200
        assert call("127.0.0.2") == 503
        for n in range(3, 40):
            assert call(f"127.0.0.{n}") == 200
        assert call("127.0.0.2") == 200  # forgotten: the table held no more than 4


def test_an_absurdly_low_rate_still_answers_a_finite_retry_after() -> None:
    """`round()` gave inf for rate=1e-320; the rounding up that replaced it must not
    raise (OverflowError) and fail the call with 404 instead of 503."""
    limit = RateLimit(rate=1e-320, burst=1)
    with serving(build(limit)) as running, RPC(running.url, timeout=5) as rpc:
        assert rpc.ping() == "pong"
        with pytest.raises(RpcUnavailableException) as info:
            rpc.ping()
        assert info.value.code == 503
        assert 0 < info.value.data["RETRY_AFTER"] <= 1e9
