"""Throwaway certificates for local use and tests (`authz certs dev`): never for production.

    ca.pem / ca.key           a root CA, 10 years: what every link below trusts
    server.pem / server.key   Envoy's listener: the route hosts, the authenticate host, localhost
    client.pem / client.key   a user's or device's client certificate (downstream_mtls)
    authz.pem / authz.key     authz's gRPC and HTTP listeners (Envoy ↔ authz mTLS)
    envoy.pem / envoy.key     Envoy's client certificate toward authz and upstreams
    upstream.pem / upstream.key  an app behind the edge, served over TLS
    crl.pem                   the CA's (empty) revocation list

Every key is ECDSA P-256 and written owner-only. The builders (`authority`, `issue`,
`revocation_list`) are what the tests use for the odd cases too: an intermediate CA, a revoked, an
expired, a foreign or a wrongly named certificate.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DAY = dt.timedelta(days=1)


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _key_usage(ca: bool) -> x509.KeyUsage:
    """Signing only (ECDSA); a CA also signs certificates and CRLs."""
    unused = ("content_commitment", "key_encipherment", "data_encipherment", "key_agreement", "encipher_only")
    return x509.KeyUsage(digital_signature=True, key_cert_sign=ca, crl_sign=ca, decipher_only=False,
                         **dict.fromkeys(unused, False))  # fmt: skip


def authority(name: str, parent: Issued | None = None, *, path_length: int | None = None, days: int = 3650) -> Issued:
    """A CA: a root when `parent` is None, else an intermediate signed by `parent`."""
    key = ec.generate_private_key(ec.SECP256R1())
    issuer = parent.cert.subject if parent else _name(name)
    signer = parent.key if parent else key
    now = _now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - DAY)
        .not_valid_after(now + days * DAY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if parent is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(parent.key.public_key()), critical=False
        )
    return Issued(builder.sign(signer, hashes.SHA256()), key)


def issue(
    ca: Issued,
    name: str,
    *,
    dns: Sequence[str] = (),
    ips: Sequence[str] = (),
    emails: Sequence[str] = (),
    uris: Sequence[str] = (),
    server: bool = False,
    client: bool = False,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> Issued:
    """A leaf certificate signed by `ca`, for a server, a client or both (by extended key usage)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    sans += [x509.RFC822Name(e) for e in emails]
    sans += [x509.UniformResourceIdentifier(u) for u in uris]
    usages = [ExtendedKeyUsageOID.SERVER_AUTH] if server else []
    usages += [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - DAY)
        .not_valid_after(not_after or now + 825 * DAY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return Issued(builder.sign(ca.key, hashes.SHA256()), key)


def revocation_list(ca: Issued, revoked: Iterable[x509.Certificate] = (), days: int = 365) -> bytes:
    """The CA's CRL (PEM) listing `revoked`."""
    now = _now()
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.cert.subject)
        .last_update(now - DAY)
        .next_update(now + days * DAY)
    )
    for cert in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(cert.serial_number).revocation_date(now - DAY).build()
        )
    return builder.sign(ca.key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def _write(path: Path, data: bytes, private: bool) -> None:
    """Write `data` to `path`; a private key owner-only from its first byte."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    handle = os.open(path, flags, 0o600 if private else 0o644)
    with os.fdopen(handle, "wb") as file:
        file.write(data)
    if private:
        os.chmod(path, 0o600)


def write_dev_set(directory: Path, hosts: Sequence[str] = ()) -> dict[str, Path]:
    """Write a fresh CA and every certificate `make dev` and the docs' examples use; their paths by name."""
    directory.mkdir(parents=True, exist_ok=True)
    root = authority("authz dev CA")
    names = sorted({*hosts, "localhost", "*.localhost"})
    issued = {
        "server": issue(root, "authz dev edge", dns=names, ips=["127.0.0.1"], server=True),
        "client": issue(root, "dev user", emails=["alice@example.com"], client=True),
        "authz": issue(root, "authz", dns=["localhost", "authz"], ips=["127.0.0.1"], server=True, client=True),
        "envoy": issue(root, "envoy", dns=["envoy"], client=True),
        "upstream": issue(root, "authz dev upstream", dns=["localhost", "upstream"], ips=["127.0.0.1"], server=True),
    }
    paths = {"ca": directory / "ca.pem", "ca_key": directory / "ca.key", "crl": directory / "crl.pem"}
    _write(paths["ca"], root.cert_pem, private=False)
    _write(paths["ca_key"], root.key_pem, private=True)
    _write(paths["crl"], revocation_list(root), private=False)
    for name, item in issued.items():
        paths[name] = directory / f"{name}.pem"
        paths[f"{name}_key"] = directory / f"{name}.key"
        _write(paths[name], item.cert_pem, private=False)
        _write(paths[f"{name}_key"], item.key_pem, private=True)
    return paths
