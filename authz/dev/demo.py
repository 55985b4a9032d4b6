"""The demo upstream of `authz dev`: verifies the assertion against the JWKS and shows the claims.

It is what an app behind authz does (Grafana's JWT auth, for one): trust nothing but a token whose
signature checks out against the published keys, for its own host as audience.
"""

from __future__ import annotations

import html
import json
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt


class KeyCache:
    """The JWKS, refetched at most once a minute and on an unknown key id."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched = 0.0
        self._lock = threading.Lock()

    def _refresh(self) -> None:
        with urllib.request.urlopen(self.url, timeout=5) as response:  # noqa: S310 - our own sidecar
            document = json.load(response)
        self._keys = {k["kid"]: jwt.PyJWK(k) for k in document["keys"]}
        self._fetched = time.monotonic()

    def get(self, kid: str) -> jwt.PyJWK | None:
        with self._lock:
            if kid not in self._keys and time.monotonic() - self._fetched > 60:
                self._refresh()
            return self._keys.get(kid)


def verify(token: str, keys: KeyCache, audience: str) -> dict[str, Any]:
    """Claims of a valid assertion for `audience`; jwt.PyJWTError otherwise."""
    header = jwt.get_unverified_header(token)
    key = keys.get(str(header.get("kid", "")))
    if key is None:
        raise jwt.InvalidKeyError("unknown key id")
    return jwt.decode(token, key, algorithms=["ES256", "RS256"], audience=audience, leeway=30)


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
    keys = KeyCache(jwks_url)

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
