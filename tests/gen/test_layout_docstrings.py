"""Docstrings the generator writes: every line fits, and the value is the doc text exactly."""

from __future__ import annotations

import ast
import inspect

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from mprpcgen.layout import clean_doc, docstring, width

_CHARS = st.characters(codec="utf-8", exclude_categories=("Cs",))
_DOCS = st.one_of(
    st.text(_CHARS, min_size=1, max_size=300),
    # Words longer than any line: they must be broken inside, between escape sequences.
    st.lists(st.text(_CHARS, min_size=60, max_size=200), min_size=1, max_size=3).map(" ".join),
)


@settings(max_examples=300, deadline=None)
@given(_DOCS, st.sampled_from([88, 100]))
def test_docstring_lines_fit_and_round_trip(text: str, line_length: int) -> None:
    text = clean_doc(text)
    assume(text)
    source = "def f():\n" + docstring(text, "    ", line_length)
    assert all(width(line) <= line_length for line in source.splitlines())
    value = ast.get_docstring(ast.parse(source).body[0], clean=False)  # type: ignore[arg-type]
    assert value is not None and inspect.cleandoc(value) == text


def test_a_word_longer_than_a_line_is_broken_inside() -> None:
    text = "x" * 150 + " tail"
    source = docstring(text, "    ", 88)
    assert all(width(line) <= 88 for line in source.splitlines())
    assert len(source.splitlines()) >= 2
