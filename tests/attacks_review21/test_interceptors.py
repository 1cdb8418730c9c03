"""Review 21: the README's production interceptors in its own order (AccessLog first,
then RateLimit and AccessControl): what the client gets is what AccessLog records, and
a rate-limited call fails alone. Real servers on 127.0.0.1 (ephemeral ports)."""

from __future__ import annotations

import asyncio

import pytest
from review_fixtures import client_run

from pymprpc import AsyncRPC, Server
from pymprpc.errors import RestrictAccessError, RpcUnavailableException
from pymprpc.interceptors import AccessControl, AccessLog, RateLimit
from pymprpc.testing import client_for

from .test_observability import access_codes

pytestmark = pytest.mark.timeout(20)


def test_refusals_are_logged_with_the_code_the_client_got(loop: str) -> None:
    server = Server(
        ("127.0.0.1", 0),
        auth=[("alice", "a-pw"), ("bob", "b-pw")],
        grace_period=0.5,
        interceptors=[
            AccessLog(),
            RateLimit(rate=0.001, burst=2, per="user"),
            AccessControl({"admin.*": ["admin"], "*": ["*"]}, roles={"alice": ["admin"]}),
        ],
    )

    async def whoami() -> str:
        await asyncio.sleep(0.2)
        return "ok"

    async def reset() -> str:
        return "reset"

    server.register_function("whoami")(whoami)
    server.register_function("admin.reset")(reset)

    async def main() -> tuple[dict[str, int], float, str]:
        with access_codes() as codes:
            async with client_for(server, AsyncRPC, user="bob", password="b-pw") as rpc:
                with pytest.raises(RestrictAccessError):
                    await rpc.admin.reset()
                assert codes["admin.reset"] == 403
                slow = asyncio.ensure_future(rpc.whoami())  # the bucket's last token
                await asyncio.sleep(0.05)
                with pytest.raises(RpcUnavailableException) as limited:
                    await rpc.whoami()
                logged_503 = dict(codes)
                value = await slow  # the other call on the connection is not failed
            await asyncio.sleep(0.05)
            return logged_503, float(limited.value.data["RETRY_AFTER"]), value

    logged, retry_after, value = client_run(loop, main(), timeout=15)
    assert logged == {"admin.reset": 403, "whoami": 503}
    assert retry_after > 0
    assert value == "ok"
