"""A throw-away CA for component tests that stand in for a group's servers (HAProxy's
checks against a stand-in Patroni, etcd.sh's members): made with the openssl CLI in a
test's own directory, so these tests need no Vault. The fleet tests use the group's
real CA in OpenBao instead.
"""

from __future__ import annotations

import base64
import subprocess
from dataclasses import dataclass
from pathlib import Path


def _openssl(*args: str) -> None:
    proc = subprocess.run(
        ["openssl", *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path

    def environment(self, ca: ScratchCa) -> dict[str, str]:
        """TLS_CERT, TLS_KEY and TLS_CA as lib.sh's `write_tls` reads them."""
        return {
            "TLS_CERT": b64(self.cert.read_text()),
            "TLS_KEY": b64(self.key.read_text()),
            "TLS_CA": b64(ca.cert.read_text()),
        }


@dataclass(frozen=True)
class ScratchCa:
    """A self-signed EC CA in `root`; `issue` signs server-and-client certificates."""

    root: Path
    name: str

    @property
    def cert(self) -> Path:
        return self.root / f"{self.name}-ca.crt"

    @property
    def key(self) -> Path:
        return self.root / f"{self.name}-ca.key"

    @classmethod
    def make(cls, root: Path, name: str) -> ScratchCa:
        ca = cls(root, name)
        root.mkdir(parents=True, exist_ok=True)
        _openssl(
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", str(ca.key), "-out", str(ca.cert), "-days", "2", "-subj", f"/CN={name}",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        )  # fmt: skip
        ca.key.chmod(0o600)
        return ca

    def issue(self, name: str, ips: tuple[str, ...] = ()) -> Issued:
        """A certificate for `name` naming `ips`, usable by servers and clients (as the
        group's PKI role `server` issues them)."""
        key, csr, cert = (self.root / f"{name}.{ext}" for ext in ("key", "csr", "crt"))
        _openssl(
            "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}",
        )  # fmt: skip
        ext = self.root / f"{name}.ext"
        sans = ",".join(f"IP:{ip}" for ip in ips)
        ext.write_text(
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyAgreement\n"
            "extendedKeyUsage=serverAuth,clientAuth\n"
            + (f"subjectAltName={sans}\n" if sans else "")
        )
        _openssl(
            "x509", "-req", "-in", str(csr), "-CA", str(self.cert), "-CAkey", str(self.key),
            "-CAcreateserial", "-days", "1", "-out", str(cert), "-extfile", str(ext),
        )  # fmt: skip
        key.chmod(0o600)
        return Issued(cert, key)


def b64(pem: str) -> str:
    """PEM as the host scripts take it: one base64 line."""
    return base64.b64encode(pem.strip().encode() + b"\n").decode()
