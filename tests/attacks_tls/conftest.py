from collections.abc import Iterator

import pytest
from review_fixtures import loop, no_tracebacks, pytest_configure

from .certs import Certs, make_certs

__all__ = ["certs", "loop", "no_tracebacks", "pytest_configure"]


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Certs]:
    """A CA, server certificates (good, wrong host, expired, self-signed) and a client
    certificate, made with the openssl command for this run."""
    yield make_certs(tmp_path_factory.mktemp("tls-certs"))
