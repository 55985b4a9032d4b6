"""The OIDC client's caching: discovery once, the JWKS refetched once on an unknown kid."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import httpx2
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from authz.config import Config
from authz.errors import IdpError, IdpUnavailable, InvalidIdToken
from authz.identity.oidc import OidcClient

ISSUER = "https://idp.example.com"


class FakeIdp:
    def __init__(self) -> None:
        self.keys: dict[str, rsa.RSAPrivateKey] = {"k1": rsa.generate_private_key(65537, 2048)}
        self.hits: dict[str, int] = {}
        self.issuer = ISSUER

    def handler(self, request: httpx2.Request) -> httpx2.Response:
        self.hits[request.url.path] = self.hits.get(request.url.path, 0) + 1
        if request.url.path == "/.well-known/openid-configuration":
            return httpx2.Response(200, json={
                "issuer": self.issuer, "authorization_endpoint": f"{ISSUER}/auth", "token_endpoint": f"{ISSUER}/token",
                "jwks_uri": f"{ISSUER}/jwks", "id_token_signing_alg_values_supported": ["RS256", "HS256"],
                "code_challenge_methods_supported": ["S256"],
            })  # fmt: skip
        if request.url.path == "/jwks":
            jwks = [
                {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(k.public_key())), "kid": kid, "use": "sig"}
                for kid, k in self.keys.items()
            ]
            return httpx2.Response(200, json={"keys": jwks})
        return httpx2.Response(404)

    def token(self, kid: str) -> str:
        now = int(time.time())
        claims = {"iss": ISSUER, "aud": "authz", "sub": "u", "iat": now, "exp": now + 60, "nonce": "n"}
        return jwt.encode(claims, self.keys[kid], algorithm="RS256", headers={"kid": kid})


def _client(make_config: Callable[..., Config], idp: FakeIdp) -> OidcClient:
    config = make_config(idp_provider_url=ISSUER, idp_client_id="authz", idp_client_secret="s")
    assert config.idp is not None
    return OidcClient(config.idp, "https://auth.example.com/oauth2/callback", httpx2.MockTransport(idp.handler))


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_discovery_is_cached_and_hs256_is_not_allowed(make_config: Callable[..., Config]) -> None:
    idp = FakeIdp()

    async def go() -> Any:
        client = _client(make_config, idp)
        first, second = await client.metadata(), await client.metadata()
        await client.close()
        return first, second

    first, second = _run(go())
    assert first is second and idp.hits["/.well-known/openid-configuration"] == 1
    assert first.algorithms == {"RS256"} and first.pkce_s256


def test_unknown_kid_refetches_once_then_is_rate_limited(make_config: Callable[..., Config]) -> None:
    idp = FakeIdp()

    async def go() -> None:
        client = _client(make_config, idp)
        meta = await client.metadata()
        assert (await client.verify(meta, idp.token("k1"), "n", time.time()))["sub"] == "u"
        idp.keys["k2"] = rsa.generate_private_key(65537, 2048)  # rotation at the IdP
        client._keys_at = 0.0  # the cached set is older than the refetch interval
        assert (await client.verify(meta, idp.token("k2"), "n", time.time()))["sub"] == "u"
        assert idp.hits["/jwks"] == 2
        forged = jwt.encode({"sub": "x"}, rsa.generate_private_key(65537, 2048), algorithm="RS256",
                            headers={"kid": "bogus"})  # fmt: skip
        for _ in range(5):
            with pytest.raises(InvalidIdToken, match="does not publish"):
                await client.verify(meta, forged, "n", time.time())
        assert idp.hits["/jwks"] == 2  # a flood of unknown kids does not hammer the IdP
        await client.close()

    _run(go())


def test_discovery_with_another_issuer_is_refused(make_config: Callable[..., Config]) -> None:
    idp = FakeIdp()
    idp.issuer = "https://evil.example.com"

    async def go() -> None:
        client = _client(make_config, idp)
        with pytest.raises(IdpUnavailable, match="issuer"):
            await client.metadata()
        await client.close()

    _run(go())


def test_odd_token_responses_never_escape_as_faults(make_config: Callable[..., Config]) -> None:
    """A token endpoint answering nonsense is the IdP's fault (502/400), never an unhandled error."""
    idp = FakeIdp()
    answers = iter([
        httpx2.Response(200, json={"access_token": "a", "id_token": "i", "expires_in": "soon"}),
        httpx2.Response(200, json={"access_token": "a", "id_token": "i", "expires_in": -5}),
        httpx2.Response(200, text="<html>oops</html>"),
        httpx2.Response(400, json={"error": "invalid_grant"}),
    ])  # fmt: skip

    def handler(request: httpx2.Request) -> httpx2.Response:
        return next(answers) if request.url.path == "/token" else idp.handler(request)

    config = make_config(idp_provider_url=ISSUER, idp_client_id="authz", idp_client_secret="s")
    assert config.idp is not None

    async def go() -> list[object]:
        client = OidcClient(config.idp, "https://auth.example.com/oauth2/callback", httpx2.MockTransport(handler))
        meta = await client.metadata()
        out: list[object] = []
        for _ in range(4):
            try:
                out.append(await client.exchange(meta, "code", "verifier"))
            except IdpError as exc:
                out.append(type(exc).__name__)
        await client.close()
        return out

    first, second, third, fourth = _run(go())
    assert first == "IdpUnavailable"  # authlib refuses a non-numeric expires_in: a 502, not a fault
    assert second.expires_at == 0  # type: ignore[attr-defined]  # a negative lifetime is "unknown"
    assert third == "IdpUnavailable" and fourth == "IdpRefused"
