"""Login binding: a sign-in finishes only in the browser that started it (login CSRF).

When a route host sends a browser to sign in, it sets a per-attempt cookie on that host holding a
random value, and the signed sign-in link carries the value's digest. The digest travels (sealed,
server-side) through the IdP round trip into the handoff, and `/.pomerium/callback/` redeems a
handoff only when the browser presents a binding cookie with that digest. A handoff link sent to
a victim's browser therefore cannot replace the victim's session with the attacker's.

Binding cookies are host-only, HttpOnly and always SameSite=Lax (the hops back from the IdP are
cross-site top-level navigations); each lives 10 minutes and a host keeps at most five.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Iterable

from authz.web.cookies import CookieNames, binding_cookie, deletion

LIFETIME = 600
MAX_PER_HOST = 5


def digest(secret: str) -> str:
    """What the sign-in carries for a binding value: 128 bits of its SHA-256, base64url."""
    raw = hashlib.sha256(secret.encode()).digest()[:16]
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _issued(value: str) -> int:
    text = value.partition(".")[0]
    try:
        return int(text, 16)
    except ValueError:
        return 0


def begin(names: CookieNames, now: float, existing: Iterable[tuple[str, str]]) -> tuple[str, list[str]]:
    """A new binding: (its digest, Set-Cookie lines — the new cookie, then deletions of the oldest
    existing ones so the host keeps at most MAX_PER_HOST)."""
    secret = secrets.token_urlsafe(18)
    name = names.binding_prefix + secrets.token_hex(4)
    lines = [binding_cookie(names, name, f"{int(now):x}.{secret}", LIFETIME)]
    current = sorted(existing, key=lambda pair: _issued(pair[1]))
    for old_name, _ in current[: max(0, len(current) - (MAX_PER_HOST - 1))]:
        lines.append(deletion(old_name, secure=names.secure))
    return digest(secret), lines


def find(bindings: Iterable[tuple[str, str]], wanted: str, now: float) -> str | None:
    """The name of the binding cookie whose value has digest `wanted` and has not expired, if any."""
    if not wanted:
        return None
    expected = wanted.encode("utf-8", "replace")  # compare_digest refuses non-ASCII str
    for name, value in bindings:
        secret = value.partition(".")[2]
        if secret and hmac.compare_digest(digest(secret).encode(), expected) and now - _issued(value) <= LIFETIME:
            return name
    return None
