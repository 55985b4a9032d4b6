"""ID token verification (OpenID Connect Core 1.0 §3.1.3.7), with the algorithm fixed by policy.

The allowed algorithms are the asymmetric ones the provider advertises; the token header never
chooses them. So `alg: none` and HS256 "signed" with the provider's public key both fail.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import jwt

from authz.errors import InvalidIdToken

ASYMMETRIC = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"})
LEEWAY = 60


@dataclass(frozen=True, slots=True)
class ProviderKey:
    """One key of the provider's JWKS: its id, its declared algorithm (if any), the public key."""

    kid: str
    alg: str | None
    key: Any

    @classmethod
    def from_jwk(cls, jwk: Mapping[str, Any]) -> ProviderKey:
        """Parse one JWK; ValueError for keys that are not public signing keys."""
        if jwk.get("use") not in (None, "sig"):
            raise ValueError("not a signing key")
        try:
            parsed = jwt.PyJWK(dict(jwk))
        except jwt.PyJWTError as exc:
            raise ValueError(str(exc)) from None
        alg = jwk.get("alg")
        return cls(str(jwk.get("kid", "")), alg if isinstance(alg, str) else None, parsed.key)


def allowed_algorithms(advertised: Iterable[str] | None) -> frozenset[str]:
    """Asymmetric algorithms the provider advertises (RS256 when it says nothing, §3.1.3.7 (7))."""
    return ASYMMETRIC & set(advertised or ("RS256",))


def unverified_header(raw: str, allowed: frozenset[str]) -> tuple[str, str]:
    """(alg, kid) from the header, refusing any algorithm outside the allow-list up front."""
    try:
        header = jwt.get_unverified_header(raw)
    except jwt.PyJWTError:
        raise InvalidIdToken("the ID token is malformed") from None
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in allowed:
        raise InvalidIdToken(f"the ID token uses a forbidden algorithm {str(alg)[:16]!r}")
    kid = header.get("kid")
    return alg, kid if isinstance(kid, str) else ""


def verify_id_token(
    raw: str,
    key: ProviderKey,
    *,
    alg: str,
    issuer: str,
    client_id: str,
    nonce: str | None,
    now: float,
) -> dict[str, Any]:
    """Verify signature, iss, aud, azp, exp, iat and nonce; InvalidIdToken with the reason otherwise.

    `nonce` is None only for an ID token from a refresh (OpenID Connect Core §12.2), which answers no
    authentication request of ours: whatever nonce it carries is not checked.
    """
    if key.alg is not None and key.alg != alg:
        raise InvalidIdToken("the ID token's algorithm does not match its key")
    try:
        claims: dict[str, Any] = jwt.decode(
            raw,
            key.key,
            algorithms=[alg],
            audience=client_id,
            issuer=issuer,
            options={
                "verify_exp": False,
                "verify_iat": False,
                "verify_nbf": False,
                "require": ["sub", "exp", "iat"],
            },
        )
    except jwt.PyJWTError as exc:
        raise InvalidIdToken(f"the ID token is not valid: {exc}") from None
    if not isinstance(claims["exp"], int | float) or claims["exp"] + LEEWAY <= now:
        raise InvalidIdToken("the ID token has expired")
    if not isinstance(claims["iat"], int | float) or claims["iat"] - LEEWAY > now:
        raise InvalidIdToken("the ID token was issued in the future")
    audience = claims.get("aud")
    azp = claims.get("azp")
    if isinstance(audience, list) and len(audience) > 1 and azp is None:
        raise InvalidIdToken("the ID token has several audiences but no azp")
    if azp is not None and azp != client_id:
        raise InvalidIdToken("the ID token was issued to another party (azp)")
    if nonce is not None and not hmac.compare_digest(str(claims.get("nonce", "")).encode(), nonce.encode()):
        raise InvalidIdToken("the ID token's nonce does not match this sign-in")
    if not isinstance(claims["sub"], str) or not claims["sub"]:
        raise InvalidIdToken("the ID token has no subject")
    return claims


def stored_claims(raw: str) -> dict[str, Any]:
    """The payload of an ID token authz verified earlier and kept in its own store; {} if unreadable.

    Not verified again, on purpose: it was verified when it arrived (at sign-in or a refresh) and has
    lived only in authz's session store since. Re-verifying would fail for the wrong reasons: it has
    expired by the time a refresh reads it, and the key that signed it may have been rotated away.
    Never use this for a token that came from anywhere else.
    """
    try:
        claims = jwt.decode(raw, options={"verify_signature": False})
    except jwt.PyJWTError:
        return {}
    return claims if isinstance(claims, dict) else {}
