"""Review7 kit: a user's own interface file (a warehouse, with names that collide with
builtins and odd doc comments), generated with mprpcgen and imported, and its servicer."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from helpers import on_sys_path
from mprpcgen.cli import main

IDL = r'''
// whr7.idl: a user's warehouse
/// Kinds of stock movement: "double", 'single', """triple""", a \ backslash, café ✓ */.
enum Type {
    INBOUND = 1;
    OUTBOUND = 2;
}

/// A stock movement. """ inside a docstring
struct Movement {
    id: int;
    type: Type;
    sku: str;
    quantity: int;
    context: map<str, any> = {};
    result: str?;
}

/// The warehouse. Trailing backslash \
service Warehouse version "2.1" {
    /// Record a movement; returns the new on-hand quantity.
    def record(movement: Movement) -> int;
    /// SKUs, optionally of one type.
    def list(type: Type? = none, limit: int = 100) -> list<str>;
    /// Method named like a soft keyword.
    async def type(type: Type) -> str;
    /// Ticks forever, until the caller stops reading.
    stream ticks(interval: float = 0.01) -> int;
    /// Sleep on the loop.
    async def sleep(seconds: float) -> float;
    /// Sleep in a thread.
    def block(seconds: float) -> float;
    /// Fire and forget.
    oneway def audit(line: str);
}
'''

NAME = "whr7"


@contextlib.contextmanager
def warehouse_package() -> Iterator[ModuleType]:
    """The package generated from IDL, imported for the block (server side loaded)."""
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        (directory / f"{NAME}.idl").write_text(IDL)
        assert main([str(directory / f"{NAME}.idl"), "-o", str(directory)]) == 0
        with on_sys_path(directory, NAME):
            module = importlib.import_module(NAME)
            importlib.import_module(f"{NAME}.server")
            yield module


def make_servicer(pkg: ModuleType) -> Any:
    """A stateful servicer of the generated `WarehouseServicer`."""

    class Warehouse(pkg.WarehouseServicer):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            self.lock = threading.Lock()
            self.stock: dict[str, int] = {}
            self.kinds: dict[str, set[int]] = {}
            self.ticks_running = 0
            self.ticks_done = 0
            self.audit_lines: list[str] = []

        def record(self, movement: Any) -> int:
            with self.lock:
                sign = -1 if movement.type == pkg.Type.OUTBOUND else 1
                sku = movement.sku
                self.stock[sku] = self.stock.get(sku, 0) + sign * movement.quantity
                self.kinds.setdefault(sku, set()).add(int(movement.type))
                return self.stock[sku]

        def list(self, type: Any = None, limit: int = 100) -> Any:
            with self.lock:
                skus = [s for s in sorted(self.stock) if type is None or type in self.kinds[s]]
                return skus[:limit]

        async def type(self, type: Any) -> str:
            return str(type.name)

        async def ticks(self, interval: float = 0.01) -> AsyncIterator[int]:
            self.ticks_running += 1
            try:
                i = 0
                while True:
                    yield i
                    i += 1
                    await asyncio.sleep(interval)
            finally:
                self.ticks_running -= 1
                self.ticks_done += 1

        async def sleep(self, seconds: float) -> float:
            await asyncio.sleep(seconds)
            return seconds

        def block(self, seconds: float) -> float:
            time.sleep(seconds)
            return seconds

        def audit(self, line: str) -> None:
            with self.lock:
                self.audit_lines.append(line)

    return Warehouse()
