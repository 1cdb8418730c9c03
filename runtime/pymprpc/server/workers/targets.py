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
        self.version = 0
        self._listeners: list[Callable[[Any], None]] = []

    def publish(self, key: str, target: Any, executor: Any = None) -> None:
        """Make `target` callable by `key` in workers forked from now on.

        `executor` is the method's own executor choice (None: the server's default);
        listeners use it to tell whether process workers will need the target.
        """
        self._targets[key] = target
        self.version += 1
        for listener in self._listeners:
            listener(executor)

    def listen(self, listener: Callable[[Any], None]) -> None:
        """Call `listener(executor)` after every publication."""
        self._listeners.append(listener)

    def snapshot(self) -> dict[str, Any]:
        """The table as it is now (what a worker forked now sees)."""
        return dict(self._targets)


def resolve(targets: dict[str, Any], key: str, path: Sequence[str]) -> Callable[..., Any]:
    """The callable at `path` below the target published as `key`."""
    target = targets[key]
    for part in path:
        target = getattr(target, part)
    return target  # type: ignore[no-any-return]
