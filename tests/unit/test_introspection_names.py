"""The names a 406 recognises as introspection (to say how to enable it) are the ones
`register_introspection_functions()` registers."""

from __future__ import annotations

from typing import Any

from pymprpc.server.introspection import system_methods
from pymprpc.services import INTROSPECTION_METHODS


def test_introspection_names_are_what_is_registered() -> None:
    server: Any = object()  # the functions only read it when called
    assert set(system_methods(server)) == INTROSPECTION_METHODS
