"""Small values sealed with AES-256-GCM under a key derived for one purpose (HKDF, RFC 5869).

A value sealed for one purpose (the session cookie, the login `state`, the handoff) never opens
for another: each purpose has its own key and its own associated data.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_VERSION = b"\x01"
_NONCE = 12
_TAG = 16


def derive_key(secret: bytes, purpose: bytes) -> bytes:
    """A 32-byte key for one purpose, derived from a configured secret."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(secret)


class Sealer:
    """Seals JSON values into base64url tokens and opens them; ValueError for anything else."""

    def __init__(self, secret: bytes, purpose: bytes, max_size: int = 4096) -> None:
        self._aead = AESGCM(derive_key(secret, purpose))
        self._aad = b"authz/" + purpose
        self._max = max_size

    def seal(self, value: Any) -> str:
        plain = json.dumps(value, separators=(",", ":")).encode()
        nonce = os.urandom(_NONCE)
        sealed = _VERSION + nonce + self._aead.encrypt(nonce, plain, self._aad)
        return base64.urlsafe_b64encode(sealed).rstrip(b"=").decode("ascii")

    def open(self, token: str) -> Any:
        if not token or len(token) > self._max:
            raise ValueError("empty or oversized token")
        try:
            raw = base64.b64decode(token + "=" * (-len(token) % 4), altchars=b"-_", validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("token is not base64url") from None
        if len(raw) < 1 + _NONCE + _TAG or raw[:1] != _VERSION:
            raise ValueError("token has an unknown format")
        try:
            return json.loads(self._aead.decrypt(raw[1 : 1 + _NONCE], raw[1 + _NONCE :], self._aad))
        except (InvalidTag, ValueError):
            raise ValueError("token does not open with this deployment's key") from None


class AtRestSealer:
    """Seals text kept in a store: `v1.` + base64url(nonce + AES-256-GCM ciphertext).

    Each value is bound to a context (the row it belongs to, such as a session id), so a value
    copied into another row does not open. The text prefix names the format, so a store can tell
    sealed values from older plain ones and the format can change later.
    """

    PREFIX = "v1."

    def __init__(self, secret: bytes, purpose: bytes) -> None:
        self._aead = AESGCM(derive_key(secret, purpose))
        self._aad = b"authz/" + purpose + b"/"

    def seal(self, plain: str, context: str) -> str:
        """The sealed form of `plain`, for the row named `context`."""
        nonce = os.urandom(_NONCE)
        sealed = nonce + self._aead.encrypt(nonce, plain.encode(), self._aad + context.encode())
        return self.PREFIX + base64.urlsafe_b64encode(sealed).rstrip(b"=").decode("ascii")

    def open(self, sealed: str, context: str) -> str:
        """The plain text of a sealed value; ValueError for any other format, key or context."""
        if not sealed.startswith(self.PREFIX):
            raise ValueError("stored value has an unknown format")
        body = sealed[len(self.PREFIX) :]
        try:
            raw = base64.b64decode(body + "=" * (-len(body) % 4), altchars=b"-_", validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("stored value is not base64url") from None
        if len(raw) < _NONCE + _TAG:
            raise ValueError("stored value is too short")
        try:
            plain = self._aead.decrypt(raw[:_NONCE], raw[_NONCE:], self._aad + context.encode())
        except InvalidTag:
            raise ValueError("stored value does not open with this deployment's key") from None
        return plain.decode()
