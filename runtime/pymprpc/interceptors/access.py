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


def _names(names: Iterable[str], where: str) -> frozenset[str]:
    """`names` as a set; a lone string is refused (its letters would be the names)."""
    if isinstance(names, str | bytes):
        raise TypeError(
            f"AccessControl {where} must be a list of names, not the string {names!r}: "
            f"write [{names!r}]"
        )
    return frozenset(names)


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

    Raises:
        TypeError: a list of names given as one string (`{"admin.*": "alice"}`).
    """

    def __init__(
        self,
        rules: Mapping[str, Iterable[str]],
        *,
        roles: Mapping[str, Iterable[str]] | None = None,
        default: Iterable[str] | None = None,
    ) -> None:
        self._rules = [
            (pattern, _names(allowed, f"rules[{pattern!r}]")) for pattern, allowed in rules.items()
        ]
        self._roles = {user: _names(r, f"roles[{user!r}]") for user, r in (roles or {}).items()}
        self._default = None if default is None else _names(default, "default")

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
