from review_fixtures import loop, no_tracebacks, pytest_configure  # noqa: F401
