"""The `mprpcgen` command's entry point: says how to install the generator's extras.

The generator needs `lark` and `jinja2`, which only the `pymprpc[gen]` extra installs. The
CLI imports them at module level, so this small module imports the CLI inside `main()`
and turns a missing extra into one line and exit status 1 instead of a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

# Top-level modules the generator imports that only `pymprpc[gen]` brings.
GEN_EXTRA_MODULES = frozenset({"lark", "jinja2", "markupsafe"})

INSTALL_HINT = (
    "mprpcgen: error: the code generator needs lark and jinja2, which are not installed: "
    "install pymprpc[gen] (pip install 'pymprpc[gen]')"
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `mprpcgen` command line; return its exit status.

    Args:
        argv: the arguments after the program name (default: `sys.argv[1:]`).

    Returns:
        0 on success, 1 on an error in the input or a missing `pymprpc[gen]` extra
        (reported on stderr), 2 for a usage error (argparse's convention).
    """
    try:
        from .cli import main as cli_main
    except ImportError as exc:
        if (exc.name or "").partition(".")[0] not in GEN_EXTRA_MODULES:
            raise
        print(INSTALL_HINT, file=sys.stderr)
        return 1
    return cli_main(argv)
