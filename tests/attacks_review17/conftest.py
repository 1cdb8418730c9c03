from review_fixtures import loop, no_tracebacks, pytest_configure

__all__ = ["loop", "no_tracebacks", "pytest_configure"]
