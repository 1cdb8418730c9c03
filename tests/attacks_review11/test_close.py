"""`close()` ends a client until `connect()` (README, "Connections that end": "the client
stays closed until connect() (or await rpc.reconnect()); so does a client after close()"),
also when the server had already closed the idle connection, and in a forked child whose
`close()` is its first act."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from attacks_review11.kit import run_script, serving, wait_until
from pymprpc import RPC, AsyncRPC
from pymprpc.errors import ConnectionLostError


@pytest.mark.timeout(20)
def test_close_while_connected_stays_closed() -> None:
    with serving(timeout=0.3) as running:
        rpc = RPC(running.url, timeout=5)
        rpc.connect()
        assert rpc.echo(1) == 1
        rpc.close()
        with pytest.raises(ConnectionLostError, match="not connected"):
            rpc.echo(2)


@pytest.mark.timeout(20)
def test_blocking_close_after_an_idle_close_stays_closed() -> None:
    with serving(timeout=0.3) as running:
        rpc = RPC(running.url, timeout=5)
        rpc.connect()
        assert rpc.echo(1) == 1
        assert wait_until(lambda: not rpc.connected)  # the server's idle timeout
        rpc.close()
        try:
            with pytest.raises(ConnectionLostError, match="not connected"):
                rpc.echo(2)
            assert not rpc.connected
        finally:
            rpc.close()


@pytest.mark.timeout(20)
def test_async_close_after_an_idle_close_stays_closed() -> None:
    with serving(timeout=0.3) as running:

        async def main() -> None:
            rpc = AsyncRPC(running.url, timeout=5)
            await rpc.connect()
            assert await rpc.echo(1) == 1
            for _ in range(100):
                if not rpc.connected:
                    break
                await asyncio.sleep(0.02)
            await rpc.close()
            try:
                with pytest.raises(ConnectionLostError, match="not connected"):
                    await rpc.echo(2)
            finally:
                await rpc.close()

        asyncio.run(main())
        time.sleep(0.1)


CHILD_CLOSE = """
url = sys.argv[1]
rpc = RPC(url, timeout=5)
rpc.connect()
parent_port = rpc.port()

def child():
    rpc.close()   # done with the client in this worker
    return outcome(lambda: rpc.echo("after close"))

report({"child": in_child(child), "parent": [rpc.echo("p"), rpc.port() == parent_port]})
"""


@pytest.mark.timeout(30)
def test_a_childs_close_before_any_call_stays_closed(tmp_path: Path) -> None:
    with serving() as running:
        [out] = run_script(tmp_path, CHILD_CLOSE, running.url)
    assert out["parent"] == ["p", True]  # holds: the parent's connection is untouched
    assert out["child"][:2] == ["error", "ConnectionLostError"], out["child"]


CLOSE_ON_NEW_LOOP = """
url = sys.argv[1]
rpc = AsyncRPC(url, timeout=5)   # module level

async def serve_requests():
    await rpc.connect()
    return await rpc.echo(1)

async def shutdown_hook():   # another asyncio.run(): the app's shutdown
    await rpc.close()
    try:
        return ["ok", await rpc.echo("after close")]
    except Exception as exc:
        return ["error", type(exc).__name__, str(exc)[:200]]

report([asyncio.run(serve_requests()), asyncio.run(shutdown_hook())])
"""


@pytest.mark.timeout(30)
def test_async_close_on_a_new_loop_stays_closed(tmp_path: Path) -> None:
    with serving() as running:
        [out] = run_script(tmp_path, CLOSE_ON_NEW_LOOP, running.url)
    assert out[0] == 1
    assert out[1][:2] == ["error", "ConnectionLostError"], out[1]
