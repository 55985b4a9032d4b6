"""ID token and PKCE (class 9): a hostile IdP behind the real Envoy and `authz serve`.

The IdP here is a small HTTP server in the test process, so it can sign what a real one never would:
an ID token valid only from tomorrow, and ones whose JSON names `sub` or `email` twice (which value
counts depends on the parser). Each sign-in must end in a clear error page, with no session and no
traceback. The IdP's discovery does not list `code_challenge_methods_supported`, and it checks
PKCE S256 as a strict provider does: every sign-in here, the good one included, shows that authz
sends it anyway.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx2
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from ..conftest import Stack, _launch, _teardown
from ..loopback import browser

pytestmark = pytest.mark.e2e

CLIENT, SECRET = "authz", "hostile-idp-secret"
Answer = tuple[int, dict[str, str], bytes]  # status, headers, body
PRIVATE = "private.localhost"  # allowed_domains: example.com


def _s256(verifier: str) -> str:
    """The code challenge of a verifier (RFC 7636 §4.2)."""
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


@dataclass
class Grant:
    nonce: str
    challenge: str
    token: str  # which ID token the code is traded for (a key of HostileIdp.tokens)


@dataclass
class HostileIdp:
    """Discovery, JWKS, an authorization endpoint that signs the user in at once, token and userinfo."""

    key: rsa.RSAPrivateKey = field(default_factory=lambda: rsa.generate_private_key(65537, 2048))
    issue: str = "good"  # the ID token the next sign-in gets
    userinfo: bytes = b'{"sub": "alice", "email": "alice@example.com"}'
    codes: dict[str, Grant] = field(default_factory=dict)
    seen: list[str] = field(default_factory=list)  # "path: what was wrong", for PKCE and client checks

    def __post_init__(self) -> None:
        idp = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                idp.answer(self)

            def do_POST(self) -> None:
                idp.answer(self)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def answer(self, request: BaseHTTPRequestHandler) -> None:
        url = urlsplit(request.path)
        length = int(request.headers.get("content-length") or 0)
        form = {k: v[0] for k, v in parse_qs(request.rfile.read(length).decode()).items()}
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        status, headers, body = self.route(url.path, query, form, request.headers.get("authorization", ""))
        request.send_response(status)
        for name, value in {"content-length": str(len(body)), **headers}.items():
            request.send_header(name, value)
        request.end_headers()
        request.wfile.write(body)

    def route(self, path: str, query: dict[str, str], form: dict[str, str], auth: str) -> Answer:
        json_type = {"content-type": "application/json"}
        if path == "/.well-known/openid-configuration":
            return 200, json_type, json.dumps({
                "issuer": self.url, "authorization_endpoint": f"{self.url}/auth", "token_endpoint": f"{self.url}/token",
                "jwks_uri": f"{self.url}/jwks", "userinfo_endpoint": f"{self.url}/userinfo",
                "id_token_signing_alg_values_supported": ["RS256"],
            }).encode()  # fmt: skip
        if path == "/jwks":
            jwk = {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key())), "kid": "k1", "use": "sig"}
            return 200, json_type, json.dumps({"keys": [jwk]}).encode()
        if path == "/auth":
            if query.get("code_challenge_method") != "S256" or not query.get("code_challenge"):
                self.seen.append("/auth: no PKCE S256 challenge")
            code = secrets.token_urlsafe(12)
            self.codes[code] = Grant(query.get("nonce", ""), query.get("code_challenge", ""), self.issue)
            back = urlencode({"code": code, "state": query.get("state", "")})
            return 302, {"location": f"{query['redirect_uri']}?{back}"}, b""
        if path == "/token":
            grant = self.codes.pop(form.get("code", ""), None)
            verifier = form.get("code_verifier", "")
            if grant is None or not verifier or _s256(verifier) != grant.challenge:
                self.seen.append("/token: unknown code or wrong PKCE verifier")
                return 400, json_type, b'{"error": "invalid_grant"}'
            if auth != "Basic " + base64.b64encode(f"{CLIENT}:{SECRET}".encode()).decode():
                self.seen.append("/token: wrong client authentication")
                return 401, json_type, b'{"error": "invalid_client"}'
            tokens = {"access_token": "at-alice", "token_type": "Bearer", "expires_in": 600}
            body = json.dumps({**tokens, "id_token": self.id_token(grant)})
            return 200, {**json_type, "cache-control": "no-store"}, body.encode()
        if path == "/userinfo":
            return 200, json_type, self.userinfo
        return 404, {}, b""

    def id_token(self, grant: Grant) -> str:
        """The ID token `grant.token` names, signed with the published key whatever its content."""
        now = int(time.time())
        claims = {"iss": self.url, "aud": CLIENT, "sub": "alice", "email": "alice@example.com",
                  "email_verified": True, "iat": now, "exp": now + 600, "nonce": grant.nonce}  # fmt: skip
        if grant.token == "not-yet-valid":
            claims["nbf"] = now + 86_400
        text = json.dumps(claims)
        # Python keeps the last of a repeated key, a first-wins parser elsewhere would read mallory.
        if grant.token == "repeated-sub":
            text = text.replace('"sub": ', '"sub": "mallory", "sub": ')
        if grant.token == "repeated-email":
            text = text.replace('"email": ', '"email": "mallory@evil.test", "email": ')
        return jwt.PyJWS().encode(text.encode(), self.key, algorithm="RS256", headers={"kid": "k1"})


@pytest.fixture(scope="module")
def idp() -> Iterator[HostileIdp]:
    server = HostileIdp()
    yield server
    server.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, idp: HostileIdp) -> Iterator[Stack]:
    running = _launch(
        tmp_path_factory.mktemp("id-token"),
        idp_provider_url=idp.url,
        idp_client_id=CLIENT,
        idp_client_secret=SECRET,
        idp_timeout="5s",
    )
    yield running
    _teardown(running)


@pytest.fixture(autouse=True)
def _fresh(idp: HostileIdp, stack: Stack) -> Iterator[None]:
    idp.issue, idp.userinfo = "good", b'{"sub": "alice", "email": "alice@example.com"}'
    idp.seen.clear()
    stack.upstream.clear()
    yield
    assert idp.seen == []  # PKCE S256 and the client secret arrived on every sign-in
    assert "Traceback" not in stack.authz.output()


def _sign_in(stack: Stack) -> tuple[httpx2.Response, httpx2.Response]:
    """Sign in to the private route from a new browser: (where it ends, the route asked again)."""
    with browser() as client:
        landed = client.get(stack.url(PRIVATE, "/dash"))
        again = client.get(stack.url(PRIVATE, "/dash"), follow_redirects=False)
    return landed, again


def test_a_good_id_token_signs_in_with_pkce_the_idp_never_advertised(stack: Stack) -> None:
    """The control: this IdP and flow do work, so the refusals below are about the token alone."""
    landed, again = _sign_in(stack)
    assert landed.status_code == 200 and landed.json() == {"path": "/dash"}
    assert again.status_code == 200  # a session
    assert stack.upstream.last().one("x-pomerium-claim-email") == "alice@example.com"


@pytest.mark.parametrize(
    ("token", "detail"),
    [
        ("not-yet-valid", "the ID token is not valid yet (its nbf is in the future)"),
        ("repeated-sub", "the ID token's payload has a duplicate key 'sub'"),
        ("repeated-email", "the ID token's payload has a duplicate key 'email'"),
    ],
)
def test_a_hostile_id_token_ends_in_an_error_page(stack: Stack, idp: HostileIdp, token: str, detail: str) -> None:
    idp.issue = token
    landed, again = _sign_in(stack)
    assert landed.status_code == 400 and urlsplit(str(landed.url)).path == "/oauth2/callback"
    assert detail in html.unescape(landed.text)
    assert "eyJ" not in landed.text  # the token itself is never shown
    assert again.status_code == 302  # no session: the route sends the browser to sign in again
    assert stack.upstream.requests == []


def test_userinfo_with_a_repeated_email_ends_in_an_error_page(stack: Stack, idp: HostileIdp) -> None:
    idp.userinfo = b'{"sub": "alice", "email": "mallory@evil.test", "email": "alice@example.com"}'
    landed, again = _sign_in(stack)
    assert landed.status_code == 502
    assert "duplicate key 'email'" in html.unescape(landed.text)
    assert again.status_code == 302 and stack.upstream.requests == []
