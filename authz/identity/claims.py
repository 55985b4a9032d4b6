"""What a sign-in or a refresh learns about the user: one rule for claims, groups and the session record.

The ID token's claims and the UserInfo claims are merged the same way at sign-in and at every
refresh (`merge_identity`), so what a policy sees about a user does not change because their tokens
were renewed: userinfo wins claim by claim, groups are the union of both, in order of appearance.

An email is part of the identity only when the IdP vouches for it: an address it marks unverified
(`email_verified` present and anything but true or "true", null and 0 included, in the ID token
or in userinfo), or one that is not exactly
`local@domain`, is no email at all: no policy criterion, assertion or claim header sees it
(`allow_unverified_email` restores the old behaviour). A missing `email_verified` counts as vouched,
as in oauth2-proxy: some IdPs (Microsoft Entra ID) never send it.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from authz.errors import InvalidIdToken
from authz.sessions.session import Session
from authz.signing.assertion import unsafe_element

if TYPE_CHECKING:
    from authz.identity.oidc import Tokens

log = logging.getLogger("authz.identity")

# Claims that describe the token, not the user: not kept in the session's claims.
_TOKEN_CLAIMS = frozenset({"iss", "aud", "exp", "iat", "nbf", "nonce", "at_hash", "c_hash", "azp", "auth_time", "jti"})


# Characters no identity value may carry into a header: line breaks, NUL and lone surrogates (a
# JSON `\\ud800` decodes to one; it is not text and cannot be encoded for a header).
UNSAFE_TEXT = re.compile("[\r\n\x00\ud800-\udfff]")
# A whole address: one non-empty local part, one `@`, one non-empty domain, nothing that is not text.
_ADDRESS = re.compile(r"[^@\s]+@[^@\s]+")


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
    unverified_email: str = ""  # an address the IdP sent but did not vouch for (shown on the 403 page)


_ABSENT = object()


def _unvouched(value: Any) -> bool:
    """Whether an `email_verified` claim withholds the IdP's word: anything but true (or "true")
    when present, null and 0 included; absent says nothing."""
    if value is _ABSENT or value is True:
        return False
    return not (isinstance(value, str) and value.strip().lower() == "true")


def is_address(value: str) -> bool:
    """Exactly one non-empty local part, one `@` and one non-empty domain, with no spaces or
    characters that cannot go into a header."""
    return _ADDRESS.fullmatch(value) is not None and UNSAFE_TEXT.search(value) is None


def merge_identity(
    id_claims: Mapping[str, Any], userinfo: Mapping[str, Any], *, allow_unverified_email: bool = False
) -> Identity:
    """Merge verified ID-token claims and UserInfo claims; InvalidIdToken if they name different users.

    OpenID Connect Core §5.3.2: userinfo whose `sub` is not the ID token's must not be used; authz
    refuses the sign-in (or ends the session at a refresh) rather than quietly keep stale claims.
    """
    sub = id_claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise InvalidIdToken("the ID token has no subject")
    if UNSAFE_TEXT.search(sub):
        raise InvalidIdToken("the ID token's subject contains a line break, NUL or invalid text")
    if userinfo and userinfo.get("sub") != sub:
        raise InvalidIdToken("the identity provider's userinfo names another subject")
    merged = {**id_claims, **userinfo}
    claims = {k: v for k, v in merged.items() if k not in _TOKEN_CLAIMS}
    raw = merged.get("email")
    email = raw if isinstance(raw, str) else ""
    unverified = ""
    vouched = allow_unverified_email or not (
        _unvouched(id_claims.get("email_verified", _ABSENT)) or _unvouched(userinfo.get("email_verified", _ABSENT))
    )
    if raw not in (None, "") and not (vouched and is_address(email)):
        # Not an identity: kept aside for the 403 page only (the page escapes it).
        unverified, email = UNSAFE_TEXT.sub("", email)[:320], ""
        claims.pop("email", None)
        why = "not a single address" if vouched else "marked unverified by the identity provider"
        log.warning("email ignored: %s", why, extra={"fields": {"user": sub}})
    name = merged.get("name")
    name = name if isinstance(name, str) and not UNSAFE_TEXT.search(name) else ""
    groups = merge_groups(id_claims.get("groups"), userinfo.get("groups"))
    _log_unsafe(sub, groups, claims)
    return Identity(user_id=sub, email=email, name=name, groups=groups, claims=claims, unverified_email=unverified)


def _log_unsafe(user: str, groups: tuple[str, ...], claims: Mapping[str, Any]) -> None:
    """Say which claims have elements the assertion and claim headers will leave out (see
    `authz.signing.assertion`): the user's admin will ask why a group is missing."""
    names = ["groups"] if any(unsafe_element(g) for g in groups) else []
    for name, value in claims.items():
        items = value if isinstance(value, list) else [value]
        if name != "groups" and any(isinstance(v, str) and unsafe_element(v) for v in items):
            names.append(name)
    if names:
        log.warning(
            "claim elements with a comma, line break, NUL or invalid text are left out of the assertion"
            " and claim headers",
            extra={"fields": {"user": user, "claims": ",".join(sorted(names))}},
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
        unverified_email=identity.unverified_email,
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
        session,
        email=identity.email,
        name=identity.name,
        groups=identity.groups,
        claims=identity.claims,
        unverified_email=identity.unverified_email,
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
