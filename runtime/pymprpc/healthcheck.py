"""The bytes a load balancer sends to check a server's `system.health`, as HAProxy config.

`python -m pymprpc.healthcheck [--user U --password P] [--service NAME]` prints the
`tcp-check` lines of an HAProxy backend: log in (MPRPC 0.1, separator framing, no
extensions, so any pymprpc server understands it), wait for the welcome reply, call
`system.health(service)`, and pass only if the reply holds the string "SERVING" (encoded
as MessagePack: `NOT_SERVING` does not match, and neither does an error).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import msgpack

from .errors import LocalProtocolError
from .protocol.constants import SEPARATOR
from .protocol.framing import SeparatorFramer

__all__ = ["SERVING_MARK", "check_messages", "haproxy_config", "main"]

# "SERVING" as a MessagePack string (fixstr of 7 bytes): the byte before it tells it apart
# from the tail of "NOT_SERVING".
SERVING_MARK = msgpack.packb("SERVING")


_FRAMER = SeparatorFramer()


def check_messages(
    user: str | None = None, password: str | None = None, service: str = ""
) -> tuple[bytes, bytes]:
    """The auth request and the `system.health(service)` call, framed for the wire.

    Raises:
        ValueError: the user name, password or service name holds the separator
            (`##PRO-END##`), or the password or service name ends with the start of it,
            which MPRPC 0.1's framing cannot carry.
    """
    for what, text in (("user name", user), ("password", password), ("service name", service)):
        if text is not None and SEPARATOR.decode() in text:
            raise ValueError(
                f"the {what} contains {SEPARATOR.decode()!r}, which the check's framing "
                "(MPRPC 0.1, separator) cannot carry: give the checks an account "
                "without it"
            )
    auth = {"MPRPC": "0.1", "AUTH": {"USERNAME": user, "PASSWORD": password}}
    call = {"MPRPC": "0.1", "ID": "health", "METHOD": "system.health", "ARGS": [service]}
    framed = []
    for what, message in (("password", auth), ("service name", call)):
        try:
            framed.append(b"".join(_FRAMER.frame(msgpack.packb(message, use_bin_type=True))))
        except LocalProtocolError:
            # Its message ends with the start of the separator ("...##PRO-END"), which the
            # separator after it would complete early.
            raise ValueError(
                f"the {what} ends like {SEPARATOR.decode()!r} begins, which the check's "
                f"framing (MPRPC 0.1, separator) cannot carry: choose another {what}"
            ) from None
    return framed[0], framed[1]


def haproxy_config(user: str | None = None, password: str | None = None, service: str = "") -> str:
    """The `option tcp-check` lines of a backend checking `system.health(service)`.

    Raises:
        ValueError: as `check_messages`.
    """
    auth, call = check_messages(user, password, service)
    end = SEPARATOR.hex()
    return "\n".join(
        [
            "option tcp-check",
            "tcp-check connect",
            f"tcp-check send-binary {auth.hex()}",
            f"tcp-check expect binary {end}",  # the welcome reply (its frame's end)
            f"tcp-check send-binary {call.hex()}",
            f"tcp-check expect binary {end}",  # the whole reply first, then its content
            f"tcp-check expect min-recv 1 binary {SERVING_MARK.hex()}",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Print the HAProxy `tcp-check` lines (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog="python -m pymprpc.healthcheck",
        description="HAProxy tcp-check lines calling system.health on a pymprpc server",
    )
    parser.add_argument("--user", default=None, help="log in as this user (default: anonymous)")
    parser.add_argument("--password", default=None, help="the user's password")
    parser.add_argument("--service", default="", help="service name (default: the server)")
    args = parser.parse_args(argv)
    try:
        config = haproxy_config(args.user, args.password, args.service)
    except ValueError as exc:
        sys.stderr.write(f"python -m pymprpc.healthcheck: {exc}\n")
        return 2
    sys.stdout.write(config + "\n")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
