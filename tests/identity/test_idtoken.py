"""ID token verification against hostile tokens (OpenID Connect Core §3.1.3.7)."""

from __future__ import annotations

import base64
import hmac
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from authz.errors import InvalidIdToken
from authz.identity.idtoken import ProviderKey, allowed_algorithms, stored_claims, unverified_header, verify_id_token

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
