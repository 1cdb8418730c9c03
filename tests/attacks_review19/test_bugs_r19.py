"""Review 19: bugs found in mprpcgen, each reproduced by the smallest IDL found."""

from __future__ import annotations

from pathlib import Path

import pytest

from .r19_util import generate, mypy_strict, ruff_defaults, ruff_format, ruff_project, show

pytestmark = pytest.mark.timeout(120)


def _gen(tmp_path: Path, name: str, text: str) -> Path:
    (tmp_path / f"{name}.idl").write_text(text, encoding="utf-8")
    out = tmp_path / "out"
    done = generate([tmp_path / f"{name}.idl"], out)
    assert done.returncode == 0, show(done)
    return out


LONG_VERSION = 'service Long version "' + "1.0.0-" + "x" * 90 + '" { def ping() -> str; }\n'


def test_long_version_string_passes_ruff_defaults(tmp_path: Path) -> None:
    out = _gen(tmp_path, "longver", LONG_VERSION)
    done = ruff_defaults(out)
    assert done.returncode == 0, show(done)


def test_long_version_string_is_ruff_formatted(tmp_path: Path) -> None:
    out = _gen(tmp_path, "longver2", LONG_VERSION)
    done = ruff_format(out)
    assert done.returncode == 0, show(done)


def test_long_version_string_project_rules_and_mypy(tmp_path: Path) -> None:
    # What does hold for the same file: the project's rules and mypy --strict.
    out = _gen(tmp_path, "longver3", LONG_VERSION)
    for done in (ruff_project(out), mypy_strict(out, tmp_path / "cache")):
        assert done.returncode == 0, show(done)


def test_short_version_with_escapes_is_fine(tmp_path: Path) -> None:
    out = _gen(tmp_path, "shortver", 'service V version "1.0 \\"b\\" {x}" { def ping() -> str; }\n')
    for done in (ruff_defaults(out), ruff_format(out), ruff_project(out)):
        assert done.returncode == 0, show(done)


ANY_ALIAS = "struct Any { x: int = 0; }\nstruct S { f: map<str, list<list<Any>>?> = {}; }\n"


def test_user_type_any_in_a_type_alias_typechecks(tmp_path: Path) -> None:
    out = _gen(tmp_path, "anyalias", ANY_ALIAS)
    done = mypy_strict(out, tmp_path / "cache")
    assert done.returncode == 0, show(done)


def test_user_type_any_in_a_type_alias_no_typing_import(tmp_path: Path) -> None:
    out = _gen(tmp_path, "anyalias2", ANY_ALIAS)
    done = ruff_defaults(out)
    assert done.returncode == 0, show(done)


def test_user_type_any_without_alias_is_fine(tmp_path: Path) -> None:
    out = _gen(
        tmp_path,
        "anyplain",
        "struct Any { x: int = 0; }\nstruct S { f: list<Any> = []; g: any; }\n",
    )
    done = mypy_strict(out, tmp_path / "cache")
    assert done.returncode == 0, show(done)
