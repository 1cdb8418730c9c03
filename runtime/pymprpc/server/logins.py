"""Failed-login back-off per peer address and per user name, so passwords cannot be guessed
at thousands of attempts a second."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from ..protocol import Credentials

log = logging.getLogger(__name__)

# Failure records kept per kind (addresses, user names); the least recently failed go
# first beyond it, so a peer inventing addresses or names cannot grow the table.
MAX_TRACKED = 10_000
MAX_BACKOFF = 300.0


@dataclass(slots=True)
class _Failures:
    count: int
    blocked_until: float


class LoginThrottle:
    """Counts consecutive failed logins per address and per user name.

    After `free` failures in a row, every further failure blocks that address and that
    user for `backoff` seconds, doubling each time (at most 300 s). While blocked, a login
    is refused without checking its password. A successful login clears both records.
    """

    def __init__(
        self, free: int = 5, backoff: float = 1.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.free = free
        self.backoff = backoff
        self.clock = clock
        self._by_peer: OrderedDict[str, _Failures] = OrderedDict()
        self._by_user: OrderedDict[str, _Failures] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.backoff > 0

    def blocked(self, peer: str, user: str) -> bool:
        """True if a login from `peer` or as `user` must wait."""
        now = self.clock()
        return any(
            f is not None and f.blocked_until > now
            for f in (self._by_peer.get(peer), self._by_user.get(user))
        )

    def failed(self, peer: str, user: str) -> float:
        """Record a failed login; the seconds the peer/user is now blocked (0: not yet)."""
        now = self.clock()
        wait = 0.0
        for table, key in ((self._by_peer, peer), (self._by_user, user)):
            record = table.pop(key, None) or _Failures(0, 0.0)
            record.count += 1
            if record.count > self.free:
                delay = min(MAX_BACKOFF, self.backoff * 2 ** min(record.count - self.free - 1, 20))
                record.blocked_until = now + delay
                wait = max(wait, delay)
            table[key] = record
            while len(table) > MAX_TRACKED:
                table.popitem(last=False)
        return wait

    def succeeded(self, peer: str, user: str) -> None:
        self._by_peer.pop(peer, None)
        self._by_user.pop(user, None)


class ThrottledCredentials(Credentials):
    """One connection's view of the server's credentials, gated by the login throttle."""

    def __init__(self, credentials: Credentials, throttle: LoginThrottle) -> None:
        # No pairs of its own: every check goes to the server's credentials.
        super().__init__()
        self._credentials = credentials
        self._throttle = throttle
        self.peer = "?"

    def check(self, username: str | None, password: str | None) -> bool:
        throttle, user = self._throttle, username or ""
        if not throttle.enabled:
            if self._credentials.check(username, password):
                return True
            log.warning("failed login as %r from %s", user, self.peer)
            return False
        if throttle.blocked(self.peer, user):
            # Each refusal in a back-off is not news: the failure that started it was.
            log.info("login as %r from %s refused: backing off", user, self.peer)
            return False
        if self._credentials.check(username, password):
            throttle.succeeded(self.peer, user)
            return True
        wait = throttle.failed(self.peer, user)
        log.warning(
            "failed login as %r from %s%s",
            user,
            self.peer,
            f"; further logins from there or as that user refused for {wait:.0f}s" if wait else "",
        )
        return False
