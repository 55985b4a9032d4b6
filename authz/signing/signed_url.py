"""HMAC-signed, expiring URLs (the sign-in redirect): HMAC-SHA512/256 as Pomerium uses.

The MAC covers a canonical form (the endpoint, the redirect target, issued and expiry), not the
query string's spelling, so re-encoding by a proxy cannot break a signature or smuggle a target.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlencode, urlsplit

from authz.errors import BadRequest

LIFETIME = 300
LEEWAY = 60


_STANDARD = ("pomerium_redirect_uri", "pomerium_issued", "pomerium_expiry", "pomerium_signature")


def _mac(key: bytes, endpoint: str, target: str, issued: int, expiry: int, extra: Mapping[str, str]) -> bytes:
    parts = [endpoint, target, str(issued), str(expiry)]
    parts += [f"{name}={extra[name]}" for name in sorted(extra)]
    return hmac.new(key, "\n".join(parts).encode(), "sha512_256").digest()


def sign(key: bytes, endpoint: str, target: str, now: float, extra: Mapping[str, str] | None = None) -> str:
    """`endpoint?pomerium_redirect_uri=…[&pomerium_x=…]&pomerium_issued=…&pomerium_expiry=…&pomerium_signature=…`.

    Extra parameters (named `pomerium_*`) are covered by the signature too.
    """
    issued = int(now)
    expiry = issued + LIFETIME
    more = dict(extra or {})
    signature = base64.urlsafe_b64encode(_mac(key, endpoint, target, issued, expiry, more)).rstrip(b"=")
    query = urlencode(
        {
            "pomerium_redirect_uri": target,
            **more,
            "pomerium_issued": issued,
            "pomerium_expiry": expiry,
            "pomerium_signature": signature.decode(),
        }
    )
    return f"{endpoint}?{query}"


@dataclass(frozen=True, slots=True)
class SignedTarget:
    target: str
    issued: int
    expiry: int
    extra: Mapping[str, str] = field(default_factory=dict)


def verify(key: bytes, endpoint: str, query: str, now: float) -> SignedTarget:
    """Check a signed URL's query for `endpoint`; BadRequest if unsigned, altered or expired."""
    params = parse_qs(query, keep_blank_values=True, strict_parsing=False)
    try:
        (target,) = params["pomerium_redirect_uri"]
        (issued_text,) = params["pomerium_issued"]
        (expiry_text,) = params["pomerium_expiry"]
        (signature,) = params["pomerium_signature"]
        issued, expiry = int(issued_text), int(expiry_text)
        given = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
        extra = {}
        for name, values in params.items():
            if name.startswith("pomerium_") and name not in _STANDARD:
                (extra[name],) = values
    except (KeyError, ValueError, binascii.Error):
        raise BadRequest("the link is not signed") from None
    if not hmac.compare_digest(given, _mac(key, endpoint, target, issued, expiry, extra)):
        raise BadRequest("the link's signature does not match")
    if not issued - LEEWAY <= now <= expiry + LEEWAY:
        raise BadRequest("the link has expired")
    if urlsplit(target).scheme not in ("http", "https"):
        raise BadRequest("the link names an unsupported target")
    return SignedTarget(target, issued, expiry, extra)
