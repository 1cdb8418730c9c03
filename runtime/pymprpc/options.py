"""Checks of the numeric options of a server and of the clients.

A value of the wrong type (a number read from an environment variable is a `str`) or out
of range ("no limit" written as -1 or infinity) is refused when the object is made,
naming the option, instead of failing later at every connection or call with an error
that names neither.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["check_count", "check_flag", "check_seconds", "check_text"]


def check_seconds(
    name: str, value: Any, *, none: bool = False, positive: bool = False, negative: bool = False
) -> None:
    """Check that option `name` is a number of seconds: a finite `int` or `float`, 0 or
    more (more than 0 if `positive`; any if `negative`: a call's own deadline computed
    from a budget already spent); None too if `none`.

    Raises:
        TypeError: not a number (a `str`, a `bool`, ...).
        ValueError: negative (unless `negative`; or 0 when `positive`), infinite or NaN.
    """
    if value is None and none:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(
            f"{name} must be a number of seconds (int or float), not {value!r} "
            f"({type(value).__name__}): convert it first, e.g. {name}=float(...)"
        )
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an int past float's range
        finite = False
    if not finite or (value < 0 and not negative) or (positive and value == 0):
        least = "more than 0" if positive else "0 or more"
        hint = " (None disables it)" if none else ""
        raise ValueError(f"{name} must be a finite number of seconds, {least}{hint}, not {value!r}")


def check_count(name: str, value: Any, *, minimum: int = 0, none: bool = False) -> None:
    """Check that option `name` is an `int` of at least `minimum` (None too if `none`).

    Raises:
        TypeError: not an int (a `str`, a `float`, a `bool`, ...).
        ValueError: less than `minimum`.
    """
    if value is None and none:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(
            f"{name} must be an int, not {value!r} ({type(value).__name__}): "
            f"convert it first, e.g. {name}=int(...)"
        )
    if value < minimum:
        raise ValueError(f"{name} must be {minimum} or more, not {value!r}")


def check_flag(name: str, value: Any) -> None:
    """Check that option `name` is a `bool` (a str such as "no" would read as true).

    Raises:
        TypeError: not a bool.
    """
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, not {value!r} ({type(value).__name__})")


def check_text(name: str, value: Any) -> None:
    """Check that option `name` is a `str` or None (a text a peer receives as it is).

    Raises:
        TypeError: anything else (an int, a float, bytes, ...).
    """
    if value is not None and not isinstance(value, str):
        raise TypeError(
            f"{name} must be a str or None, not {value!r} ({type(value).__name__}): "
            f"clients refuse anything else in the welcome reply; convert it first, e.g. "
            f"{name}=str(...)"
        )
