"""What a sign-in or a refresh learns about the user: one rule for claims, groups and the session record.

The ID token's claims and the UserInfo claims are merged the same way at sign-in and at every
refresh, so what a policy sees about a user does not change because their tokens were renewed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from authz.sessions.session import Session

# Claims that describe the token, not the user: not kept in the session's claims.
_TOKEN_CLAIMS = frozenset({"iss", "aud", "exp", "iat", "nbf", "nonce", "at_hash", "c_hash", "azp", "auth_time", "jti"})


def _groups(value: Any) -> list[str]:
    items = value if isinstance(value, list) else [value] if value else []
    return [str(g) for g in items if isinstance(g, str | int) and not isinstance(g, bool)]


def merge_groups(*sources: Any) -> tuple[str, ...]:
    """Groups from the ID token and userinfo, united in order of first appearance."""
    return tuple(dict.fromkeys(g for source in sources for g in _groups(source)))


def session_from_claims(
    sid: str, claims: Mapping[str, Any], tokens: Any, now: float, lifetime: float, groups: tuple[str, ...]
) -> Session:
    kept = {k: v for k, v in claims.items() if k not in _TOKEN_CLAIMS}
    return Session(
        id=sid,
        user_id=str(claims["sub"]),
        email=str(claims.get("email") or ""),
        name=str(claims.get("name") or ""),
        groups=groups,
        claims=kept,
        issued_at=int(now),
        expires_at=int(now + lifetime),
        id_token=tokens.id_token,
        access_token=tokens.access_token,
        refresh_token=tokens.refresh_token,
        token_expires_at=tokens.expires_at,
    )


def session_claims(session: Session) -> dict[str, Any]:
    """The user's claims as `/.pomerium/user` shows them."""
    return {
        **{k: v for k, v in session.claims.items() if k not in _TOKEN_CLAIMS},
        "sub": session.user_id,
        "user": session.user_id,
        "email": session.email,
        "groups": list(session.groups),
        "sid": session.id,
        "name": session.name,
    }
