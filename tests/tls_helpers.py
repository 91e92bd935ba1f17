"""A throwaway CA with a server certificate for 127.0.0.1 and a client certificate, made with the openssl CLI."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    client_combined: Path     # certificate and key in one PEM


def _run(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def _leaf(d: Path, name: str, subject: str, ca: Path, ca_key: Path, ext: str) -> tuple[Path, Path]:
    key, csr, crt, extfile = d / f"{name}.key", d / f"{name}.csr", d / f"{name}.crt", d / f"{name}.ext"
    extfile.write_text(ext, encoding="ascii")
    _run("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(csr), "-subj", subject)
    _run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
         "-out", str(crt), "-days", "1", "-extfile", str(extfile))
    return crt, key


def make_pki(d: Path) -> Pki:
    if shutil.which("openssl") is None:
        pytest.skip("openssl binary not available to make test certificates")
    ca, ca_key = d / "ca.crt", d / "ca.key"
    _run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(ca_key), "-out", str(ca), "-days", "1", "-subj", "/CN=pollerd test CA",
         "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    s_crt, s_key = _leaf(d, "server", "/CN=127.0.0.1", ca, ca_key,
                         "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    c_crt, c_key = _leaf(d, "client", "/CN=gateway-7", ca, ca_key, "extendedKeyUsage=clientAuth\n")
    combined = d / "client-combined.pem"
    combined.write_bytes(c_crt.read_bytes() + c_key.read_bytes())
    return Pki(ca, s_crt, s_key, c_crt, c_key, combined)
