"""The demo upstream of `authz dev`: verifies the assertion against the JWKS and shows the claims.

It is what an app behind authz does (Grafana's JWT auth, for one): trust nothing but a token whose
signature checks out against the published keys, for its own host as audience.
"""

from __future__ import annotations

import html
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt

# What authz signs with (authz.signing.keys); the key's own JWK, never the token header, picks one.
ALGORITHMS = frozenset({"ES256", "RS256"})


def key_client(jwks_url: str) -> jwt.PyJWKClient:
    """authz's published keys: the JWKS cached for a minute, fetched again for an unknown key id."""
    return jwt.PyJWKClient(jwks_url, lifespan=60, timeout=5)


def verify(token: str, keys: jwt.PyJWKClient, audience: str) -> dict[str, Any]:
    """Claims of a valid assertion for `audience`; jwt.PyJWTError otherwise."""
    key = keys.get_signing_key_from_jwt(token)
    if key.algorithm_name not in ALGORITHMS:
        raise jwt.InvalidAlgorithmError(f"authz does not sign with {key.algorithm_name}")
    claims: dict[str, Any] = jwt.decode(token, key, algorithms=[key.algorithm_name], audience=audience, leeway=30)
    return claims


def _page(host: str, claims: dict[str, Any] | None, problem: str | None) -> bytes:
    if claims is None:
        body = f"<p class=bad>No verified identity: {html.escape(problem or 'no assertion')}</p>"
    else:
        who = claims.get("email") or "an anonymous visitor (public route)"
        rows = "".join(
            f"<tr><th>{html.escape(k)}</th><td><code>{html.escape(json.dumps(v))}</code></td></tr>"
            for k, v in claims.items()
        )
        body = f"<p class=ok>Signed in as <b>{html.escape(str(who))}</b> — assertion verified.</p><table>{rows}</table>"
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>authz demo</title><style>"
        "body{font-family:system-ui,sans-serif;max-width:48rem;margin:3rem auto;padding:0 1rem}"
        "th{text-align:left;padding-right:1rem}.ok{color:#1a7f37}.bad{color:#cf222e}</style></head><body>"
        f"<h1>authz demo app on {html.escape(host)}</h1>{body}"
        "<p><a href='/.well-known/pomerium/jwks.json'>published keys (JWKS)</a></p>"
        "</body></html>"
    ).encode()


def start_demo(jwks_url: str, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """Serve the demo app in a background thread; returns the server (`.server_address`)."""
    keys = key_client(jwks_url)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            audience = self.headers.get("host", "").split(":")[0]
            token = self.headers.get("x-pomerium-jwt-assertion")
            claims, problem = None, None
            if token:
                try:
                    claims = verify(token, keys, audience)
                except (jwt.PyJWTError, OSError, ValueError) as exc:
                    problem = str(exc)
            body = _page(audience, claims, problem)
            self.send_response(200)
            self.send_header("content-type", "text/html; charset=utf-8")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
