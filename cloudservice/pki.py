"""The cloud's own certificate authority, so the API is HTTPS from the first start.

kubectl refuses to send a bearer token over plain HTTP, and node certificates (the mutual-TLS work)
need a CA anyway. On first start CloudCore creates, under ``DATA_DIR/pki``:

* ``ca.crt`` / ``ca.key``: a self-signed CA (ECDSA P-256, ten years), the root kubeconfigs trust;
* ``apiserver.crt`` / ``apiserver.key``: the API's serving certificate (one year), with the API host,
  ``localhost``, 127.0.0.1 and the machine's hostname as subject alternative names.

The serving certificate is re-issued when it is missing, expires within 30 days, or does not cover the
address the API is asked to listen on. Keys are written 0600.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_VALIDITY = dt.timedelta(days=3650)
SERVING_VALIDITY = dt.timedelta(days=365)
RENEW_BEFORE = dt.timedelta(days=30)


@dataclass(frozen=True)
class Pki:
    ca_cert: Path
    ca_key: Path
    serving_cert: Path
    serving_key: Path

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.serving_cert, self.serving_key)
        return ctx


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{path} is not an EC private key")
    return key


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "FleetOps"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _sans(host: str) -> list[x509.GeneralName]:
    names: set[str] = {"localhost", socket.gethostname()}
    ips: set[str] = {"127.0.0.1", "::1"}
    for candidate in (host,):
        try:
            ipaddress.ip_address(candidate)
            if candidate not in ("0.0.0.0", "::"):
                ips.add(candidate)
        except ValueError:
            if candidate:
                names.add(candidate)
    out: list[x509.GeneralName] = [x509.DNSName(n) for n in sorted(names)]
    out += [x509.IPAddress(ipaddress.ip_address(i)) for i in sorted(ips)]
    return out


def _needs_serving_cert(path: Path, host: str) -> bool:
    if not path.exists():
        return True
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    if cert.not_valid_after_utc - dt.datetime.now(dt.UTC) < RENEW_BEFORE:
        return True
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return True
    wanted = set(_sans(host))
    return not wanted.issubset(set(sans))


def ensure_pki(directory: Path, api_host: str) -> Pki:
    """Create the CA and the API serving certificate when missing (or stale); return their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    pki = Pki(
        directory / "ca.crt", directory / "ca.key", directory / "apiserver.crt", directory / "apiserver.key"
    )
    now = dt.datetime.now(dt.UTC)
    if not pki.ca_cert.exists() or not pki.ca_key.exists():
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = (
            x509.CertificateBuilder()
            .subject_name(_name("fleetops-ca"))
            .issuer_name(_name("fleetops-ca"))
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + CA_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        _write_key(pki.ca_key, ca_key)
        pki.ca_cert.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        pki.serving_cert.unlink(missing_ok=True)
    if _needs_serving_cert(pki.serving_cert, api_host):
        ca_key = _load_key(pki.ca_key)
        ca = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name("fleetops-apiserver"))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + SERVING_VALIDITY)
            .add_extension(x509.SubjectAlternativeName(_sans(api_host)), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
        _write_key(pki.serving_key, key)
        pki.serving_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return pki
