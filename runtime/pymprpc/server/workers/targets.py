"""The functions and instances one server's process workers can call, by key."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any


class TargetTable:
    """Key -> function or instance, for one server.

    Workers are forked from a process holding this table, so they call targets by key
    and nothing is pickled but arguments and results. `version` changes with every
    publication; the pool compares it with the version its workers were forked at.
    """

    def __init__(self) -> None:
        self._targets: dict[str, Any] = {}
        self._published: dict[str, int] = {}  # key -> version that published it
        self.version = 0
        self._listeners: list[Callable[[], None]] = []

    def publish(self, key: str, target: Any) -> None:
        """Make `target` callable by `key` in workers forked from now on."""
        self._targets[key] = target
        self.version += 1
        self._published[key] = self.version
        for listener in self._listeners:
            listener()

    def listen(self, listener: Callable[[], None]) -> None:
        """Call `listener()` after every publication."""
        self._listeners.append(listener)

    def changes_since(self, version: int) -> dict[str, Any]:
        """The targets published after `version`."""
        return {k: self._targets[k] for k, v in self._published.items() if v > version}

    def snapshot(self) -> dict[str, Any]:
        """The table as it is now (what a worker forked now sees)."""
        return dict(self._targets)


def resolve(targets: dict[str, Any], key: str, path: Sequence[str]) -> Callable[..., Any]:
    """The callable at `path` below the target published as `key`."""
    target = targets[key]
    for part in path:
        target = getattr(target, part)
    return target  # type: ignore[no-any-return]
