"""ID token verification against hostile tokens (OpenID Connect Core §3.1.3.7)."""

from __future__ import annotations

import base64
import hmac
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from authz.errors import InvalidIdToken
from authz.identity.idtoken import (
    LEEWAY,
    ProviderKey,
    allowed_algorithms,
    stored_claims,
    unverified_header,
    verify_id_token,
)

ISSUER, CLIENT, NONCE = "https://idp.example.com", "authz", "n-123"
RSA_KEY = rsa.generate_private_key(65537, 2048)
PUBLIC_JWK = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(RSA_KEY.public_key()))
KEY = ProviderKey.from_jwk({**PUBLIC_JWK, "kid": "k1", "alg": "RS256"})
ALLOWED = allowed_algorithms(["RS256", "HS256", "none"])


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    data = {"iss": ISSUER, "aud": CLIENT, "sub": "alice", "exp": now + 300, "iat": now, "nonce": NONCE}
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def token(payload: dict[str, Any], key: Any = RSA_KEY, alg: str = "RS256", kid: str = "k1") -> str:
    return jwt.encode(payload, key, algorithm=alg, headers={"kid": kid})


def check(raw: str, key: ProviderKey = KEY) -> dict[str, Any]:
    alg, _ = unverified_header(raw, ALLOWED)
    return verify_id_token(raw, key, alg=alg, issuer=ISSUER, client_id=CLIENT, nonce=NONCE, now=time.time())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signed_text(header: str, payload: str) -> str:
    """An RS256 token over exactly this header and payload JSON text (pyjwt would dump a dict)."""
    signing_input = f"{_b64(header.encode())}.{_b64(payload.encode())}"
    signature = RSA_KEY.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{_b64(signature)}"


def test_valid_token() -> None:
    assert check(token(claims()))["sub"] == "alice"
    assert check(token(claims(aud=[CLIENT, "other"], azp=CLIENT)))["sub"] == "alice"


def test_only_asymmetric_algorithms_are_ever_allowed() -> None:
    assert allowed_algorithms(["RS256", "HS256", "none"]) == {"RS256"}
    assert allowed_algorithms(None) == {"RS256"}


def test_alg_none_is_refused() -> None:
    header = _b64(json.dumps({"alg": "none", "kid": "k1"}).encode())
    raw = f"{header}.{_b64(json.dumps(claims()).encode())}."
    with pytest.raises(InvalidIdToken, match="forbidden algorithm"):
        check(raw)


def test_hs256_keyed_with_the_public_key_is_refused() -> None:
    pem = RSA_KEY.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    header = _b64(json.dumps({"alg": "HS256", "kid": "k1", "typ": "JWT"}).encode())
    body = _b64(json.dumps(claims()).encode())
    signature = _b64(hmac.new(pem, f"{header}.{body}".encode(), "sha256").digest())
    with pytest.raises(InvalidIdToken, match="forbidden algorithm"):
        check(f"{header}.{body}.{signature}")


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (claims(aud="someone-else"), "not valid"),
        (claims(iss="https://evil.example.com"), "not valid"),
        (claims(nonce="other"), "nonce"),
        (claims(nonce=None), "nonce"),
        (claims(exp=int(time.time()) - 120), "expired"),
        (claims(iat=int(time.time()) + 600), "future"),
        (claims(aud=[CLIENT, "other"]), "azp"),
        (claims(azp="other"), "azp"),
        (claims(sub=None), "not valid"),
    ],
)
def test_claim_checks(payload: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidIdToken, match=message):
        check(token(payload))


def test_nbf_in_the_future_is_refused_beyond_the_leeway() -> None:
    """RFC 7519 §4.1.5: not accepted before nbf; the clock skew allowed is the one iat and exp get."""
    now = int(time.time())
    with pytest.raises(InvalidIdToken, match=r"not valid yet \(its nbf is in the future\)"):
        check(token(claims(nbf=now + LEEWAY + 60)))
    assert check(token(claims(nbf=now + LEEWAY - 30)))["sub"] == "alice"  # skew within the leeway
    assert check(token(claims(nbf=now - 600)))["sub"] == "alice"
    assert "nbf" not in check(token(claims()))  # optional: a token without one is fine


@pytest.mark.parametrize("nbf", ["tomorrow", True, None])
def test_an_nbf_that_is_not_a_number_is_refused(nbf: object) -> None:
    raw = token({**claims(), "nbf": nbf})
    with pytest.raises(InvalidIdToken, match="nbf is not a time"):
        check(raw)


def test_nbf_is_checked_against_the_injected_clock() -> None:
    """A token valid from tomorrow on: accepted at tomorrow's `now`, whatever the machine's clock says."""
    tomorrow = int(time.time()) + 86_400
    raw = token(claims(iat=tomorrow - 3600, exp=tomorrow + 300, nbf=tomorrow))

    def verify(now: float) -> dict[str, Any]:
        return verify_id_token(raw, KEY, alg="RS256", issuer=ISSUER, client_id=CLIENT, nonce=NONCE, now=now)

    assert verify(tomorrow)["sub"] == "alice"
    with pytest.raises(InvalidIdToken, match="nbf"):
        verify(tomorrow - LEEWAY - 1)


HEADER = '{"alg": "RS256", "kid": "k1", "typ": "JWT"}'


def payload(*members: str) -> str:
    """The JSON text of a valid payload, with `members` (such as '"sub": "mallory"') added at its end."""
    return "{" + ", ".join([json.dumps(claims())[1:-1], *members]) + "}"


@pytest.mark.parametrize(
    ("header", "body", "message"),
    [
        (HEADER, payload('"sub": "mallory"'), "the ID token's payload has a duplicate key 'sub'"),
        (HEADER, payload('"email": "a@example.com"', '"email": "m@evil.test"'), "payload .* 'email'"),
        (HEADER, payload('"address": {"country": "FR", "country": "US"}'), "payload .* 'country'"),
        (HEADER, payload('"groups": [{"id": "a"}, {"id": "b", "id": "admins"}]'), "payload .* 'id'"),
        ('{"alg": "RS256", "kid": "k1", "kid": "k1"}', payload(), "the ID token's header has a duplicate key 'kid'"),
        ('{"alg": "none", "alg": "RS256", "kid": "k1"}', payload(), "header .* 'alg'"),
    ],
)
def test_a_repeated_key_anywhere_is_refused(header: str, body: str, message: str) -> None:
    """RFC 7519 §4: parsers disagree on which duplicate wins, so authz reads none of them.

    Each token is correctly signed: only the repeated key is wrong. Both the header step and the
    verification refuse it, so neither can be skipped by a caller.
    """
    raw = signed_text(header, body)
    with pytest.raises(InvalidIdToken, match=message) as caught:
        unverified_header(raw, ALLOWED)
    assert raw not in caught.value.detail
    with pytest.raises(InvalidIdToken, match=message):
        verify_id_token(raw, KEY, alg="RS256", issuer=ISSUER, client_id=CLIENT, nonce=NONCE, now=time.time())


def test_the_same_text_without_a_repeated_key_is_accepted() -> None:
    """The control for the test above: the hand-made signing is right, so only the repetition is refused."""
    raw = signed_text(HEADER, payload('"address": {"country": "FR"}', '"groups": [{"id": "a"}, {"id": "b"}]'))
    assert check(raw)["address"] == {"country": "FR"}


def test_json_nested_too_deep_is_malformed_not_a_crash() -> None:
    raw = signed_text(HEADER, payload('"x": ' + "[" * 100_000 + "]" * 100_000))
    with pytest.raises(InvalidIdToken, match="malformed"):
        check(raw)


def test_signature_by_another_key_is_refused() -> None:
    other = rsa.generate_private_key(65537, 2048)
    with pytest.raises(InvalidIdToken, match="not valid"):
        check(token(claims(), key=other))


def test_key_algorithm_mismatch_is_refused() -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    allowed = allowed_algorithms(["RS256", "ES256"])
    raw = token(claims(), key=ec_key, alg="ES256")
    alg, _ = unverified_header(raw, allowed)
    with pytest.raises(InvalidIdToken):
        verify_id_token(raw, KEY, alg=alg, issuer=ISSUER, client_id=CLIENT, nonce=NONCE, now=time.time())


def test_garbage_is_refused() -> None:
    for raw in ("", "abc", "a.b.c", "eyJhbGciOiJSUzI1NiJ9.!!!.x"):
        with pytest.raises(InvalidIdToken):
            check(raw)


def test_a_refreshed_token_is_checked_without_a_nonce() -> None:
    """OpenID Connect Core §12.2: a refresh answers no authentication request, so it has no nonce to match."""

    def refreshed(raw: str) -> dict[str, Any]:
        alg, _ = unverified_header(raw, ALLOWED)
        return verify_id_token(raw, KEY, alg=alg, issuer=ISSUER, client_id=CLIENT, nonce=None, now=time.time())

    assert refreshed(token(claims(nonce=None)))["sub"] == "alice"
    assert refreshed(token(claims(nonce="the-sign-in-one")))["sub"] == "alice"  # some IdPs repeat it
    with pytest.raises(InvalidIdToken, match=r"(?i)audience"):
        refreshed(token(claims(aud="other")))
    with pytest.raises(InvalidIdToken, match="expired"):
        refreshed(token(claims(exp=int(time.time()) - 3600)))


def test_stored_claims_reads_a_token_it_does_not_verify() -> None:
    assert stored_claims(token(claims(exp=1)))["sub"] == "alice"  # expired long ago: still readable
    assert stored_claims("") == {} and stored_claims("not.a.token") == {}
