from __future__ import annotations

import os
from urllib.parse import urlsplit

import pytest

from authz.errors import BadRequest
from authz.signing import signed_url

KEY = os.urandom(32)
ENDPOINT = "https://auth.example.com/.pomerium/sign_in"
NOW = 1_800_000_000


def _query(target: str = "https://app.example.com/x?y=1") -> str:
    return urlsplit(signed_url.sign(KEY, ENDPOINT, target, NOW)).query


def test_round_trip() -> None:
    signed = signed_url.verify(KEY, ENDPOINT, _query(), NOW + 1)
    assert (signed.target, signed.expiry - signed.issued) == ("https://app.example.com/x?y=1", 300)


@pytest.mark.parametrize(
    ("query", "key", "endpoint", "now"),
    [
        (_query().replace("app.example.com", "evil.example.com"), KEY, ENDPOINT, NOW),
        (_query(), os.urandom(32), ENDPOINT, NOW),
        (_query(), KEY, "https://auth.example.com/.pomerium/sign_out", NOW),
        (_query(), KEY, ENDPOINT, NOW + 300 + 61),
        (_query(), KEY, ENDPOINT, NOW - 61),
        ("pomerium_redirect_uri=https://app.example.com/", KEY, ENDPOINT, NOW),
        ("", KEY, ENDPOINT, NOW),
        (_query().replace("pomerium_expiry=", "pomerium_expiry=9"), KEY, ENDPOINT, NOW),
        (_query() + "&pomerium_redirect_uri=https://evil.example.com/", KEY, ENDPOINT, NOW),
        (_query("javascript:alert(1)"), KEY, ENDPOINT, NOW),
    ],
)
def test_rejections(query: str, key: bytes, endpoint: str, now: int) -> None:
    with pytest.raises(BadRequest):
        signed_url.verify(key, endpoint, query, now)
