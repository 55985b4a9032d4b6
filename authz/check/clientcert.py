"""The client certificate verdict under `downstream_mtls`: authz checks the chain Envoy passes itself.

Envoy asks for a certificate and, in the two policy modes, accepts any (else a bad one would fail
the handshake and nobody would see why). Here the presented chain is checked as a CA-issued client
certificate must be:

1. it parses, and the leaf is within its validity period;
2. it chains to a CA of `ca` within `max_verify_depth` (cryptography's RFC 5280 client verifier,
   which also checks every certificate's validity, CA constraints and the clientAuth usage);
3. no certificate of the built chain is revoked by a CRL of its issuer (the library checks no CRL);
4. with `match_subject_alt_names`, one of the leaf's SANs matches one of them in full (RE2, as Envoy).

A verdict depends on the chain and the time only, so it is cached by chain until the next moment a
certificate involved starts or stops being valid; a reload builds a new `ClientCertificates`.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any

from cryptography import x509
from cryptography.x509.oid import ObjectIdentifier
from cryptography.x509.verification import Criticality, ExtensionPolicy, Policy, PolicyBuilder, Store, VerificationError

from authz.config.model import DownstreamMtls
from authz.config.mtls import revocation_lists
from authz.policy.reasons import Reason
from authz.schema.regex import compile_regex

MAX_CHAIN_TEXT = 64 * 1024  # a longer "chain" is refused unread
MAX_CHAIN_CERTIFICATES = 10
CACHE_SIZE = 4096
CACHE_KEY_TEXT = 4096  # chains longer than this are cached under their SHA-256
_UPN = ObjectIdentifier("1.3.6.1.4.1.311.20.2.3")  # Microsoft's user principal name (an otherName)


def _signs_certificates(policy: Policy, cert: x509.Certificate, usage: x509.KeyUsage | None) -> None:
    if usage is not None and not usage.key_cert_sign:
        raise ValueError("a CA's key usage does not allow signing certificates")


def _is_a_ca(policy: Policy, cert: x509.Certificate, constraints: x509.BasicConstraints) -> None:
    if not constraints.ca:
        raise ValueError("basicConstraints does not say CA")


# The library's web PKI profile, loosened to what the CAs people make with OpenSSL produce and
# Envoy (BoringSSL) accepts: a CA without a key usage extension (openssl's default v3_ca), a
# basicConstraints that is not marked critical, no authority key identifier; a client certificate
# without SANs (`match_subject_alt_names` is what requires them). What stays: a CA must say it is
# one, its path length holds, a leaf that lists usages must list clientAuth, and version 1
# certificates are refused (the library has no switch for them).
_CA_POLICY = (
    ExtensionPolicy.webpki_defaults_ca()
    .may_be_present(x509.KeyUsage, Criticality.AGNOSTIC, _signs_certificates)
    .require_present(x509.BasicConstraints, Criticality.AGNOSTIC, _is_a_ca)
    .may_be_present(x509.AuthorityKeyIdentifier, Criticality.AGNOSTIC, None)
)
_LEAF_POLICY = (
    ExtensionPolicy.webpki_defaults_ee()
    .may_be_present(x509.SubjectAlternativeName, Criticality.AGNOSTIC, None)
    .may_be_present(x509.AuthorityKeyIdentifier, Criticality.AGNOSTIC, None)
)
_SAN_TYPES: dict[str, Any] = {
    "email": x509.RFC822Name,
    "dns": x509.DNSName,
    "uri": x509.UniformResourceIdentifier,
}


@dataclass(frozen=True, slots=True)
class CertificateVerdict:
    """What authz concluded about the connection's client certificate, and why (for the 495 page)."""

    presented: bool
    valid: bool
    reason: str  # valid-client-certificate | client-certificate-required | invalid-client-certificate
    detail: str = ""  # why it is not valid, in a sentence a user can act on


NOT_PRESENTED = CertificateVerdict(
    False,
    False,
    Reason.CLIENT_CERTIFICATE_REQUIRED,
    "No client certificate was presented. This site requires one issued by its certificate authority:"
    " install it in your browser or device, or pass it to your client (curl --cert).",
)
VALID = CertificateVerdict(True, True, Reason.VALID_CLIENT_CERTIFICATE)


def _invalid(why: str) -> CertificateVerdict:
    return CertificateVerdict(True, False, Reason.INVALID_CLIENT_CERTIFICATE, f"The client certificate {why}.")


def _utf8_string(der: bytes) -> str | None:
    """The text of a DER UTF8String (short or long length form), or None for anything else."""
    if len(der) < 2 or der[0] != 0x0C:
        return None
    size, start = der[1], 2
    if size & 0x80:
        count = size & 0x7F
        if not 1 <= count <= 3 or len(der) < 2 + count:
            return None
        size, start = int.from_bytes(der[2 : 2 + count], "big"), 2 + count
    if len(der) != start + size:
        return None
    return der[start:].decode("utf-8", "replace")


def _ip_text(address: IPv4Address | IPv6Address | IPv4Network | IPv6Network) -> str:
    """An IP SAN as Envoy writes it (inet_ntop: `::ffff:10.0.0.1` for an IPv4-mapped address)."""
    if isinstance(address, IPv6Address):
        return socket.inet_ntop(socket.AF_INET6, address.packed)
    return str(address)


def san_values(cert: x509.Certificate, kind: str) -> list[str]:
    """The certificate's SANs of one `match_subject_alt_names` type, as text, as Envoy reads them."""
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    if kind == "user_principal_name":
        others = sans.get_values_for_type(x509.OtherName)
        return [text for o in others if o.type_id == _UPN and (text := _utf8_string(o.value)) is not None]
    if kind == "ip_address":
        return [_ip_text(a) for a in sans.get_values_for_type(x509.IPAddress)]
    return [str(v) for v in sans.get_values_for_type(_SAN_TYPES[kind])]


def _library_reason(message: str) -> str:
    """cryptography's message without the certificate it names (a repr nobody needs on a page)."""
    message = message.removeprefix("validation failed: ").split(" (encountered processing")[0]
    return message[:200]


class ClientCertificates:
    """Verifies presented chains against one `downstream_mtls`, with a bounded cache of verdicts."""

    def __init__(self, mtls: DownstreamMtls) -> None:
        self.mtls = mtls
        self._anchors = x509.load_pem_x509_certificates(mtls.ca_pem)
        self._store = Store(self._anchors)
        self._crls: dict[x509.Name, list[x509.CertificateRevocationList]] = {}
        for crl in (revocation_lists(mtls.crl_pem) if mtls.crl_pem else None) or []:
            self._crls.setdefault(crl.issuer, []).append(crl)
        self._sans = tuple((m.kind, compile_regex(m.pattern)) for m in mtls.match_subject_alt_names)
        # max_verify_depth counts the chain as Envoy does (1: the leaf's issuer is a trusted CA);
        # cryptography's depth counts only the intermediates between them.
        self._depth = mtls.max_verify_depth - 1 if mtls.max_verify_depth else None
        self._anchor_times = self._moments(self._anchors)
        self._cache: dict[str, tuple[CertificateVerdict, float, float]] = {}

    @staticmethod
    def _moments(certs: Iterable[x509.Certificate]) -> list[float]:
        """The instants at which a certificate starts or stops being valid (valid through not_after)."""
        out = []
        for cert in certs:
            out.append(cert.not_valid_before_utc.timestamp())
            out.append(cert.not_valid_after_utc.timestamp() + 1e-6)
        return out

    def verify(self, chain: str | None, now: datetime) -> CertificateVerdict:
        """The verdict on a presented chain (leaf first, PEM), or NOT_PRESENTED for none."""
        if not chain:
            return NOT_PRESENTED
        t = now.timestamp()
        # A long chain is cached under its digest: the cache stays small whatever clients present.
        key = chain if len(chain) <= CACHE_KEY_TEXT else hashlib.sha256(chain.encode("utf-8", "replace")).hexdigest()
        hit = self._cache.get(key)
        if hit is not None and hit[1] <= t < hit[2]:
            return hit[0]
        try:
            verdict, moments = self._verify(chain, now)
        except Exception:  # a hostile chain (a malformed extension): invalid, never a 503
            verdict, moments = _invalid("could not be read as X.509"), []
        before = max((m for m in moments if m <= t), default=-math.inf)
        after = min((m for m in moments if m > t), default=math.inf)
        if len(self._cache) >= CACHE_SIZE:
            self._cache.clear()  # many distinct chains: start over rather than grow
        self._cache[key] = (verdict, before, after)
        return verdict

    def _verify(self, chain: str, now: datetime) -> tuple[CertificateVerdict, list[float]]:
        moments = list(self._anchor_times)
        if len(chain) > MAX_CHAIN_TEXT:
            return _invalid("chain is too long to be read (over 64 KiB)"), moments
        try:
            certs = x509.load_pem_x509_certificates(chain.encode("ascii", "replace"))
        except ValueError:
            return _invalid("could not be read as X.509"), moments
        if len(certs) > MAX_CHAIN_CERTIFICATES:
            return _invalid(f"chain has more than {MAX_CHAIN_CERTIFICATES} certificates"), moments
        moments += self._moments(certs)
        leaf = certs[0]
        if now < leaf.not_valid_before_utc:
            return _invalid(f"is not valid before {leaf.not_valid_before_utc:%Y-%m-%d %H:%M:%S} UTC"), moments
        if now > leaf.not_valid_after_utc:
            return _invalid(f"expired on {leaf.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC"), moments
        builder = PolicyBuilder().store(self._store).time(now.astimezone(UTC))
        builder = builder.extension_policies(ca_policy=_CA_POLICY, ee_policy=_LEAF_POLICY)
        if self._depth is not None:
            builder = builder.max_chain_depth(self._depth)
        try:
            built = builder.build_client_verifier().verify(leaf, certs[1:]).chain
        except VerificationError as exc:
            return self._chain_failure(str(exc)), moments
        for cert, issuer in itertools.pairwise(built):
            for crl in self._crls.get(issuer.subject, ()):
                if crl.get_revoked_certificate_by_serial_number(cert.serial_number) is None:
                    continue
                if crl.is_signature_valid(issuer.public_key()):  # type: ignore[arg-type]
                    whose = "has been revoked" if cert is built[0] else "was issued by a CA that has been revoked"
                    return _invalid(whose), moments
        if self._sans and not any(
            pattern.fullmatch(value) for kind, pattern in self._sans for value in san_values(leaf, kind)
        ):
            return _invalid("has no subject alternative name that this site accepts"), moments
        return VALID, moments

    def _chain_failure(self, message: str) -> CertificateVerdict:
        if "max depth" in message:
            return _invalid(
                f"is issued through more intermediate CAs than this site accepts (max_verify_depth"
                f" {self.mtls.max_verify_depth})"
            )
        if "not valid at validation time" in message:
            return _invalid("chains through a CA certificate that is expired or not yet valid")
        if "must be an X509v3 certificate" in message:
            return _invalid(
                "is (or chains through) an X.509 version 1 certificate, with no extensions: reissue it as"
                " version 3 (with openssl x509 -req, pass -extfile with at least extendedKeyUsage=clientAuth)"
            )
        if "candidates exhausted" in message and "no interior errors" in message:
            return _invalid("is not issued by a certificate authority this site trusts")
        return _invalid(f"is not valid for client authentication here ({_library_reason(message)})")
