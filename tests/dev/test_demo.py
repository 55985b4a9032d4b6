"""The demo app of `authz dev`: it shows an assertion only when it verifies against authz's JWKS."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread
from typing import Any
from urllib.parse import urlsplit

import jwt
import pytest

from authz.config import IssuerFormat
from authz.dev.demo import HOSTS, start_demo
from authz.dev.run import dev_config
from authz.sessions.session import Session
from authz.signing.assertion import build_claims, sign
from authz.signing.keys import SigningKey, generate_p256_pem, jwks_document, load_signing_keys

HOST = "app.localhost"


@dataclass
class Jwks:
    """authz's JWKS endpoint, as the sidecar serves it: a document that tests may change."""

    keys: tuple[SigningKey, ...]
    extra: list[dict[str, Any]] = field(default_factory=list)  # more JWKs, published after `keys`
    hits: int = 0

    def document(self) -> bytes:
        doc = jwks_document(self.keys)
        return json.dumps({"keys": [*doc["keys"], *self.extra]}).encode()


@pytest.fixture
def demo() -> Iterator[tuple[str, Jwks]]:
    """The demo app on port 0 verifying against a JWKS on port 0; (its URL, the JWKS)."""
    jwks = Jwks(load_signing_keys(generate_p256_pem().decode()))

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            jwks.hits += 1
            body = jwks.document()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    keys_server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = Thread(target=keys_server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    app = start_demo(f"http://127.0.0.1:{keys_server.server_address[1]}/.well-known/pomerium/jwks.json", [HOST])
    try:
        yield f"http://127.0.0.1:{app.server_address[1]}/", jwks
    finally:
        app.shutdown()
        app.server_close()
        keys_server.shutdown()
        keys_server.server_close()
        thread.join()


def assertion(key: SigningKey, audience: str = HOST, **claims: Any) -> str:
    """The X-Pomerium-Jwt-Assertion authz signs for alice on `audience`."""
    session = Session("sid", "alice", "alice@example.com", "Alice", ("eng",))
    now = int(time.time())
    payload = build_claims(hostname=audience, session=session, now=now, issuer_format=IssuerFormat.HOST_ONLY)
    return sign(key, {**payload, **claims})


def page(url: str, token: str | None) -> str:
    request = urllib.request.Request(url, headers={"host": HOST})  # noqa: S310 - a loopback URL we built
    if token is not None:
        request.add_header("x-pomerium-jwt-assertion", token)
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
        return str(response.read().decode())


VERIFIED = "Signed in as <b>alice@example.com</b> — assertion verified"


def test_a_signed_assertion_is_shown(demo: tuple[str, Jwks]) -> None:
    url, jwks = demo
    shown = page(url, assertion(jwks.keys[0]))
    assert VERIFIED in shown and "No verified identity" not in shown
    assert page(url, assertion(jwks.keys[0])).count("assertion verified") == 1
    assert jwks.hits == 1  # the JWKS is cached between requests


def test_forged_unsigned_and_misdirected_assertions_are_refused(demo: tuple[str, Jwks]) -> None:
    url, jwks = demo
    key = jwks.keys[0]
    impostor = load_signing_keys(generate_p256_pem().decode())[0]
    forged = SigningKey(impostor.private, "ES256", key.kid, impostor.jwk)  # another key claiming authz's kid
    payload = jwt.decode(assertion(key), options={"verify_signature": False})
    unsigned = jwt.encode(payload, None, algorithm="none", headers={"kid": key.kid})
    for token, why in [
        (assertion(forged), "Signature verification failed"),
        (unsigned, ""),
        (assertion(impostor), ""),  # a key authz never published
        (assertion(key, audience="other.localhost"), "Invalid issuer"),  # minted for another host
        (assertion(key, exp=int(time.time()) - 600), "expired"),
        ("not-a-jwt", ""),
    ]:
        shown = page(url, token)
        assert "No verified identity" in shown and VERIFIED not in shown, token
        assert why in shown
    assert "No verified identity: no assertion" in page(url, None)


def test_keys_the_demo_cannot_use_do_not_hide_authz_key(demo: tuple[str, Jwks]) -> None:
    """A JWKS may hold keys without `kid` (RFC 7517 §4.5: optional) or of other types: they are skipped."""
    url, jwks = demo
    jwks.extra = [
        {"kty": "EC", "crv": "P-256", "x": jwks.keys[0].jwk["x"], "y": jwks.keys[0].jwk["y"]},  # no kid
        {"kty": "unknown", "kid": "future"},
    ]
    assert VERIFIED in page(url, assertion(jwks.keys[0]))


def test_the_demo_knows_exactly_the_dev_configs_hosts(tmp_path: Path) -> None:
    config = dev_config(8080, 9191, 9192, 9000, tmp_path, (9300, "secret"))
    assert sorted(HOSTS) == sorted(urlsplit(r["from"]).hostname for r in config["routes"])
    assert "No verified identity: this demo serves no such host" in page_for("evil.localhost")


def page_for(host: str) -> str:
    app = start_demo("http://127.0.0.1:9/.well-known/pomerium/jwks.json")
    try:
        request = urllib.request.Request(f"http://127.0.0.1:{app.server_address[1]}/", headers={"host": host})
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            return str(response.read().decode())
    finally:
        app.shutdown()
        app.server_close()
