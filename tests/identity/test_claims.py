"""The one merge rule for what the IdP says about a user, at sign-in and at every refresh."""

from __future__ import annotations

import pytest

from authz.errors import InvalidIdToken
from authz.identity.claims import merge_identity, new_session, with_identity
from authz.identity.oidc import Tokens
from authz.sessions.session import Session

ID_CLAIMS = {"iss": "https://idp", "aud": "authz", "exp": 2, "iat": 1, "nonce": "n", "sub": "u",
             "email": "old@example.com", "name": "U", "groups": ["admins"]}  # fmt: skip


def test_userinfo_wins_claim_by_claim_and_groups_are_united() -> None:
    identity = merge_identity(ID_CLAIMS, {"sub": "u", "email": "u@example.com", "groups": ["eng", "admins"]})
    assert (identity.user_id, identity.email, identity.name) == ("u", "u@example.com", "U")
    assert identity.groups == ("admins", "eng")
    assert identity.claims == {"sub": "u", "email": "u@example.com", "name": "U", "groups": ["eng", "admins"]}


def test_without_userinfo_the_id_token_alone_decides() -> None:
    identity = merge_identity(ID_CLAIMS, {})
    assert (identity.email, identity.groups) == ("old@example.com", ("admins",))


@pytest.mark.parametrize("info", [{"sub": "mallory"}, {"email": "no-subject@example.com"}])
def test_userinfo_about_another_subject_is_refused(info: dict[str, str]) -> None:
    """OpenID Connect Core §5.3.2."""
    with pytest.raises(InvalidIdToken, match="another subject"):
        merge_identity(ID_CLAIMS, info)


def test_an_id_token_without_subject_is_refused() -> None:
    with pytest.raises(InvalidIdToken, match="no subject"):
        merge_identity({"groups": ["admins"]}, {})


def test_sign_in_and_refresh_give_the_same_session_fields() -> None:
    info = {"sub": "u", "groups": ["eng"]}
    tokens = Tokens("at", "idt", "rt", 100)
    signed_in = new_session("sid", merge_identity(ID_CLAIMS, info), tokens, 10, 3600)
    stale = Session("sid", "u", "x@example.com", "X", ("gone",), {"stale": True}, 10, 3610, "idt", "at", "rt", 100)
    assert with_identity(stale, merge_identity(ID_CLAIMS, info)) == signed_in
