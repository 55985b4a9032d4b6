"""The signed `X-Pomerium-Jwt-Assertion` and the claim headers (reference §2.1, §2.5).

Claim headers stay comma-joined as in Pomerium, so an element that holds a comma (`x,admins`
would read as `admins` to an upstream that splits), a line break, NUL or invalid text (a lone
surrogate) is left out of both the header and the assertion, which must agree; it is never
escaped into a syntax of our own. `merge_identity` logged it at sign-in. Policies still see it.

Groups pass `jwt_groups_filter` (global and per route: a group passes if either lists it). A
user in so many groups that the assertion plus the claim headers would pass GROUPS_BUDGET keeps
the groups that fit, in order, and the assertion says `groups_truncated: true`: the request
still succeeds (Envoy refuses requests whose headers pass 60 KiB by default).
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding

from authz.config.model import IssuerFormat
from authz.sessions.session import Session
from authz.signing.keys import SigningKey, b64url

log = logging.getLogger("authz.assertion")

LIFETIME = 300
BASE_CLAIMS = frozenset({"iss", "aud", "jti", "iat", "exp", "sub", "user", "email", "groups", "sid", "name"})
# The assertion plus every claim header, in bytes, that groups may fill (documented in the README).
GROUPS_BUDGET = 48 * 1024
# Room the rest of a payload and its headers is assumed to take before groups count (the JWS
# header, signature, base claims and names): generous, so the estimate errs towards fitting.
_OVERHEAD = 2048

_UNSAFE_ELEMENT = re.compile("[,\r\n\x00\ud800-\udfff]")
_UNSAFE_SCALAR = re.compile("[\r\n\x00\ud800-\udfff]")


def unsafe_element(value: str) -> bool:
    """Whether a list element cannot be comma-joined into a header and read back as itself."""
    return _UNSAFE_ELEMENT.search(value) is not None


def _element(value: Any) -> str | None:
    text = str(value)
    return None if _UNSAFE_ELEMENT.search(text) else text


def _value(value: Any) -> Any:
    """An extra claim as the assertion carries it: list elements that are safe, a scalar if it is."""
    if isinstance(value, list | tuple):
        return [e for e in map(_element, value) if e is not None]
    if value is None:
        return ""
    text = str(value)
    return "" if _UNSAFE_SCALAR.search(text) else text


def _joined(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return "" if value is None else str(value)


@lru_cache(maxsize=512)
def output_groups(groups: tuple[str, ...], allowed: frozenset[str] | None) -> tuple[str, ...]:
    """The groups the assertion and headers carry: safe elements that `allowed` lists (None: all).
    Cached: the same user's tuple comes back on every request."""
    return tuple(g for g in groups if (allowed is None or g in allowed) and not _UNSAFE_ELEMENT.search(g))


def _fit(groups: tuple[str, ...], room: float, copies: int) -> tuple[str, ...]:
    """The longest prefix of `groups` whose cost fits `room`: each group is base64url JSON in the
    assertion (4/3 of `"g",`) and `g,` in each of `copies` claim headers."""
    kept = 0
    for group in groups:
        cost = (len(json.dumps(group)) + 1) * 4 / 3 + (len(group.encode()) + 1) * copies
        if cost > room:
            break
        room -= cost
        kept += 1
    return groups[:kept]


def build_claims(
    *,
    hostname: str,
    session: Session | None,
    now: int,
    issuer_format: IssuerFormat,
    extra: tuple[str, ...] = (),
    groups_filter: frozenset[str] | None = None,
    group_headers: int = 0,
    not_after: int | None = None,
    new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
) -> dict[str, Any]:
    """The assertion payload: base claims always present, `groups` always a list, no `nbf`.

    `groups_filter` is the route's effective `jwt_groups_filter`; `group_headers` how many claim
    headers repeat the groups (they count against GROUPS_BUDGET too); `not_after` caps `exp` (the
    end of the just-in-time grant that alone let the user in)."""
    issuer = f"https://{hostname}/" if issuer_format is IssuerFormat.URI else hostname
    groups = output_groups(session.groups, groups_filter) if session else ()
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": hostname,
        "jti": new_id(),
        "iat": now,
        "exp": now + LIFETIME if not_after is None else min(now + LIFETIME, not_after),
        "sub": session.user_id if session else "",
        "user": session.user_id if session else "",
        "email": session.email if session else "",
        "groups": list(groups),
        "sid": session.id if session else "",
        "name": session.name if session else "",
    }
    source: Mapping[str, Any] = session.claims if session else {}
    for name in extra:
        if name not in BASE_CLAIMS:
            claims[name] = _joined(_value(source.get(name)))
    # Only a long list needs measuring: 8 KiB of group names cannot pass the budget.
    if sum(map(len, groups)) > 8 * 1024:
        _truncate(claims, groups, group_headers)
    return claims


def _truncate(claims: dict[str, Any], groups: tuple[str, ...], copies: int) -> None:
    others = len(json.dumps({k: v for k, v in claims.items() if k != "groups"}))
    room = GROUPS_BUDGET - _OVERHEAD - others * 4 / 3 - others  # the rest appears in headers too
    kept = _fit(groups, room, copies)
    if len(kept) < len(groups):
        claims["groups"] = list(kept)
        claims["groups_truncated"] = True
        _note_truncation(claims["sub"], len(groups), len(kept))


@lru_cache(maxsize=256)
def _note_truncation(user: str, total: int, kept: int) -> None:
    """Log a truncation once per user and size, not on every request of that user."""
    log.warning(
        "groups truncated to fit the assertion and claim headers",
        extra={"fields": {"user": user, "groups": total, "kept": kept}},
    )


_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())
_SHA256 = hashes.SHA256()
_PKCS1V15 = padding.PKCS1v15()


@lru_cache(maxsize=16)
def _header(alg: str, kid: str) -> bytes:
    """The encoded protected header of a key, built once per key."""
    header = {"alg": alg, "kid": kid, "typ": "JWT"}
    return b64url(json.dumps(header, separators=(",", ":")).encode()).encode()


def p256_raw(der: bytes) -> bytes:
    """A P-256 ECDSA signature from DER (SEQUENCE of INTEGER r, INTEGER s) to JWS r||s, 32 bytes
    each. Every length fits one byte here (at most 72 in all); an INTEGER may carry a leading zero
    byte or be shorter than 32. Slicing is a tenth of the cost of `decode_dss_signature` + to_bytes."""
    r_length = der[3]
    r = der[4 : 4 + r_length]
    s_length = der[5 + r_length]
    s = der[6 + r_length : 6 + r_length + s_length]
    return r[-32:].rjust(32, b"\0") + s[-32:].rjust(32, b"\0")


def _signature(key: SigningKey, signing_input: bytes) -> bytes:
    """The JWS signature: ES256 as r||s, 32 bytes each (RFC 7518 §3.4), or RS256."""
    private = key.private
    if isinstance(private, ec.EllipticCurvePrivateKey):
        return p256_raw(private.sign(signing_input, _ECDSA_SHA256))
    return private.sign(signing_input, _PKCS1V15, _SHA256)


def sign(key: SigningKey, claims: Mapping[str, Any]) -> str:
    """Compact JWS (RFC 7515 §7.1) with `typ: JWT`, `kid` = RFC 7638 thumbprint, ES256 or RS256.

    The header is fixed per key and encoded once, and the signature objects are built once (the
    key itself is parsed at load): per request only the payload is serialised and signed.
    """
    payload = b64url(json.dumps(claims, separators=(",", ":")).encode()).encode()
    signing_input = _header(key.algorithm, key.kid) + b"." + payload
    return (signing_input + b"." + b64url(_signature(key, signing_input)).encode()).decode()


def claim_headers(pairs: tuple[tuple[str, str], ...], claims: Mapping[str, Any]) -> list[tuple[str, str]]:
    """`jwt_claims_headers` values from the payload: lists joined with ',', missing claims ''."""
    return [(header, _joined(claims.get(claim))) for header, claim in pairs]
