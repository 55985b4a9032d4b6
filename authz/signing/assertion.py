"""The signed `X-Pomerium-Jwt-Assertion` and the claim headers (reference §2.1, §2.5)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

from jwt.algorithms import Algorithm, ECAlgorithm, RSAAlgorithm

from authz.config.model import IssuerFormat
from authz.sessions.session import Session
from authz.signing.keys import SigningKey, b64url

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


@lru_cache(maxsize=16)
def _signer(alg: str, kid: str) -> tuple[bytes, Algorithm]:
    """The encoded protected header and pyjwt's algorithm for a key, built once per key."""
    header = {"alg": alg, "kid": kid, "typ": "JWT"}
    encoded = b64url(json.dumps(header, separators=(",", ":")).encode()).encode()
    algorithm: Algorithm = ECAlgorithm(ECAlgorithm.SHA256) if alg == "ES256" else RSAAlgorithm(RSAAlgorithm.SHA256)
    return encoded, algorithm


def sign(key: SigningKey, claims: Mapping[str, Any]) -> str:
    """Compact JWS (RFC 7515 §7.1) with `typ: JWT`, `kid` = RFC 7638 thumbprint, ES256 or RS256.

    The header is fixed per key and encoded once; pyjwt's algorithm does the signature (and the
    DER to r||s conversion for ECDSA). Per request only the payload is serialised.
    """
    header, algorithm = _signer(key.algorithm, key.kid)
    payload = b64url(json.dumps(claims, separators=(",", ":")).encode()).encode()
    signing_input = header + b"." + payload
    return (signing_input + b"." + b64url(algorithm.sign(signing_input, key.private)).encode()).decode()


def claim_headers(pairs: tuple[tuple[str, str], ...], claims: Mapping[str, Any]) -> list[tuple[str, str]]:
    """`jwt_claims_headers` values from the payload: lists joined with ',', missing claims ''."""
    return [(header, _joined(claims.get(claim))) for header, claim in pairs]
