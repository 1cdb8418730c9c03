"""This review's fixtures: the reviews' shared ones (tests/review_fixtures.py)."""

from review_fixtures import loop, no_tracebacks, pytest_configure

__all__ = ["loop", "no_tracebacks", "pytest_configure"]
