"""Signing keys for the assertion: PEM parsing, RFC 7638 key ids, the JWKS document, keygen."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z ]+)-----\r?\n.*?\r?\n-----END \1-----", re.DOTALL)


def b64url(data: bytes) -> str:
    """Unpadded base64url (RFC 7515 §2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _uint(value: int, size: int | None = None) -> str:
    length = size if size is not None else max(1, (value.bit_length() + 7) // 8)
    return b64url(value.to_bytes(length, "big"))


@dataclass(frozen=True, slots=True, repr=False)
class SigningKey:
    """One private key with its algorithm, RFC 7638 key id and public JWK."""

    private: PrivateKey
    algorithm: Literal["ES256", "RS256"]
    kid: str
    jwk: Mapping[str, str]

    def __repr__(self) -> str:
        return f"SigningKey({self.algorithm}, kid={self.kid[:12]}…)"


def thumbprint(required: Mapping[str, str]) -> str:
    """Hex SHA-256 of the RFC 7638 canonical JSON of the key's required members."""
    canonical = json.dumps(dict(sorted(required.items())), separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _signing_key(private: object) -> SigningKey:
    if isinstance(private, ec.EllipticCurvePrivateKey):
        if not isinstance(private.curve, ec.SECP256R1):
            raise ValueError(f"EC keys must be P-256 for ES256, got {private.curve.name}")
        numbers = private.public_key().public_numbers()
        required = {"crv": "P-256", "kty": "EC", "x": _uint(numbers.x, 32), "y": _uint(numbers.y, 32)}
        algorithm: Literal["ES256", "RS256"] = "ES256"
    elif isinstance(private, rsa.RSAPrivateKey):
        if private.key_size < 2048:
            raise ValueError(f"RSA keys must have at least 2048 bits, got {private.key_size}")
        rsa_numbers = private.public_key().public_numbers()
        required = {"e": _uint(rsa_numbers.e), "kty": "RSA", "n": _uint(rsa_numbers.n)}
        algorithm = "RS256"
    else:
        raise ValueError(f"unsupported key type {type(private).__name__} (use P-256 EC or RSA)")
    kid = thumbprint(required)
    jwk = {**required, "kid": kid, "alg": algorithm, "use": "sig"}
    return SigningKey(private, algorithm, kid, jwk)


def load_signing_keys(text: str) -> tuple[SigningKey, ...]:
    """Parse `signing_key`: base64 of PEM or raw PEM, one or more private keys; the first signs."""
    raw = text.strip().encode()
    if not raw:
        raise ValueError("is empty")
    if b"-----BEGIN" not in raw:
        try:
            raw = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("is neither PEM nor base64-encoded PEM") from None
    blocks = [m.group(0) for m in _PEM_BLOCK.finditer(raw)]
    if not blocks:
        raise ValueError("contains no PEM private key")
    keys = []
    for i, block in enumerate(blocks, 1):
        try:
            private = serialization.load_pem_private_key(block, password=None)
        except (ValueError, TypeError):
            raise ValueError(f"PEM block {i} is not an unencrypted private key") from None
        try:
            keys.append(_signing_key(private))
        except ValueError as exc:
            raise ValueError(f"PEM block {i}: {exc}") from None
    kids = [k.kid for k in keys]
    if len(set(kids)) != len(kids):
        raise ValueError("the same key appears twice")
    return tuple(keys)


def jwks_document(keys: tuple[SigningKey, ...]) -> dict[str, list[dict[str, str]]]:
    """The public JWKS: every configured key, the signing one first."""
    return {"keys": [dict(k.jwk) for k in keys]}


def generate_p256_pem() -> bytes:
    """A new P-256 private key as PKCS#8 PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def generate_rsa_pem(bits: int = 2048) -> bytes:
    """A new RSA private key (RS256, for upstreams that accept nothing else) as PKCS#8 PEM."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def keygen(algorithm: Literal["ES256", "RS256"] = "ES256") -> str:
    """YAML lines with fresh `shared_secret`, `cookie_secret` and `signing_key` values."""
    pem = generate_rsa_pem() if algorithm == "RS256" else generate_p256_pem()
    return (
        f"shared_secret: {base64.b64encode(secrets.token_bytes(32)).decode()}\n"
        f"cookie_secret: {base64.b64encode(secrets.token_bytes(32)).decode()}\n"
        f"signing_key: {base64.b64encode(pem).decode()}\n"
    )


def public_pems(keys: tuple[SigningKey, ...]) -> str:
    """Every key's public half as PEM, the signing key first, each after a `kid:` line (PEM readers
    skip text outside the markers): for an upstream that takes a key file instead of a JWKS URL."""
    blocks = []
    for key in keys:
        pem = key.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        blocks.append(f"kid: {key.kid} ({key.algorithm})\n{pem.decode()}")
    return "".join(blocks)
