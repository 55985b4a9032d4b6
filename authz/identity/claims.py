"""What a sign-in or a refresh learns about the user: one rule for claims, groups and the session record.

The ID token's claims and the UserInfo claims are merged the same way at sign-in and at every
refresh (`merge_identity`), so what a policy sees about a user does not change because their tokens
were renewed: userinfo wins claim by claim, groups are the union of both, in order of appearance.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from authz.errors import InvalidIdToken
from authz.sessions.session import Session

if TYPE_CHECKING:
    from authz.identity.oidc import Tokens

# Claims that describe the token, not the user: not kept in the session's claims.
_TOKEN_CLAIMS = frozenset({"iss", "aud", "exp", "iat", "nbf", "nonce", "at_hash", "c_hash", "azp", "auth_time", "jti"})


def _groups(value: Any) -> list[str]:
    items = value if isinstance(value, list) else [value] if value else []
    return [str(g) for g in items if isinstance(g, str | int) and not isinstance(g, bool)]


def merge_groups(*sources: Any) -> tuple[str, ...]:
    """Groups from the ID token and userinfo, united in order of first appearance."""
    return tuple(dict.fromkeys(g for source in sources for g in _groups(source)))


@dataclass(frozen=True, slots=True)
class Identity:
    """Who the IdP says the user is, merged by the one rule: the user fields of a session."""

    user_id: str
    email: str
    name: str
    groups: tuple[str, ...]
    claims: Mapping[str, Any]  # the merged claims, without those that describe a token


def merge_identity(id_claims: Mapping[str, Any], userinfo: Mapping[str, Any]) -> Identity:
    """Merge verified ID-token claims and UserInfo claims; InvalidIdToken if they name different users.

    OpenID Connect Core §5.3.2: userinfo whose `sub` is not the ID token's must not be used; authz
    refuses the sign-in (or ends the session at a refresh) rather than quietly keep stale claims.
    """
    sub = id_claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise InvalidIdToken("the ID token has no subject")
    if userinfo and userinfo.get("sub") != sub:
        raise InvalidIdToken("the identity provider's userinfo names another subject")
    merged = {**id_claims, **userinfo}
    return Identity(
        user_id=sub,
        email=str(merged.get("email") or ""),
        name=str(merged.get("name") or ""),
        groups=merge_groups(id_claims.get("groups"), userinfo.get("groups")),
        claims={k: v for k, v in merged.items() if k not in _TOKEN_CLAIMS},
    )


def new_session(sid: str, identity: Identity, tokens: Tokens, now: float, lifetime: float) -> Session:
    """The session a sign-in creates: the merged identity and the IdP's tokens, for `lifetime` seconds."""
    return Session(
        id=sid,
        user_id=identity.user_id,
        email=identity.email,
        name=identity.name,
        groups=identity.groups,
        claims=identity.claims,
        issued_at=int(now),
        expires_at=int(now + lifetime),
        id_token=tokens.id_token,
        access_token=tokens.access_token,
        refresh_token=tokens.refresh_token,
        token_expires_at=tokens.expires_at,
    )


def with_identity(session: Session, identity: Identity) -> Session:
    """The session with the identity a refresh learned (same user, same lifetime)."""
    return dataclasses.replace(
        session, email=identity.email, name=identity.name, groups=identity.groups, claims=identity.claims
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
