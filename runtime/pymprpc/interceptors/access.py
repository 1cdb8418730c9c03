"""`AccessControl`: which users (or roles) may call which methods."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from typing import Any

from ..context import CallContext
from ..errors import RestrictAccessError
from .chain import CallNext

__all__ = ["ANY_USER", "AccessControl"]

ANY_USER = "*"  # in a rule: any authenticated user


class AccessControl:
    """A server interceptor refusing calls with 403 (`RestrictAccessError`) by rule.

    Args:
        rules: method-name pattern (`fnmatch` style: `"admin.*"`, `"delete_*"`) to the
            names allowed to call it: user names, role names (see `roles`), or `ANY_USER`
            (`"*"`: any authenticated user). The first matching pattern decides, in the
            mapping's order.
        roles: user name to the roles that user has.
        default: who may call a method no rule matches; None (the default) lets anyone,
            anonymous connections included.

    Example:
        AccessControl({"admin.*": ["admin"], "*": ["*"]}, roles={"alice": ["admin"]})
        lets alice call `admin.reset`, any logged-in user everything else, and refuses
        anonymous connections.
    """

    def __init__(
        self,
        rules: Mapping[str, Iterable[str]],
        *,
        roles: Mapping[str, Iterable[str]] | None = None,
        default: Iterable[str] | None = None,
    ) -> None:
        self._rules = [(pattern, frozenset(allowed)) for pattern, allowed in rules.items()]
        self._roles = {user: frozenset(r) for user, r in (roles or {}).items()}
        self._default = None if default is None else frozenset(default)

    def allowed(self, user: str | None, method: str) -> bool:
        """Whether `user` (None: anonymous) may call `method`."""
        allowed = self._default
        for pattern, names in self._rules:
            if fnmatch.fnmatchcase(method, pattern):
                allowed = names
                break
        if allowed is None:
            return True
        if user is None:
            return False
        if ANY_USER in allowed or user in allowed:
            return True
        return not allowed.isdisjoint(self._roles.get(user, ()))

    async def __call__(self, ctx: CallContext, call_next: CallNext) -> Any:
        """Refuse the call with 403 unless `ctx.user` may call `ctx.method`."""
        if not self.allowed(ctx.user, ctx.method):
            who = "anonymous callers" if ctx.user is None else f"user {ctx.user!r}"
            raise RestrictAccessError(
                f"{who} may not call {ctx.method!r}: ask the server's operator for access",
                id=ctx.id,
            )
        return await call_next(ctx)
