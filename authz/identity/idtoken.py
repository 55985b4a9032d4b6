"""ID token verification (OpenID Connect Core 1.0 §3.1.3.7), with the algorithm fixed by policy.

The allowed algorithms are the asymmetric ones the provider advertises; the token header never
chooses them. So `alg: none` and HS256 "signed" with the provider's public key both fail.

A header or payload whose JSON repeats a key is refused (RFC 7519 §4 lets a parser either refuse
it or keep the last one): parsers disagree on which one counts (Python keeps the last, others the
first), so such a token can name one user to authz and another to whatever else reads it.
"""

from __future__ import annotations

import base64
import hmac
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import jwt

from authz.errors import InvalidIdToken

ASYMMETRIC = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"})
LEEWAY = 60


class DuplicateKey(ValueError):
    """A JSON object names the same key twice; `key` is that key."""

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"duplicate key {key[:40]!r}")


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise DuplicateKey(key)
        obj[key] = value
    return obj


def loads_unique(data: str | bytes) -> Any:
    """`json.loads`, but DuplicateKey (a ValueError) for an object, at any depth, with a repeated key."""
    return json.loads(data, object_pairs_hook=_unique_pairs)


def _refuse_duplicate_keys(raw: str) -> None:
    """InvalidIdToken unless the header and the payload are JSON without a repeated key."""
    # Split and decode exactly as pyjwt does, so both read the same bytes.
    signing_input, _, _ = raw.rpartition(".")
    header, _, payload = signing_input.partition(".")
    for part, segment in (("header", header), ("payload", payload)):
        try:
            loads_unique(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
        except DuplicateKey as exc:
            raise InvalidIdToken(f"the ID token's {part} has a duplicate key {exc.key[:40]!r}") from None
        except (ValueError, RecursionError):  # binascii.Error and JSONDecodeError are ValueErrors
            raise InvalidIdToken("the ID token is malformed") from None


def _is_time(value: object) -> bool:
    """A NumericDate (RFC 7519 §2): a JSON number, which a JSON `true` is not."""
    return isinstance(value, int | float) and not isinstance(value, bool)


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
    """(alg, kid) from the header, refusing a repeated key or an algorithm outside the allow-list up front."""
    _refuse_duplicate_keys(raw)
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
    """Verify JSON, signature, iss, aud, azp, exp, iat, nbf and nonce; InvalidIdToken with the reason otherwise.

    `nonce` is None only for an ID token from a refresh (OpenID Connect Core §12.2), which answers no
    authentication request of ours: whatever nonce it carries is not checked.
    """
    if key.alg is not None and key.alg != alg:
        raise InvalidIdToken("the ID token's algorithm does not match its key")
    _refuse_duplicate_keys(raw)
    try:
        claims: dict[str, Any] = jwt.decode(
            raw,
            key.key,
            algorithms=[alg],
            audience=client_id,
            issuer=issuer,
            options={  # the times are checked below, against the injected clock
                "verify_exp": False,
                "verify_iat": False,
                "verify_nbf": False,
                "require": ["sub", "exp", "iat"],
            },
        )
    except jwt.PyJWTError as exc:
        raise InvalidIdToken(f"the ID token is not valid: {exc}") from None
    for name in ("exp", "iat", "nbf"):
        if name in claims and not _is_time(claims[name]):
            raise InvalidIdToken(f"the ID token's {name} is not a time")
    if claims["exp"] + LEEWAY <= now:
        raise InvalidIdToken("the ID token has expired")
    if claims["iat"] - LEEWAY > now:
        raise InvalidIdToken("the ID token was issued in the future")
    # nbf is optional (RFC 7519 §4.1.5) but binding when present, with the same leeway as iat.
    if claims.get("nbf", now) - LEEWAY > now:
        raise InvalidIdToken("the ID token is not valid yet (its nbf is in the future)")
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
