"""The signed `X-Pomerium-Jwt-Assertion` and the claim headers (reference §2.1, §2.5)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from typing import Any

import jwt

from authz.config.model import IssuerFormat
from authz.keys import SigningKey
from authz.session import Session

LIFETIME = 300
BASE_CLAIMS = frozenset({"iss", "aud", "jti", "iat", "exp", "sub", "user", "email", "groups", "sid", "name"})


def _joined(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return "" if value is None else str(value)


def build_claims(
    *,
    hostname: str,
    session: Session | None,
    now: int,
    issuer_format: IssuerFormat,
    extra: tuple[str, ...] = (),
    new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
) -> dict[str, Any]:
    """The assertion payload: base claims always present, `groups` always a list, no `nbf`."""
    issuer = f"https://{hostname}/" if issuer_format is IssuerFormat.URI else hostname
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": hostname,
        "jti": new_id(),
        "iat": now,
        "exp": now + LIFETIME,
        "sub": session.user_id if session else "",
        "user": session.user_id if session else "",
        "email": session.email if session else "",
        "groups": list(session.groups) if session else [],
        "sid": session.id if session else "",
        "name": session.name if session else "",
    }
    source: Mapping[str, Any] = session.claims if session else {}
    for name in extra:
        if name not in BASE_CLAIMS:
            claims[name] = _joined(source.get(name))
    return claims


def sign(key: SigningKey, claims: Mapping[str, Any]) -> str:
    """Compact JWS with `typ: JWT`, `kid` = RFC 7638 thumbprint, ES256 or RS256 by key type."""
    return jwt.encode(dict(claims), key.private, algorithm=key.algorithm, headers={"kid": key.kid})


def claim_headers(pairs: tuple[tuple[str, str], ...], claims: Mapping[str, Any]) -> list[tuple[str, str]]:
    """`jwt_claims_headers` values from the payload: lists joined with ',', missing claims ''."""
    return [(header, _joined(claims.get(claim))) for header, claim in pairs]
