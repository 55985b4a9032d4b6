"""CSRF tokens of authz's own forms: an HMAC over a purpose, the host and the session id, keyed
from `cookie_secret` (`Runtime.form_key`). A token is good only for the browser holding that
session, on that host, for that kind of form, until the session ends: nothing is stored."""

from __future__ import annotations

import base64
import hashlib
import hmac


def form_token(key: bytes, purpose: str, host: str, session_id: str) -> str:
    """The token a form of `purpose` carries for a session on a host: HMAC-SHA256, base64url."""
    mac = hmac.new(key, f"{purpose}\n{host}\n{session_id}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")


def token_matches(key: bytes, purpose: str, host: str, session_id: str, given: str) -> bool:
    """Whether `given` is that token (compared in constant time)."""
    expected = form_token(key, purpose, host, session_id).encode()
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected)
