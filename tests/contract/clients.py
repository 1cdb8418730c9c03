"""Both clients behind one blocking interface, so one test checks both: `RPC` directly,
`AsyncRPC` on its own event loop in a thread (every coroutine of it runs on that loop)."""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Callable
from typing import Any

from pymprpc import RPC, AsyncRPC


class SyncClient:
    kind = "sync"

    def __init__(self, url: str, **options: Any) -> None:
        self.rpc = RPC(url, **options)
        self.rpc.connect()

    def run(self, fn: Callable[[Any], Any]) -> Any:
        """fn(rpc) -> its value (a stream is read to a list)."""
        value = fn(self.rpc)
        if inspect.isgenerator(value) or hasattr(value, "__next__"):
            return list(value)
        return value

    def close(self) -> None:
        self.rpc.close()


class AsyncClient:
    kind = "async"

    def __init__(self, url: str, **options: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.rpc = self._submit(self._make(url, options))

    async def _make(self, url: str, options: dict[str, Any]) -> AsyncRPC:
        rpc = AsyncRPC(url, **options)
        await rpc.connect()
        return rpc

    def _submit(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def run(self, fn: Callable[[Any], Any]) -> Any:
        async def go() -> Any:
            value = fn(self.rpc)
            if inspect.isawaitable(value):
                value = await value
            if hasattr(value, "__anext__"):
                return [item async for item in value]
            return value

        return self._submit(go())

    def close(self) -> None:
        try:
            self._submit(self.rpc.close())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


CLIENTS: dict[str, Callable[..., Any]] = {"sync": SyncClient, "async": AsyncClient}
