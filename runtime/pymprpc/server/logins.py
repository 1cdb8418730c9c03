"""Failed-login back-off per peer address and per user name, so passwords cannot be guessed
at thousands of attempts a second."""

from __future__ import annotations

import hashlib
import logging
import secrets
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
# A record whose last failure is this old is forgotten (its back-off has long run out).
FORGET_AFTER = 2 * MAX_BACKOFF
# Longer user names are kept as a digest, so a record costs the same for any name.
MAX_KEY_CHARS = 64

# Keys the digests of user names, so a digest in a log cannot be checked against guessed
# passwords (a user may type the password into the user name field).
_SALT = secrets.token_bytes(16)


def _digest(text: str) -> str:
    data = text.encode("utf-8", "surrogatepass")
    return hashlib.blake2b(data, digest_size=8, key=_SALT).hexdigest()


def _key(text: str) -> str:
    # NUL cannot start a name anyone types: a digest key never equals a short name.
    return text if len(text) <= MAX_KEY_CHARS else "\0" + _digest(text)


@dataclass(slots=True)
class _Failures:
    count: int
    blocked_until: float
    last: float


class LoginThrottle:
    """Counts consecutive failed logins per address and per user name.

    After `free` failures in a row, every further failure blocks that address and that
    user for `backoff` seconds, doubling each time (at most 300 s). While blocked, a login
    is refused without checking its password. A successful login clears both records.

    Memory is bounded whatever peers send: at most `MAX_TRACKED` records per kind, user
    names longer than `MAX_KEY_CHARS` kept as a digest, records forgotten `FORGET_AFTER`
    seconds after their last failure.
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
            for f in (self._by_peer.get(peer), self._by_user.get(_key(user)))
        )

    def failed(self, peer: str, user: str) -> float:
        """Record a failed login; the seconds the peer/user is now blocked (0: not yet)."""
        now = self.clock()
        wait = 0.0
        for table, key in ((self._by_peer, peer), (self._by_user, _key(user))):
            # Least recently failed first: forget the stale ones from the front.
            while table and next(iter(table.values())).last < now - FORGET_AFTER:
                table.popitem(last=False)
            record = table.pop(key, None) or _Failures(0, 0.0, now)
            record.count += 1
            record.last = now
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
        self._by_user.pop(_key(user), None)

    def tracked(self) -> tuple[int, int]:
        """How many (address, user name) failure records are kept."""
        return len(self._by_peer), len(self._by_user)


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
            log.warning("failed login as %s from %s", self._shown(user), self.peer)
            return False
        if throttle.blocked(self.peer, user):
            # Each refusal in a back-off is not news: the failure that started it was.
            log.info("login as %s from %s refused: backing off", self._shown(user), self.peer)
            return False
        if self._credentials.check(username, password):
            throttle.succeeded(self.peer, user)
            return True
        wait = throttle.failed(self.peer, user)
        log.warning(
            "failed login as %s from %s%s",
            self._shown(user),
            self.peer,
            f"; further logins from there or as that user refused for {wait:g}s" if wait else "",
        )
        return False

    def _shown(self, user: str) -> str:
        """The user name as logged: only a configured account's name; any other text may
        be a password typed into the wrong field, so it is shown as a keyed digest (the
        same within a server run, to tell repeated attempts apart)."""
        if self._credentials.knows(user):
            return repr(user)
        return f"an unknown user (#{_digest(user)})"
