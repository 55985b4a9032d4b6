from __future__ import annotations

import json
from collections.abc import Callable

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from hypothesis import given, settings
from hypothesis import strategies as st

from authz.config import Config, IssuerFormat
from authz.runtime.state import groups_filter
from authz.sessions.session import Session
from authz.signing.assertion import GROUPS_BUDGET, build_claims, claim_headers, p256_raw, sign
from authz.signing.keys import generate_p256_pem, load_signing_keys

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


# -- claim content (hardening issue, class 11) --------------------------------------------------------

UNSAFE_GROUPS = ("x,admins", "ops", "line\nbreak", "cr\rx", "nul\x00", "lone\ud800", "dev")


def _session(groups: tuple[str, ...], **claims: object) -> Session:
    return Session("sid", "u", "u@example.com", "U", groups, claims, 0, 10)


def _build(session: Session, **kwargs: object) -> dict[str, object]:
    return build_claims(hostname="app.example.com", session=session, now=0, issuer_format=IssuerFormat.HOST_ONLY,
                        new_id=lambda: "jti", **kwargs)  # type: ignore[arg-type]  # fmt: skip


def test_unsafe_group_elements_are_left_out_of_the_assertion_and_headers_alike() -> None:
    claims = _build(_session(UNSAFE_GROUPS))
    assert claims["groups"] == ["ops", "dev"]
    assert claim_headers((("X-Groups", "groups"),), claims) == [("X-Groups", "ops,dev")]
    json.dumps(claims).encode("utf-8")  # a lone surrogate would not encode


def test_extra_claims_keep_safe_elements_and_drop_unsafe_scalars() -> None:
    session = _session((), dept=["a,b", "c", "d\n"], title="Boss\r\nX-Admin: 1", team="Core, Platform")
    claims = _build(session, extra=("dept", "title", "team"))
    assert (claims["dept"], claims["title"], claims["team"]) == ("c", "", "Core, Platform")


@pytest.mark.parametrize(
    ("allowed", "expected"),
    [(None, ["ops", "dev", "sales"]), (frozenset({"dev", "x,admins"}), ["dev"]), (frozenset(), [])],
)
def test_the_groups_filter_keeps_only_what_it_lists(allowed: frozenset[str] | None, expected: list[str]) -> None:
    claims = _build(_session(("x,admins", "ops", "dev", "sales")), groups_filter=allowed)
    assert claims["groups"] == expected and "groups_truncated" not in claims


def test_the_route_filter_and_the_global_filter_unite(make_config: Callable[..., Config]) -> None:
    route = {"id": "r", "from": "https://r.example.com", "to": "http://127.0.0.1:9", "jwt_groups_filter": ["ops"],
             "allow_any_authenticated_user": True}  # fmt: skip
    other = {**route, "id": "o", "from": "https://o.example.com", "jwt_groups_filter": None}
    del other["jwt_groups_filter"]
    config = make_config(routes=[route, other], jwt_groups_filter=["dev"])
    assert groups_filter(config, config.routes_by_id["r"]) == {"ops", "dev"}
    assert groups_filter(config, config.routes_by_id["o"]) == {"dev"}
    unfiltered = make_config(routes=[other])
    assert groups_filter(unfiltered, unfiltered.routes_by_id["o"]) is None


@pytest.mark.parametrize("headers", [0, 1, 2])
def test_past_the_budget_the_groups_that_fit_are_kept_in_order(headers: int) -> None:
    groups = tuple(f"group-{i:04d}-of-a-large-directory" for i in range(1500))
    claims = _build(_session(groups), group_headers=headers)
    kept = claims["groups"]
    assert isinstance(kept, list) and 0 < len(kept) < 1500 and kept == list(groups[: len(kept)])
    assert claims["groups_truncated"] is True
    token = sign(load_signing_keys(generate_p256_pem().decode())[0], claims)
    assert len(token) + headers * len(",".join(kept)) <= GROUPS_BUDGET
    # Not wasteful either: the budget is mostly used.
    assert len(token) + headers * len(",".join(kept)) > GROUPS_BUDGET * 0.8


def test_many_short_groups_under_the_budget_are_all_kept() -> None:
    groups = tuple(f"g{i}" for i in range(2500))  # ~12 KiB of names: measured, and it fits
    claims = _build(_session(groups), group_headers=1)
    assert claims["groups"] == list(groups) and "groups_truncated" not in claims


@pytest.mark.parametrize("kind", ["ec", "rsa"])
def test_the_signature_verifies_with_a_standard_library(kind: str) -> None:
    import jwt
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    private = ec.generate_private_key(ec.SECP256R1()) if kind == "ec" else rsa.generate_private_key(65537, 2048)
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    key = load_signing_keys(pem)[0]
    token = sign(key, {"sub": "u", "groups": ["a"]})
    assert jwt.get_unverified_header(token) == {"alg": key.algorithm, "kid": key.kid, "typ": "JWT"}
    assert jwt.decode(token, private.public_key(), algorithms=[key.algorithm]) == {"sub": "u", "groups": ["a"]}


@settings(max_examples=300, deadline=None)
@given(r=st.integers(1, 2**256 - 1), s=st.integers(1, 2**256 - 1))
def test_p256_raw_matches_the_der_decoder(r: int, s: int) -> None:
    # Every INTEGER length: leading zero byte, full 32 bytes, and shorter ones.
    assert p256_raw(encode_dss_signature(r, s)) == r.to_bytes(32, "big") + s.to_bytes(32, "big")
    for small in (1, 127, 128, 2**248):
        assert p256_raw(encode_dss_signature(small, s)) == small.to_bytes(32, "big") + s.to_bytes(32, "big")


def test_es256_signatures_verify_with_the_public_key() -> None:
    key = load_signing_keys(generate_p256_pem().decode())[0]
    for n in range(200):  # real signatures: about 1 in 256 has a short r or s
        token = sign(key, {"n": n})
        assert jwt.decode(token, key.private.public_key(), algorithms=["ES256"]) == {"n": n}
