"""Sessions: the stored record, and the sealed handle that the `_pomerium` cookie carries.

The cookie is an opaque handle {session id, user id, host, issued, expiry} sealed with AES-256-GCM
under a key derived (HKDF-SHA256) from `cookie_secret`. It is not byte-compatible with Pomerium's
HS256 cookie, on purpose: Pomerium's is signed but readable, this one is also confidential.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from authz.errors import InvalidSession

_VERSION = b"\x01"
_AAD = b"authz session handle v1"
_NONCE = 12
_MAX_TOKEN = 4096
_CLOCK_SKEW = 60


@dataclass(frozen=True, slots=True)
class Session:
    """A signed-in user's session as stored (IdP tokens included; never logged)."""

    id: str
    user_id: str
    email: str = ""
    name: str = ""
    groups: tuple[str, ...] = ()
    claims: Mapping[str, Any] = field(default_factory=dict)
    issued_at: int = 0
    expires_at: int = 0
    id_token: str = field(default="", repr=False)
    access_token: str = field(default="", repr=False)
    refresh_token: str = field(default="", repr=False)

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Session:
        data = json.loads(text)
        data["groups"] = tuple(data.get("groups") or ())
        return cls(**data)


@dataclass(frozen=True, slots=True)
class SessionHandle:
    """What the cookie carries: enough to find the session, bound to one host and a lifetime."""

    session_id: str
    user_id: str
    host: str
    issued_at: int
    expires_at: int

    def valid_for(self, hostname: str) -> bool:
        """Host-only handles name one host; `.example.com` (with cookie_domain) covers subdomains."""
        if self.host.startswith("."):
            return hostname == self.host[1:] or hostname.endswith(self.host)
        return hostname == self.host


def derive_key(secret: bytes, purpose: bytes) -> bytes:
    """A 32-byte key for one purpose, derived from a configured secret (HKDF-SHA256, RFC 5869)."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(secret)


class HandleCodec:
    """Seals and opens session handles with AES-256-GCM."""

    def __init__(self, cookie_secret: bytes) -> None:
        self._aead = AESGCM(derive_key(cookie_secret, b"authz/session-cookie"))

    def seal(self, handle: SessionHandle) -> str:
        """The cookie value (also usable as `Authorization: Pomerium <token>`)."""
        plain = json.dumps(
            [handle.session_id, handle.user_id, handle.host, handle.issued_at, handle.expires_at],
            separators=(",", ":"),
        ).encode()
        nonce = os.urandom(_NONCE)
        sealed = _VERSION + nonce + self._aead.encrypt(nonce, plain, _AAD)
        return base64.urlsafe_b64encode(sealed).rstrip(b"=").decode("ascii")

    def open(self, token: str, hostname: str, now: float) -> SessionHandle:
        """Open and check a handle; InvalidSession for anything tampered, foreign or expired."""
        if not token or len(token) > _MAX_TOKEN:
            raise InvalidSession("empty or oversized session token")
        try:
            raw = base64.b64decode(token + "=" * (-len(token) % 4), altchars=b"-_", validate=True)
        except (binascii.Error, ValueError):
            raise InvalidSession("session token is not base64url") from None
        if len(raw) < 1 + _NONCE + 16 or raw[:1] != _VERSION:
            raise InvalidSession("session token has an unknown format")
        try:
            plain = self._aead.decrypt(raw[1 : 1 + _NONCE], raw[1 + _NONCE :], _AAD)
            sid, uid, host, iat, exp = json.loads(plain)
        except (InvalidTag, ValueError, TypeError):
            raise InvalidSession("session token does not open with this deployment's key") from None
        if not all(isinstance(v, str) for v in (sid, uid, host)) or not all(
            isinstance(v, int) for v in (iat, exp)
        ):
            raise InvalidSession("session token payload is malformed")
        handle = SessionHandle(sid, uid, host, iat, exp)
        if exp <= now:
            raise InvalidSession("session token expired")
        if iat > now + _CLOCK_SKEW:
            raise InvalidSession("session token issued in the future")
        if not handle.valid_for(hostname):
            raise InvalidSession("session token was issued for another host")
        return handle
