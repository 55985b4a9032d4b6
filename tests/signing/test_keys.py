from __future__ import annotations

import base64

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from joserfc.jwk import ECKey, RSAKey

from authz.signing.assertion import sign
from authz.signing.keys import generate_p256_pem, jwks_document, load_signing_keys, thumbprint


def _pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, fmt: serialization.PrivateFormat) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())


def test_rfc7638_example() -> None:
    n = (
        "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknj"
        "hMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6"
        "qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8a"
        "wapJzKnqDKgw"
    )
    expected = base64.urlsafe_b64decode("NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs=").hex()
    assert thumbprint({"kty": "RSA", "n": n, "e": "AQAB"}) == expected


def test_kid_matches_an_independent_implementation() -> None:
    (key,) = load_signing_keys(generate_p256_pem().decode())
    assert key.kid == base64.urlsafe_b64decode(ECKey.import_key(dict(key.jwk)).thumbprint() + "=").hex()


def test_forms_and_order() -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    rsa_key = rsa.generate_private_key(65537, 2048)
    sec1 = _pem(ec_key, serialization.PrivateFormat.TraditionalOpenSSL)
    pkcs1 = _pem(rsa_key, serialization.PrivateFormat.TraditionalOpenSSL)
    both = (pkcs1 + sec1).decode()
    for text in (both, base64.b64encode(both.encode()).decode(), "\n  " + both + "\n"):
        first, second = load_signing_keys(text)
        assert (first.algorithm, second.algorithm) == ("RS256", "ES256")
    doc = jwks_document(load_signing_keys(both))
    assert [k["kty"] for k in doc["keys"]] == ["RSA", "EC"]
    assert all("d" not in k for k in doc["keys"])
    rsa_kid = doc["keys"][0]["kid"]
    assert rsa_kid == base64.urlsafe_b64decode(RSAKey.import_key(doc["keys"][0]).thumbprint() + "=").hex()


def test_rsa_signs_rs256() -> None:
    rsa_key = rsa.generate_private_key(65537, 2048)
    (key,) = load_signing_keys(_pem(rsa_key, serialization.PrivateFormat.PKCS8).decode())
    token = sign(key, {"sub": "x"})
    assert jwt.get_unverified_header(token) == {"alg": "RS256", "kid": key.kid, "typ": "JWT"}
    assert jwt.decode(token, rsa_key.public_key(), algorithms=["RS256"])["sub"] == "x"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "is empty"),
        ("%%%", "neither PEM nor base64"),
        (base64.b64encode(b"hello").decode(), "no PEM private key"),
        ("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----", "not an unencrypted private key"),
    ],
)
def test_bad_keys(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_signing_keys(text)


def test_wrong_curve_and_small_rsa() -> None:
    p384 = _pem(ec.generate_private_key(ec.SECP384R1()), serialization.PrivateFormat.PKCS8).decode()
    with pytest.raises(ValueError, match="P-256"):
        load_signing_keys(p384)
    small = _pem(rsa.generate_private_key(65537, 1024), serialization.PrivateFormat.PKCS8).decode()
    with pytest.raises(ValueError, match="2048"):
        load_signing_keys(small)
    pem = generate_p256_pem().decode()
    with pytest.raises(ValueError, match="twice"):
        load_signing_keys(pem + pem)
