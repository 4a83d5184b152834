"""A development certificate authority and a certificate per component (`hacs certs`).

In a directory:

    ca.pem, ca-key.pem          a CA (kept; re-issuing reuses it)
    <name>.pem, <name>-key.pem  one certificate per name, signed by the CA, usable as a
                                server and as a client certificate (mTLS both ways)

Every certificate names `localhost`, `127.0.0.1`, `::1`, the component's own name and
`hacs-<name>` (a Kubernetes Service), plus any extra DNS names. Files are written to a
temporary name and renamed into place, so a process watching the directory (Envoy,
`hacs serve`) never reads half a file and sees each rotation as one change. Private keys
are mode 0600.

This is for development and for `make up` with HACS_TLS=on. A hospital issues
certificates from its own PKI (or cert-manager, or Istio's CA in Kubernetes) and points
HACS_TLS_CERT_FILE / HACS_TLS_KEY_FILE / HACS_TLS_CA_FILE at them (docs/security.md).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# The edge, each service, and a client identity for the SDK, grpcurl and the tests.
DEFAULT_NAMES = (
    "edge",
    "tenant",
    "records",
    "embedding",
    "search",
    "rag",
    "memory",
    "sync",
    "ratelimit",
    "serve",
    "client",
)
LOOPBACK = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path


class CertificateAuthority:
    """A CA kept in a directory: `ca.pem` and `ca-key.pem`."""

    def __init__(self, directory: Path, *, common_name: str = "HACS development CA") -> None:
        self.directory = directory
        self.cert_path = directory / "ca.pem"
        self.key_path = directory / "ca-key.pem"
        self.common_name = common_name

    @property
    def exists(self) -> bool:
        return self.cert_path.exists() and self.key_path.exists()

    def create(self, days: int = 3650) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.common_name)])
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        self.directory.mkdir(parents=True, exist_ok=True)
        _write(self.key_path, _key_pem(key), private=True)
        _write(self.cert_path, cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, name: str, dns: tuple[str, ...] = (), days: int = 825) -> Issued:
        """A certificate for `name` (server and client use), written as `<name>.pem`."""
        ca_key = serialization.load_pem_private_key(self.key_path.read_bytes(), password=None)
        ca_cert = x509.load_pem_x509_certificate(self.cert_path.read_bytes())
        if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{self.key_path} is not the EC key `hacs certs` makes")
        key = ec.generate_private_key(ec.SECP256R1())
        names = list(dict.fromkeys([*LOOPBACK, name, f"hacs-{name}", *dns]))
        alt: list[x509.GeneralName] = []
        for entry in names:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(entry)))
            except ValueError:
                alt.append(x509.DNSName(entry))
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
            )
            .sign(ca_key, hashes.SHA256())
        )
        issued = Issued(self.directory / f"{name}.pem", self.directory / f"{name}-key.pem")
        # The key first: a watcher that reloads on the certificate then finds its key.
        _write(issued.key, _key_pem(key), private=True)
        _write(issued.cert, cert.public_bytes(serialization.Encoding.PEM))
        return issued


def ensure_certificates(
    directory: Path, names: tuple[str, ...] = DEFAULT_NAMES, dns: tuple[str, ...] = ()
) -> CertificateAuthority:
    """The CA and a certificate per name in `directory`, made where missing."""
    ca = CertificateAuthority(directory)
    if not ca.exists:
        ca.create()
    for name in names:
        if not (directory / f"{name}.pem").exists() or not (directory / f"{name}-key.pem").exists():
            ca.issue(name, dns)
    return ca


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write(path: Path, data: bytes, *, private: bool = False) -> None:
    """Write by rename, so readers see the old file or the new one, never a mix."""
    temporary = path.with_name(f".{path.name}.tmp")
    descriptor = os.open(
        temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644
    )
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
    os.replace(temporary, path)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
