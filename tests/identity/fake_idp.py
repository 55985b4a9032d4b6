"""An OpenID provider behind httpx2's MockTransport, for the identity tests (no Node, no network)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx2
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from authz.config import Config
from authz.identity.oidc import OidcClient

ISSUER = "https://idp.example.com"
CLIENT = "authz"
START = 1_800_000_000.0
SECRET = "s3cr3t-value"  # the client secret: tests look for it in logs and messages

# Generating RSA keys is slow: one per test run is enough for the provider's signing key.
_KEY = rsa.generate_private_key(65537, 2048)

Answer = Callable[[httpx2.Request], httpx2.Response]


class FakeIdp:
    """Discovery, JWKS, token, userinfo and revocation; `token` and `revoke` answers can be replaced,
    and `raw` sends any path's 200 answer byte for byte (JSON a dict cannot hold, such as a repeated key)."""

    def __init__(self, now: float = START) -> None:
        self.now = now
        self.keys: dict[str, rsa.RSAPrivateKey] = {"k1": _KEY}
        self.hits: dict[str, int] = {}
        self.issuer = ISSUER
        self.token: Answer | None = None  # None: no token endpoint answer set up (404)
        self.revoke: Answer = lambda request: httpx2.Response(200)
        self.userinfo: dict[str, Any] = {}  # {} answers 404 (no userinfo claims)
        self.requests: list[httpx2.Request] = []
        self.down: set[str] = set()  # paths that answer 503
        self.pkce_methods: list[str] | None = ["S256"]  # discovery's code_challenge_methods_supported
        self.raw: dict[str, bytes] = {}  # path -> the JSON body of a 200 answer, sent as is

    def handler(self, request: httpx2.Request) -> httpx2.Response:
        path = request.url.path
        self.hits[path] = self.hits.get(path, 0) + 1
        self.requests.append(request)
        if path in self.down:
            return httpx2.Response(503)
        if path in self.raw:
            return httpx2.Response(200, content=self.raw[path], headers={"content-type": "application/json"})
        if path == "/.well-known/openid-configuration":
            discovery = {
                "issuer": self.issuer, "authorization_endpoint": f"{ISSUER}/auth", "token_endpoint": f"{ISSUER}/token",
                "jwks_uri": f"{ISSUER}/jwks", "userinfo_endpoint": f"{ISSUER}/userinfo",
                "revocation_endpoint": f"{ISSUER}/revoke",
                "id_token_signing_alg_values_supported": ["RS256", "HS256"],
            }  # fmt: skip
            if self.pkce_methods is not None:
                discovery["code_challenge_methods_supported"] = self.pkce_methods
            return httpx2.Response(200, json=discovery)
        if path == "/jwks":
            jwks = [
                {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(k.public_key())), "kid": kid, "use": "sig"}
                for kid, k in self.keys.items()
            ]
            return httpx2.Response(200, json={"keys": jwks})
        if path == "/token" and self.token is not None:
            return self.token(request)
        if path == "/userinfo" and self.userinfo:
            return httpx2.Response(200, json=self.userinfo)
        if path == "/revoke":
            return self.revoke(request)
        return httpx2.Response(404)

    def id_token(self, kid: str = "k1", **claims: Any) -> str:
        """A signed ID token for `u` (nonce `n`); `claims` override or add (None removes)."""
        now = int(self.now)
        payload = {"iss": ISSUER, "aud": CLIENT, "sub": "u", "iat": now, "exp": now + 60, "nonce": "n", **claims}
        payload = {k: v for k, v in payload.items() if v is not None}
        return jwt.encode(payload, self.keys[kid], algorithm="RS256", headers={"kid": kid})

    def config(self, make_config: Callable[..., Config], **settings: Any) -> Config:
        """A config that signs in with this provider (its client secret is SECRET), plus `settings`."""
        return make_config(idp_provider_url=ISSUER, idp_client_id=CLIENT, idp_client_secret=SECRET, **settings)

    def client(self, make_config: Callable[..., Config], **settings: Any) -> OidcClient:
        """An OidcClient for this provider, configured with `settings` too."""
        idp = self.config(make_config, **settings).idp
        assert idp is not None
        return OidcClient(idp, "https://auth.example.com/oauth2/callback", httpx2.MockTransport(self.handler))
