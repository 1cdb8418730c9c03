"""Throwaway certificates made with the openssl command at test time (no network): a CA,
a server certificate for 127.0.0.1/localhost, one for another host, an expired one, a
self-signed one nobody trusts, and a client certificate for mutual TLS."""

from __future__ import annotations

import dataclasses
import shutil
import ssl
import subprocess
from pathlib import Path

import pytest


def _run(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _key(cwd: Path, name: str) -> None:
    _run("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", f"{name}.key", cwd=cwd)


def _signed(cwd: Path, name: str, cn: str, san: str, client: bool = False) -> None:
    _key(cwd, name)
    _run("req", "-new", "-key", f"{name}.key", "-subj", f"/CN={cn}", "-out", f"{name}.csr", cwd=cwd)
    usage = "clientAuth" if client else "serverAuth"
    (cwd / f"{name}.ext").write_text(
        (f"subjectAltName={san}\n" if san else "")
        + f"extendedKeyUsage={usage}\nbasicConstraints=CA:FALSE\n"
    )
    _run(
        "x509",
        "-req",
        "-in",
        f"{name}.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        f"{name}.ext",
        "-out",
        f"{name}.pem",
        cwd=cwd,
    )


def _expired(cwd: Path) -> None:
    """Signed by the CA, valid for one day in 2020 (openssl ca takes explicit dates)."""
    _key(cwd, "expired")
    _run(
        "req",
        "-new",
        "-key",
        "expired.key",
        "-subj",
        "/CN=localhost",
        "-out",
        "expired.csr",
        cwd=cwd,
    )
    (cwd / "db").mkdir()
    (cwd / "db" / "index.txt").write_text("")
    (cwd / "db" / "serial").write_text("1000\n")
    (cwd / "ca.cnf").write_text(
        "[ca]\ndefault_ca=own\n[own]\ndir=db\ndatabase=db/index.txt\nserial=db/serial\n"
        "new_certs_dir=db\ndefault_md=sha256\npolicy=any\nunique_subject=no\n"
        "copy_extensions=none\nx509_extensions=ext\n[any]\ncommonName=supplied\n"
        "[ext]\nsubjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
        "extendedKeyUsage=serverAuth\n"
    )
    _run(
        "ca",
        "-batch",
        "-config",
        "ca.cnf",
        "-cert",
        "ca.pem",
        "-keyfile",
        "ca.key",
        "-startdate",
        "20200101000000Z",
        "-enddate",
        "20200102000000Z",
        "-notext",
        "-in",
        "expired.csr",
        "-out",
        "expired.pem",
        cwd=cwd,
    )


@dataclasses.dataclass
class Certs:
    dir: Path

    def path(self, name: str) -> str:
        return str(self.dir / name)

    def server_context(
        self, name: str = "server", *, require_client: bool = False, client_ca: bool = False
    ) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.path(f"{name}.pem"), self.path(f"{name}.key"))
        if require_client or client_ca:
            ctx.load_verify_locations(self.path("ca.pem"))
            ctx.verify_mode = ssl.CERT_REQUIRED if require_client else ssl.CERT_OPTIONAL
        return ctx

    def client_context(self, *, cert: bool = False) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.path("ca.pem"))
        if cert:
            ctx.load_cert_chain(self.path("client.pem"), self.path("client.key"))
        return ctx


def make_certs(directory: Path) -> Certs:
    if shutil.which("openssl") is None:
        pytest.skip("openssl command not available to make test certificates")
    d = directory
    _key(d, "ca")
    _run(
        "req",
        "-x509",
        "-new",
        "-key",
        "ca.key",
        "-subj",
        "/CN=pymprpc review CA",
        "-days",
        "2",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=keyCertSign,cRLSign",
        "-out",
        "ca.pem",
        cwd=d,
    )
    _signed(d, "server", "localhost", "IP:127.0.0.1,DNS:localhost")
    _signed(d, "wronghost", "wrong.example", "DNS:wrong.example")
    _signed(d, "client", "alice-client", "", client=True)
    _expired(d)
    _key(d, "selfsigned")
    _run(
        "req",
        "-x509",
        "-new",
        "-key",
        "selfsigned.key",
        "-subj",
        "/CN=localhost",
        "-days",
        "2",
        "-addext",
        "subjectAltName=IP:127.0.0.1,DNS:localhost",
        "-out",
        "selfsigned.pem",
        cwd=d,
    )
    return Certs(d)
