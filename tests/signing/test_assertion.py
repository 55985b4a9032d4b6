from __future__ import annotations

from authz.config import IssuerFormat
from authz.sessions.session import Session
from authz.signing.assertion import build_claims, claim_headers

SESSION = Session("sid", "uid", "a@example.com", "Ann", ("g1",), {"dept": ["x", "y"], "level": 3})


def test_claims_with_session() -> None:
    claims = build_claims(
        hostname="app.example.com",
        session=SESSION,
        now=100,
        issuer_format=IssuerFormat.HOST_ONLY,
        extra=("dept", "email", "missing", "level"),
        new_id=lambda: "jti-1",
    )
    assert claims == {
        "iss": "app.example.com",
        "aud": "app.example.com",
        "jti": "jti-1",
        "iat": 100,
        "exp": 400,
        "sub": "uid",
        "user": "uid",
        "email": "a@example.com",
        "groups": ["g1"],
        "sid": "sid",
        "name": "Ann",
        "dept": "x,y",
        "missing": "",
        "level": "3",
    }


def test_claims_without_session_and_uri_issuer() -> None:
    claims = build_claims(hostname="h.example.com", session=None, now=1, issuer_format=IssuerFormat.URI)
    assert claims["iss"] == "https://h.example.com/" and claims["aud"] == "h.example.com"
    assert claims["groups"] == [] and claims["sub"] == claims["email"] == claims["name"] == ""


def test_claim_headers() -> None:
    pairs = (("x-pomerium-claim-groups", "groups"), ("x-pomerium-claim-nope", "nope"))
    assert claim_headers(pairs, {"groups": ["a", "b"]}) == [
        ("x-pomerium-claim-groups", "a,b"),
        ("x-pomerium-claim-nope", ""),
    ]
