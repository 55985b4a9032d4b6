"""Client certificates at the edge: `downstream_mtls`, with Pomerium's keys and meanings.

    downstream_mtls:
      ca_file: clients-ca.pem        # or ca (base64 PEM): the CAs a client certificate must chain to
      crl_file: clients.crl.pem      # or crl (base64 PEM): revoked certificates, one CRL per issuing CA
      enforcement: policy_with_default_deny   # | policy | reject_connection
      max_verify_depth: 1            # 1: issued by a CA of `ca` itself; 2: one intermediate; 0: no limit
      match_subject_alt_names:       # the leaf must have a SAN matching one of these (RE2, whole value)
        - email: '.*@example\\.com'
        - uri: 'spiffe://example\\.com/.*'

The enforcement modes:
- `policy_with_default_deny` (the default): a request without a valid certificate is answered 495
  before any policy or sign-in; a valid one goes on to the route's policy.
- `policy`: the certificate (valid or not) is only offered to the policy's `client_certificate` and
  `invalid_client_certificate` criteria.
- `reject_connection`: Envoy itself refuses the TLS handshake without a valid certificate, and authz
  checks again.

A file is read by Envoy from its path and by authz at load (and reload); an inline PEM is given to
both inline.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509

from authz.config import pem
from authz.config.model import DownstreamMtls, SanMatcher
from authz.config.tls import pem_source
from authz.schema.reader import Node, describe
from authz.schema.regex import compile_regex

ENFORCEMENT = ("policy_with_default_deny", "policy", "reject_connection")
SAN_TYPES = ("email", "dns", "uri", "ip_address", "user_principal_name")
MTLS_KEYS = ("ca", "ca_file", "crl", "crl_file", "enforcement", "match_subject_alt_names", "max_verify_depth")


def revocation_lists(data: bytes) -> list[x509.CertificateRevocationList] | None:
    """Every CRL of a PEM bundle; None when one does not parse or there is none."""
    marker = b"-----BEGIN X509 CRL-----"
    blocks = [marker + part for part in data.split(marker)[1:]]
    try:
        return [x509.load_pem_x509_crl(block) for block in blocks] or None
    except ValueError:
        return None


def _san_matchers(node: Node) -> tuple[SanMatcher, ...]:
    raw = node.raw("match_subject_alt_names")
    if raw is None:
        return ()
    if not isinstance(raw, list):
        node.error("match_subject_alt_names", f"expected a list of {{type: regex}}, got {describe(raw)}")
        return ()
    matchers = []
    for i, item in enumerate(raw):
        where = f"match_subject_alt_names[{i}]"
        if not isinstance(item, dict) or len(item) != 1:
            node.error(where, f"expected one of {', '.join(SAN_TYPES)} with a regex, got {describe(item)}")
            continue
        ((kind, pattern),) = item.items()
        if kind not in SAN_TYPES:
            node.error(where, f"unknown SAN type {kind!r} (known: {', '.join(SAN_TYPES)})")
        elif not isinstance(pattern, str) or not pattern:
            node.error(f"{where}.{kind}", f"expected a regex, got {describe(pattern)}")
        else:
            try:
                compile_regex(pattern)
            except ValueError as exc:
                node.error(f"{where}.{kind}", f"invalid RE2 regex: {exc}")
                continue
            matchers.append(SanMatcher(kind, pattern))
    return tuple(matchers)


def read_downstream_mtls(
    node: Node, tls_listener: bool, base: Path, read: Callable[[str], str], warnings: list[str]
) -> DownstreamMtls | None:
    """`downstream_mtls`, or None when it is not set. Its CA and CRL are parsed here: what Envoy
    would refuse at start is a config error naming the key."""
    raw = node.raw("downstream_mtls")
    if raw is None:
        return None
    if not isinstance(raw, dict):
        node.error("downstream_mtls", f"expected a mapping, got {describe(raw)}")
        return None
    sub = Node(raw, node.at("downstream_mtls"), node.problems)
    before = len(node.problems)
    if not tls_listener:
        node.error("downstream_mtls", "client certificates need a TLS listener: set certificate_file and key_file")
    ca = pem_source(sub, "ca", base, read)
    if ca is None and not sub.has("ca_file") and not sub.has("ca"):
        sub.error("ca", "is required: the CAs that issue client certificates (ca_file, or ca as base64 PEM)")
    elif ca is not None and pem.certificates(ca[1]) is None:
        sub.error("ca_file" if sub.has("ca_file") else "ca", "holds no PEM certificate (value not shown)")
    crl = pem_source(sub, "crl", base, read)
    crl_key = "crl_file" if sub.has("crl_file") else "crl"
    lists = revocation_lists(crl[1]) if crl is not None else []
    if lists is None:
        sub.error(crl_key, "holds no readable PEM CRL (X509 CRL)")
    anchors = (pem.certificates(ca[1]) or []) if ca is not None else []
    for crl_list in lists or []:
        issuers = [a for a in anchors if a.subject == crl_list.issuer]
        # A CRL of an intermediate is checked against the intermediate a client presents; one of a
        # CA listed here must carry that CA's signature, or it would revoke nothing.
        if issuers and not any(crl_list.is_signature_valid(a.public_key()) for a in issuers):  # type: ignore[arg-type]
            sub.error(crl_key, f"the CRL of {crl_list.issuer.rfc4514_string()} is not signed by that CA's key")
    now = datetime.now(UTC)
    for stale in [c for c in lists or [] if c.next_update_utc is not None and c.next_update_utc < now]:
        warnings.append(
            f"{sub.at(crl_key)}: the CRL of {stale.issuer.rfc4514_string()} was due for renewal on"
            f" {stale.next_update_utc:%Y-%m-%d %H:%M} UTC: authz keeps using it, and with reject_connection"
            " Envoy refuses every certificate of that CA until a fresh one is loaded"
        )
    enforcement = sub.choice("enforcement", "policy_with_default_deny", ENFORCEMENT)
    depth = sub.integer("max_verify_depth", 1)
    if not 0 <= depth <= 16:
        sub.error("max_verify_depth", f"must be 0 (no limit) to 16, got {depth}")
    matchers = _san_matchers(sub)
    sub.finish(MTLS_KEYS)
    if len(node.problems) > before or ca is None:
        return None
    if enforcement == "policy":
        warnings.append(
            "downstream_mtls.enforcement: policy: requests without a valid client certificate reach the routes'"
            " policies; only a rule with invalid_client_certificate or client_certificate refuses them"
        )
    if enforcement == "reject_connection":
        warnings.append(
            "downstream_mtls.enforcement: reject_connection: every connection to the listener needs a valid client"
            " certificate, the sign-in pages and the JWKS (/.well-known/pomerium) included"
        )
    return DownstreamMtls(
        ca=ca[0],
        ca_pem=ca[1],
        crl=crl[0] if crl else None,
        crl_pem=crl[1] if crl else b"",
        enforcement=enforcement,
        match_subject_alt_names=matchers,
        max_verify_depth=depth,
    )
