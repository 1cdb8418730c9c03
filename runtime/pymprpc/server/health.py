"""Health state answered by `system.health`: per service name, settable by the application."""

from __future__ import annotations

import enum
import threading

__all__ = ["Health", "HealthStatus"]


class HealthStatus(enum.StrEnum):
    """What `system.health(service)` answers (the strings are what goes on the wire)."""

    SERVING = "SERVING"
    NOT_SERVING = "NOT_SERVING"
    UNKNOWN = "UNKNOWN"  # a service name nobody has set


class Health:
    """The health of a server and of the services it hosts.

    The overall status (service name `""`) is SERVING while the server runs; every name is
    NOT_SERVING once the server starts draining (shutdown), whatever was set, so a load
    balancer stops sending new connections before any is refused. Names never set answer
    UNKNOWN. `set` may be called from any thread.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._status: dict[str, HealthStatus] = {"": HealthStatus.SERVING}
        self._draining = False

    def set(self, service: str, status: HealthStatus | str) -> None:
        """Set the status of `service` (`""`: the server as a whole).

        Raises:
            ValueError: `status` is not SERVING, NOT_SERVING or UNKNOWN.
        """
        if not isinstance(service, str):
            raise TypeError(f"service must be a str, got {type(service).__name__}")
        value = HealthStatus(status)
        with self._lock:
            self._status[service] = value

    def get(self, service: str = "") -> HealthStatus:
        """The status `system.health(service)` answers now."""
        with self._lock:
            if self._draining:
                return HealthStatus.NOT_SERVING
            return self._status.get(service, HealthStatus.UNKNOWN)

    def set_draining(self, draining: bool) -> None:
        """Called by the server when it starts (False) and starts shutting down (True)."""
        with self._lock:
            self._draining = draining

    def snapshot(self) -> dict[str, str]:
        """Every service name set, with the status `get` would answer."""
        with self._lock:
            names = list(self._status)
        return {name: str(self.get(name)) for name in names}
