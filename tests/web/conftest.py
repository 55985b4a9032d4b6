"""The web app in process: a pinned clock, an in-memory store, a fake IdP behind httpx2's MockTransport,
and httpx2's ASGI transport as the client (no sockets, no Node)."""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from authz.config import Config
from authz.identity.oidc import OidcClient
from authz.runtime.holder import RuntimeHolder
from authz.runtime.state import Runtime
from authz.sessions.session import Session, SessionHandle
from authz.sessions.stores import MemoryStore
from authz.signing import signed_url
from authz.web import binding
from authz.web.sidecar import create_app

ISSUER = "https://idp.example.com"
AUTH = "http://authenticate.localhost:8080"
APP = "http://app.localhost:8080"
START = 1_800_000_000.0
ROUTES = [
    {"from": "http://app.localhost", "to": "http://127.0.0.1:9", "allow_any_authenticated_user": True},
    {"from": "http://other.localhost", "to": "http://127.0.0.1:9", "allow_any_authenticated_user": True},
]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Clock:
    """The app's clock, moved by hand."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class FakeIdp:
    """An OpenID provider: discovery, JWKS, token (code → signed ID token), userinfo, revocation."""

    clock: Clock
    key: rsa.RSAPrivateKey = field(default_factory=lambda: rsa.generate_private_key(65537, 2048))
    codes: dict[str, dict[str, Any]] = field(default_factory=dict)
    token_status: int = 200  # what the token endpoint answers
    revoked: list[str] = field(default_factory=list)
    hits: dict[str, int] = field(default_factory=dict)
    hook: Callable[[], object] | None = None  # runs on the next request the IdP gets, once

    def handler(self, request: httpx2.Request) -> httpx2.Response:
        if self.hook is not None:
            hook, self.hook = self.hook, None
            hook()
        path = request.url.path
        self.hits[path] = self.hits.get(path, 0) + 1
        if path == "/.well-known/openid-configuration":
            return httpx2.Response(200, json={
                "issuer": ISSUER, "authorization_endpoint": f"{ISSUER}/auth", "token_endpoint": f"{ISSUER}/token",
                "jwks_uri": f"{ISSUER}/jwks", "userinfo_endpoint": f"{ISSUER}/userinfo",
                "end_session_endpoint": f"{ISSUER}/end", "revocation_endpoint": f"{ISSUER}/revoke",
                "id_token_signing_alg_values_supported": ["RS256"], "code_challenge_methods_supported": ["S256"],
            })  # fmt: skip
        if path == "/jwks":
            jwk = {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key())), "kid": "k1", "use": "sig"}
            return httpx2.Response(200, json={"keys": [jwk]})
        if path == "/token":
            if self.token_status != 200:
                return httpx2.Response(self.token_status, text="upstream trouble")
            form = parse_qs(request.content.decode())
            grant = self.codes.pop(form["code"][0], None)
            if grant is None:
                return httpx2.Response(400, json={"error": "invalid_grant"})
            return httpx2.Response(200, json={
                "access_token": f"at-{grant['sub']}", "refresh_token": f"rt-{grant['sub']}", "token_type": "Bearer",
                "expires_in": 3600, "id_token": self.id_token(grant["sub"], grant["nonce"]),
            })  # fmt: skip
        if path == "/userinfo":
            sub = request.headers["authorization"].removeprefix("Bearer at-")
            return httpx2.Response(200, json={"sub": sub, "email": f"{sub}@example.com", "groups": ["eng"]})
        if path == "/revoke":
            self.revoked.append(parse_qs(request.content.decode())["token"][0])
            return httpx2.Response(200)
        return httpx2.Response(404)

    def id_token(self, sub: str, nonce: str) -> str:
        now = int(self.clock())
        claims = {"iss": ISSUER, "aud": "authz", "sub": sub, "iat": now, "exp": now + 300, "nonce": nonce,
                  "name": sub.title(), "email": f"{sub}@example.com"}  # fmt: skip
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": "k1"})

    def authorize(self, location: str, sub: str = "alice") -> str:
        """What a user's login at the IdP ends in: the callback query (`code` and `state`)."""
        query = parse_qs(urlsplit(location).query)
        code = secrets.token_urlsafe(8)
        self.codes[code] = {"sub": sub, "nonce": query["nonce"][0]}
        return f"code={code}&state={query['state'][0]}"


@dataclass
class Web:
    """One config, runtime, app and fake IdP; `client()` talks to the app in process."""

    config: Config
    rt: Runtime
    holder: RuntimeHolder
    clock: Clock
    idp: FakeIdp
    ready: list[bool]
    bindings: list[str] = field(default_factory=list)  # `name=value` of each binding cookie handed out

    @asynccontextmanager
    async def client(self) -> AsyncIterator[httpx2.AsyncClient]:
        app = create_app(self.holder, lambda: self.ready[0], clock=self.clock)
        transport = httpx2.ASGITransport(app=app)
        client = httpx2.AsyncClient(transport=transport, base_url=AUTH, follow_redirects=False)

        async def forget_cookies(response: httpx2.Response) -> None:
            client.cookies.clear()  # tests send every cookie explicitly, as the case needs

        client.event_hooks["response"] = [forget_cookies]
        async with client:
            yield client

    def sign_in_link(self, target: str = f"{APP}/dash?x=1", issued: float | None = None, *, bound: bool = True) -> str:
        """A signed sign-in URL as the Check's 302 gives it; the binding cookie it set on the route
        host is kept in `bindings` (the latest last)."""
        now = self.clock() if issued is None else issued
        extra = {}
        if bound:
            digest, lines = binding.begin(self.rt.cookies, now, ())
            self.bindings.append(lines[0].partition(";")[0])
            extra["pomerium_binding"] = digest
        return signed_url.sign(self.rt.url_key, self.rt.sign_in_endpoint, target, now, extra)

    def seed(self, host: str = "app.localhost", *, user: str = "u-1", email: str = "dora@example.com") -> str:
        """A stored session and its sealed cookie value for `host`."""
        now = int(self.clock())
        session = Session(secrets.token_urlsafe(8), user, email, "Dora <Explorer>", ("eng", "ops"), {}, now, now + 3600,
                          id_token="idt", access_token="at", refresh_token="rt")  # fmt: skip
        self.rt.store.put(session)
        # The authenticate host's own cookie is sealed for its own purpose.
        codec = self.rt.auth_codec if host == self.config.authenticate_host else self.rt.codec
        return codec.seal(SessionHandle(session.id, user, host, now, now + 3600))


@pytest.fixture
def make_web(make_config: Callable[..., Config]) -> Iterator[Callable[..., Web]]:
    def build(**overrides: Any) -> Web:
        settings: dict[str, Any] = {
            "routes": ROUTES,
            "idp_provider_url": ISSUER,
            "idp_client_id": "authz",
            "idp_client_secret": "s",
            **overrides,
        }
        config = make_config(**settings)
        clock = Clock(START)
        idp = FakeIdp(clock)
        oidc = None
        if config.idp is not None:
            redirect_uri = f"{config.authenticate_service_url}/oauth2/callback"
            oidc = OidcClient(config.idp, redirect_uri, transport=httpx2.MockTransport(idp.handler))
        rt = Runtime.build(config, MemoryStore(), oidc=oidc)
        return Web(config, rt, RuntimeHolder(rt), clock, idp, [True])

    yield build


@pytest.fixture
def web(make_web: Callable[..., Web]) -> Web:
    return make_web()


def set_cookie(response: httpx2.Response, name: str) -> str | None:
    """The value a response sets for cookie `name` ('' when it clears it), or None."""
    for line in response.headers.get_list("set-cookie"):
        cookie_name, _, rest = line.partition("=")
        if cookie_name == name:
            return rest.partition(";")[0]
    return None


def path_of(url: str) -> str:
    """`url` without scheme and authority: what to request from the in-process app."""
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}" if parts.query else parts.path
