"""The `mprpcgen` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .diagnostics import IdlError, display_path
from .loader import InputError, load
from .render import render_program

PACKAGE_MARKER = "# Makes generated packages siblings, so one can import another's types.\n"

DESCRIPTION = """\
Generate typed pymprpc servers and clients from interface (.idl) files.

For every FILE (and every file it imports) mprpcgen writes a package DIR/<name>/:
  types.py   enums, structs (dataclasses) and method signatures with wire schemas
  server.py  an abstract <Service>Servicer per service and register_<service>(server, impl)
  client.py  <Service>Client (blocking) and Async<Service>Client (asyncio)
"""

EPILOG = """\
examples:
  mprpcgen calculator.idl -o myapp/rpc          generate
  mprpcgen idl/*.idl -o generated --check       exit 1 if generated/ is stale
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mprpcgen",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("files", nargs="+", metavar="FILE", type=Path, help="interface files")
    parser.add_argument(
        "-o", "--out", required=True, metavar="DIR", type=Path, help="output directory"
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 if DIR is not what mprpcgen would generate",
    )
    parser.add_argument("--version", action="version", version=f"mprpcgen {__version__}")
    return parser


def generate(files: Sequence[Path], out: Path) -> dict[Path, str]:
    """Output path -> source for `files` (raises IdlError / InputError)."""
    outputs = {out / rel: src for rel, src in render_program(load(files)).items()}
    outputs[out / "__init__.py"] = PACKAGE_MARKER
    return outputs


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line on `argv` (default: `sys.argv[1:]`); return the exit status.

    Errors in the interface files are printed compiler-style on stderr with status 1;
    `--check` returns 1 when the output directory is stale.
    """
    args = _parser().parse_args(argv)
    try:
        outputs = generate(args.files, args.out)
    except IdlError as exc:
        print(exc.render(), file=sys.stderr)
        return 1
    except InputError as exc:
        print(f"mprpcgen: error: {exc}", file=sys.stderr)
        return 1
    marker = args.out / "__init__.py"
    if args.check:
        stale = [
            path
            for path, source in outputs.items()
            if not path.is_file() or (path != marker and path.read_text(encoding="utf-8") != source)
        ]
        for path in stale:
            print(f"mprpcgen: {display_path(path)} is out of date", file=sys.stderr)
        if stale:
            files = " ".join(display_path(f) for f in args.files)
            print(f"run: mprpcgen {files} -o {display_path(args.out)}", file=sys.stderr)
            return 1
        return 0
    written = 0
    for path, source in outputs.items():
        if path == marker and path.exists():
            continue  # the user's own package __init__ is left alone
        if path.is_file() and path.read_text(encoding="utf-8") == source:
            continue
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(source, encoding="utf-8")
        except OSError as exc:
            print(
                f"mprpcgen: error: cannot write {display_path(path)}: {exc.strerror or exc}",
                file=sys.stderr,
            )
            return 1
        written += 1
    where = display_path(args.out)
    print(f"mprpcgen: {len(outputs)} files up to date in {where} ({written} written)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
