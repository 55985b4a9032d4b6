"""Client certificate criteria: `client_certificate` (fingerprint, spki_hash, san_*) and
`invalid_client_certificate`, evaluated on the leaf certificate (PEM) in the request context and,
under `downstream_mtls`, on authz's verdict on its chain (authz/check/clientcert.py)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from authz.errors import Problem
from authz.policy.ast import PolicyInput, Result
from authz.policy.matchers import StringMatcher, parse_string_matcher
from authz.policy.reasons import Reason
from authz.schema.reader import describe, suggest

_SHORT = re.compile(r"^[0-9a-f]{64}$")
_LONG = re.compile(r"^[0-9A-F]{2}(:[0-9A-F]{2}){31}$")
KEYS = ("fingerprint", "spki_hash", "san_email", "san_dns", "san_uri")


@dataclass(frozen=True, slots=True)
class Leaf:
    fingerprint: str
    spki_hash: str
    emails: tuple[str, ...]
    dns: tuple[str, ...]
    uris: tuple[str, ...]
    not_before: datetime
    not_after: datetime


_END = "-----END CERTIFICATE-----"
_CACHED_PEM = 16 * 1024  # a first certificate longer than this is parsed, not cached


def parse_leaf(pem: str) -> Leaf | None:
    """The first certificate of a PEM string (a chain's leaf), or None if there is none or it, its
    key or its SANs do not parse. Cached by that certificate's text alone: what a chain carries
    after it cannot grow the cache."""
    end = pem.find(_END)
    first = pem[: end + len(_END)] if end >= 0 else pem
    return _parse_first(first) if len(first) <= _CACHED_PEM else _parse_uncached(first)


@lru_cache(maxsize=1024)
def _parse_first(pem: str) -> Leaf | None:
    return _parse_uncached(pem)


def _parse_uncached(pem: str) -> Leaf | None:
    try:
        return _read_leaf(pem)
    except Exception:  # a hostile certificate (a malformed key or extension) is none, never a 503
        return None


def _read_leaf(pem: str) -> Leaf | None:
    try:
        cert = x509.load_pem_x509_certificate(pem.strip().encode())
    except ValueError:
        return None
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        emails = tuple(sans.get_values_for_type(x509.RFC822Name))
        dns = tuple(sans.get_values_for_type(x509.DNSName))
        uris = tuple(sans.get_values_for_type(x509.UniformResourceIdentifier))
    except x509.ExtensionNotFound:
        emails = dns = uris = ()
    return Leaf(
        fingerprint=hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest(),
        spki_hash=base64.b64encode(hashlib.sha256(spki).digest()).decode(),
        emails=emails,
        dns=dns,
        uris=uris,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
    )


@dataclass(frozen=True, slots=True)
class ClientCertificate:
    """Every given condition must hold; SAN matchers match if any SAN entry of that type matches."""

    fingerprints: frozenset[str] | None = None
    spki_hashes: frozenset[str] | None = None
    san_email: StringMatcher | None = None
    san_dns: StringMatcher | None = None
    san_uri: StringMatcher | None = None
    name = "client_certificate"

    def evaluate(self, inp: PolicyInput) -> Result:
        # Under downstream_mtls only a certificate that passed authz's checks can match: anyone can
        # make a self-signed one with any SAN, which the policy modes let through the handshake.
        pem = inp.request.client_certificate
        trusted = inp.certificate is None or inp.certificate.valid
        leaf = parse_leaf(pem) if pem and trusted else None
        ok = leaf is not None and all(
            (
                self.fingerprints is None or leaf.fingerprint in self.fingerprints,
                self.spki_hashes is None or leaf.spki_hash in self.spki_hashes,
                self.san_email is None or any(self.san_email.match(v) for v in leaf.emails),
                self.san_dns is None or any(self.san_dns.match(v) for v in leaf.dns),
                self.san_uri is None or any(self.san_uri.match(v) for v in leaf.uris),
            )
        )
        if ok:
            return True, frozenset({Reason.CLIENT_CERTIFICATE_OK})
        return False, frozenset({Reason.CLIENT_CERTIFICATE_UNAUTHORIZED})


@dataclass(frozen=True, slots=True)
class InvalidClientCertificate:
    """True unless a valid certificate was presented: under `downstream_mtls`, authz's verdict
    (chain, validity, CRL, SANs); without it, one that parses and is within its validity period."""

    name = "invalid_client_certificate"

    def evaluate(self, inp: PolicyInput) -> Result:
        verdict = inp.certificate
        if verdict is not None:
            return not verdict.valid, frozenset({verdict.reason})
        if not inp.request.client_certificate:
            return True, frozenset({Reason.CLIENT_CERTIFICATE_REQUIRED})
        leaf = parse_leaf(inp.request.client_certificate)
        if leaf is None or not leaf.not_before <= inp.now < leaf.not_after:
            return True, frozenset({Reason.INVALID_CLIENT_CERTIFICATE})
        return False, frozenset({Reason.VALID_CLIENT_CERTIFICATE})


def _strings(value: Any, path: str, problems: list[Problem]) -> list[str] | None:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(i, str) and i for i in items):
        problems.append(Problem(path, f"expected a string or a list of strings, got {describe(value)}"))
        return None
    return items


def _fingerprint(text: str, path: str, problems: list[Problem]) -> str | None:
    if _SHORT.match(text):
        return text
    if _LONG.match(text):
        return text.replace(":", "").lower()
    problems.append(
        Problem(path, f"unsupported fingerprint format {text!r} (64 lower-case hex, or AB:CD:… upper-case)")
    )
    return None


def _spki(text: str, path: str, problems: list[Problem]) -> str | None:
    try:
        if len(base64.b64decode(text, validate=True)) == 32:
            return text
    except (binascii.Error, ValueError):
        pass
    problems.append(Problem(path, f"spki_hash must be a base64 SHA-256 hash, got {text!r}"))
    return None


def parse_client_certificate(value: Any, sub: str, path: str, problems: list[Problem]) -> ClientCertificate | None:
    if not isinstance(value, dict) or not value:
        problems.append(Problem(path, f"expected an object with {', '.join(KEYS)}, got {describe(value)}"))
        return None
    before = len(problems)
    found: dict[str, Any] = {}
    for key, data in value.items():
        where = f"{path}.{key}"
        if key in ("fingerprint", "spki_hash"):
            items = _strings(data, where, problems) or []
            check = _fingerprint if key == "fingerprint" else _spki
            found[key] = frozenset(v for v in (check(i, where, problems) for i in items) if v)
        elif key in ("san_email", "san_dns", "san_uri"):
            found[key] = parse_string_matcher(data, where, problems)
        else:
            problems.append(
                Problem(where, f"unsupported certificate matcher{suggest(str(key), KEYS)} (known: {', '.join(KEYS)})")
            )
    if len(problems) > before:
        return None
    return ClientCertificate(
        fingerprints=found.get("fingerprint"),
        spki_hashes=found.get("spki_hash"),
        san_email=found.get("san_email"),
        san_dns=found.get("san_dns"),
        san_uri=found.get("san_uri"),
    )
