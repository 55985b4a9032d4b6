"""Reading PEM certificates and keys at load, so that what Envoy or authz's listeners would refuse
at start is a config error naming its key instead."""

from __future__ import annotations

import ipaddress

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes


def certificates(data: bytes) -> list[x509.Certificate] | None:
    """The certificates of a PEM bundle, or None when it holds none readable."""
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        return None


def private_key(data: bytes) -> PrivateKeyTypes | None:
    """An unencrypted PEM private key, or None."""
    try:
        return serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return None


def _public_der(key: PublicKeyTypes) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def fits(key: PrivateKeyTypes, certificate: x509.Certificate) -> bool:
    """Whether `key` is the private key of `certificate`."""
    return _public_der(key.public_key()) == _public_der(certificate.public_key())


def normalized_name(name: str) -> str:
    """A server name as Envoy compares it: lower case, an IP address in its canonical text."""
    name = name.strip().lower().strip("[]")
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        return name


def dns_matches(san: str, name: str) -> bool:
    """Whether a certificate's DNS SAN covers `name` as Envoy matches them: exactly, or a
    wildcard for the left-most label only (`*.example.com` covers `a.example.com`, not
    `a.b.example.com` nor `example.com`)."""
    san, name = san.lower(), name.lower()
    if san.startswith("*."):
        head, _, rest = name.partition(".")
        return bool(head) and rest == san[2:]
    return san == name


def is_ip(name: str) -> bool:
    """Whether `name` is an IP address (and no host name)."""
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True
