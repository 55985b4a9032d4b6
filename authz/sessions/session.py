"""Sessions: the stored record, and the sealed handle that the `_pomerium` cookie carries.

The cookie is an opaque handle {session id, user id, host, issued, expiry} sealed with AES-256-GCM
under a key derived (HKDF-SHA256) from `cookie_secret`. It is not byte-compatible with Pomerium's
HS256 cookie, on purpose: Pomerium's is signed but readable, this one is also confidential.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from authz.errors import InvalidSession
from authz.sessions.sealing import Sealer

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
    token_expires_at: int = 0  # when the IdP access token expires (0: unknown or never)

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


class HandleCodec:
    """Seals and opens session handles."""

    def __init__(self, cookie_secret: bytes) -> None:
        self._sealer = Sealer(cookie_secret, b"session-cookie", max_size=_MAX_TOKEN)

    def seal(self, handle: SessionHandle) -> str:
        """The cookie value (also usable as `Authorization: Pomerium <token>`)."""
        return self._sealer.seal([handle.session_id, handle.user_id, handle.host, handle.issued_at, handle.expires_at])

    def open(self, token: str, hostname: str, now: float) -> SessionHandle:
        """Open and check a handle; InvalidSession for anything tampered, foreign or expired."""
        try:
            sid, uid, host, iat, exp = self._sealer.open(token)
        except (ValueError, TypeError) as exc:
            raise InvalidSession(f"session token: {exc}") from None
        if not all(isinstance(v, str) for v in (sid, uid, host)) or not all(isinstance(v, int) for v in (iat, exp)):
            raise InvalidSession("session token payload is malformed")
        handle = SessionHandle(sid, uid, host, iat, exp)
        if exp <= now:
            raise InvalidSession("session token expired")
        if iat > now + _CLOCK_SKEW:
            raise InvalidSession("session token issued in the future")
        if not handle.valid_for(hostname):
            raise InvalidSession("session token was issued for another host")
        return handle
