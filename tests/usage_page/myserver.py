"""The usage page's `MyMPRPCServer`: a `Server` subclass whose docstring is the description.

The page's clients log in as admin/admin, so this subclass accepts those credentials.
"""

from __future__ import annotations

from typing import Any

from pymprpc.server import Server


class MyMPRPCServer(Server):
    """Example service of the pymprpc usage page."""

    def __init__(self, addr: tuple[str, int], **kwargs: Any) -> None:
        kwargs.setdefault("auth", [("admin", "admin")])
        kwargs.setdefault("version", "0.0.3")
        super().__init__(addr, **kwargs)
