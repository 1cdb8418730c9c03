"""Names: the IDL's naming rules, and the names generated code derives from declarations.

Generated code never puts a user-chosen name in the same namespace as a name it relies on:
every helper it imports or defines for itself starts with `_`, which no IDL name may, and a
builtin that a class body could rebind is spelled `_builtins.X` there (see `views.py`). So
the only names refused here are those Python refuses and those a user-facing generated
object already owns (a client's `rpc`, `connect`, `close`, `with_options`; `self`).
"""

from __future__ import annotations

import re
import sys

# Python's hard keywords, fixed here so that the verdict on a name does not depend on the
# Python running mprpcgen. Soft keywords (`match`, `case`, `type`, `_`) are valid
# identifiers on every version and are allowed (`_` is refused as private anyway).
PYTHON_KEYWORDS = frozenset(
    {
        "False",
        "None",
        "True",
        "and",
        "as",
        "assert",
        "async",
        "await",
        "break",
        "class",
        "continue",
        "def",
        "del",
        "elif",
        "else",
        "except",
        "finally",
        "for",
        "from",
        "global",
        "if",
        "import",
        "in",
        "is",
        "lambda",
        "nonlocal",
        "not",
        "or",
        "pass",
        "raise",
        "return",
        "try",
        "while",
        "with",
        "yield",
    }
)

# Names pycodestyle calls ambiguous (E741-E743: `l`, `O`, `I` read as 1 and 0).
AMBIGUOUS_NAMES = frozenset({"l", "O", "I"})

# Attributes of the generated clients that are not remote methods (their base class's API).
CLIENT_ATTRIBUTES = frozenset({"rpc", "connect", "close", "with_options"})

IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

# Deepest nesting of list<>/map<>/? in one type, and of the IDL as a whole. Deeper input is
# refused with a positioned error (generated annotations stay readable, parsing bounded).
MAX_TYPE_DEPTH = 32
# Longest name (of a type, service, method, parameter, field, enum member or file): with
# it, every generated line fits 88 columns, as linters expect, whatever the names.
MAX_NAME_LENGTH = 40


def snake_case(name: str) -> str:
    """`HTTPServer` -> `http_server`, `getUser` -> `get_user`."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()


def servicer_name(service: str) -> str:
    return f"{service}Servicer"


def client_name(service: str) -> str:
    return f"{service}Client"


def async_client_name(service: str) -> str:
    return f"Async{service}Client"


def register_name(service: str) -> str:
    return f"register_{snake_case(service)}"


def service_names(service: str) -> tuple[str, ...]:
    """The user-facing names generated for a service."""
    return (
        servicer_name(service),
        client_name(service),
        async_client_name(service),
        register_name(service),
    )


def methods_name(service: str) -> str:
    """The private class holding a service's signatures (shared by server and clients)."""
    return f"_{service}Methods"


def schema_name(type_name: str) -> str:
    """The private wire schema object of a declared type."""
    return f"_{type_name}Schema"


# Standard library modules: a generated package of the same name would shadow one (or be
# shadowed). Python's own list, plus modules removed in 3.12/3.13, so that the verdict is
# the same on every supported version, plus CPython's example extension modules, which
# Python's list leaves out but ruff's isort counts as standard library (an import of a
# package named `xx` would be moved to that section, and the output fail `ruff check`).
STDLIB_MODULES = frozenset(sys.stdlib_module_names) | frozenset(
    {
        "aifc", "asynchat", "asyncore", "audioop", "cgi", "cgitb", "chunk", "crypt",
        "distutils", "imghdr", "imp", "lib2to3", "mailcap", "msilib", "nis", "nntplib",
        "ossaudiodev", "pipes", "smtpd", "sndhdr", "spwd", "sunau", "telnetlib", "uu",
        "xdrlib", "xx", "xxlimited", "xxlimited_35", "xxsubtype",
    }
)  # fmt: skip

# Packages a generated package must not shadow: the runtime its code imports, the runtime's
# one dependency, and the generator itself (regenerating from the output directory would
# import the wrong one). lark and jinja2 are not here: generated code never imports them.
PROJECT_MODULES = frozenset({"pymprpc", "msgpack", "mprpcgen"})
