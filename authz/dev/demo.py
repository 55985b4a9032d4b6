"""The demo upstream of `authz dev`: verifies the assertion with authz.verify and shows the claims.

It is what an app behind authz does (Grafana's JWT auth, for one): trust nothing but a token whose
signature checks out against the published keys, for one of its own hosts as audience.
"""

from __future__ import annotations

import html
import json
import threading
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from authz.verify import InvalidAssertion, Verifier

# The demo config's route hosts (authz/dev/run.py): the app knows its own names, as any app behind
# authz must; the Host header only picks among them, it never becomes an audience.
HOSTS = ("app.localhost", "public.localhost")


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


def start_demo(
    jwks_url: str, hosts: Iterable[str] = HOSTS, host: str = "127.0.0.1", port: int = 0
) -> ThreadingHTTPServer:
    """Serve the demo app in a background thread; returns the server (`.server_address`). It verifies
    with authz.verify, as an app of yours would; anonymous (public route) assertions are shown too."""
    verifiers = {name: Verifier(jwks_url, audience=name, issuer=name, allow_anonymous=True) for name in hosts}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            name = self.headers.get("host", "").split(":")[0]
            token = self.headers.get("x-pomerium-jwt-assertion")
            claims, problem = None, None
            verifier = verifiers.get(name)
            if verifier is None:
                problem = "this demo serves no such host"
            elif token:
                try:
                    claims = dict(verifier.verify(token).claims)
                except InvalidAssertion as exc:
                    problem = str(exc)
            body = _page(name, claims, problem)
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
