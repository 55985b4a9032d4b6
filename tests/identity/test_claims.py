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


# -- which email counts (hardening issue, class 2) --------------------------------------------------


@pytest.mark.parametrize(
    ("id_extra", "info_extra"),
    [
        ({"email_verified": False}, {}),
        ({"email_verified": "false"}, {}),
        ({"email_verified": " FALSE "}, {}),
        ({}, {"email_verified": False}),
        ({"email_verified": None}, {}),
        ({"email_verified": 0}, {}),
        ({"email_verified": 1}, {}),
        ({"email_verified": "0"}, {}),
        ({"email_verified": "no"}, {}),
        ({"email_verified": ""}, {}),
        ({"email_verified": [True]}, {}),
        # Userinfo says verified, the ID token says not: the IdP did not vouch in one of them.
        ({"email_verified": False}, {"sub": "u", "email_verified": True}),
    ],
)
def test_an_email_the_idp_marks_unverified_is_no_email(
    id_extra: dict[str, object], info_extra: dict[str, object]
) -> None:
    identity = merge_identity({**ID_CLAIMS, **id_extra}, {"sub": "u", **info_extra} if info_extra else {})
    assert identity.email == "" and "email" not in identity.claims
    assert identity.unverified_email == "old@example.com"
    session = new_session("sid", identity, Tokens("at", "rt", "it", 0), 100.0, 60.0)
    assert session.email == "" and session.unverified_email == "old@example.com"


@pytest.mark.parametrize("verified", [None, True, "true", " TRUE "])
def test_an_email_counts_when_the_idp_vouches_or_says_nothing(verified: object) -> None:
    claims = ID_CLAIMS if verified is None else {**ID_CLAIMS, "email_verified": verified}
    identity = merge_identity(claims, {})
    assert (identity.email, identity.unverified_email) == ("old@example.com", "")


@pytest.mark.parametrize(
    "address",
    ["a@evil.example@example.com", "@example.com", "alice@", "alice", "al ice@example.com", "a\n@example.com",
     "a@example.com\x00", "a\ud800@example.com", ["a@example.com"], 7],
)  # fmt: skip
def test_an_address_that_is_not_exactly_one_is_no_email(address: object) -> None:
    for allow in (False, True):  # allow_unverified_email does not make a malformed address one
        identity = merge_identity({**ID_CLAIMS, "email": address}, {}, allow_unverified_email=allow)
        assert identity.email == "" and "email" not in identity.claims, (address, allow)


def test_allow_unverified_email_counts_what_the_idp_does_not_vouch_for() -> None:
    identity = merge_identity({**ID_CLAIMS, "email_verified": False}, {}, allow_unverified_email=True)
    assert (identity.email, identity.unverified_email) == ("old@example.com", "")
    assert identity.claims["email"] == "old@example.com"


def test_a_refresh_applies_the_same_rule() -> None:
    before = new_session("sid", merge_identity(ID_CLAIMS, {}), Tokens("at", "rt", "it", 0), 100.0, 60.0)
    after = with_identity(before, merge_identity({**ID_CLAIMS, "email_verified": "false"}, {}))
    assert (after.email, after.unverified_email) == ("", "old@example.com")


# -- text that cannot reach a header (class 11) ------------------------------------------------------


@pytest.mark.parametrize("sub", ["u\n", "u\x00", "u\udc80"])
def test_a_subject_that_cannot_be_a_header_is_refused(sub: str) -> None:
    with pytest.raises(InvalidIdToken, match="subject contains"):
        merge_identity({**ID_CLAIMS, "sub": sub}, {})


def test_a_name_that_cannot_be_a_header_is_dropped_and_unsafe_claims_are_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    identity = merge_identity(
        {**ID_CLAIMS, "name": "Eve\r\nX-Admin: 1", "groups": ["x,admins", "ops"], "dept": ["a", "b\x00"]}, {}
    )
    assert identity.name == ""
    assert identity.groups == ("x,admins", "ops")  # kept for policies; the assertion leaves it out
    (record,) = [r for r in caplog.records if "left out" in r.getMessage()]
    assert record.fields == {"user": "u", "claims": "dept,groups,name"}  # type: ignore[attr-defined]
