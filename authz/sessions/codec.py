"""The `_pomerium` cookie: a session handle sealed with AES-256-GCM under a key from `cookie_secret`.

The cookie is an opaque handle {session id, user id, host, issued, expiry} sealed under a key derived
(HKDF-SHA256) from `cookie_secret`. It is not byte-compatible with Pomerium's HS256 cookie, on
purpose: Pomerium's is signed but readable, this one is also confidential.
"""

from __future__ import annotations

from authz.errors import InvalidSession
from authz.sessions.sealing import Sealer
from authz.sessions.session import SessionHandle

_MAX_TOKEN = 4096
_CLOCK_SKEW = 60
# Tokens opened before, by their exact text: a browser sends the same cookie on every request, and
# opening it (AES-GCM) is a tenth of a Check. Only what decrypted and authenticated is kept; the
# expiry, issue time and host are checked on every use all the same.
_OPENED_MAX = 50_000


ROUTE = b"session-cookie"
AUTHENTICATE = b"authenticate-cookie"  # the authenticate host's own cookie: never opens a route host
# A programmatic login's token (`Authorization: Pomerium <token>`): opens a route host like the
# cookie, and is the only bearer the grants API takes, so a route cookie's value read by a script
# (cookie_http_only: false) or sent to a host under cookie_domain is no approver's credential there.
PROGRAMMATIC = b"programmatic-token"


class HandleCodec:
    """Seals and opens session handles for one purpose (route hosts, or the authenticate host)."""

    def __init__(self, cookie_secret: bytes, purpose: bytes = ROUTE) -> None:
        self._sealer = Sealer(cookie_secret, purpose, max_size=_MAX_TOKEN)
        self._opened: dict[str, SessionHandle] = {}

    def seal(self, handle: SessionHandle) -> str:
        """The cookie value (also usable as `Authorization: Pomerium <token>`)."""
        return self._sealer.seal(handle.to_wire())

    def open(self, token: str, hostname: str, now: float) -> SessionHandle:
        """Open and check a handle; InvalidSession for anything tampered, foreign or expired."""
        handle = self.open_anywhere(token, now)
        if not handle.valid_for(hostname):
            raise InvalidSession("session token was issued for another host")
        return handle

    def open_anywhere(self, token: str, now: float) -> SessionHandle:
        """Open and check a handle whatever host it names (a bearer token for the grants API, which
        any host serves); InvalidSession for anything tampered or expired."""
        handle = self._opened.get(token)
        if handle is None:
            try:
                handle = SessionHandle.from_wire(self._sealer.open(token))
            except ValueError as exc:
                raise InvalidSession(f"session token: {exc}") from None
            if len(self._opened) >= _OPENED_MAX:
                self._opened.clear()  # rare: bounded memory matters more than the next few opens
            self._opened[token] = handle
        if handle.expires_at <= now:
            raise InvalidSession("session token expired")
        if handle.issued_at > now + _CLOCK_SKEW:
            raise InvalidSession("session token issued in the future")
        return handle
