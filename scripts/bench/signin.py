"""authz's side of the benchmark: its config (one route per authz scenario, a 3+-criterion policy)
and a real sign-in through Envoy, authz and the npm IdP, as a browser does it."""

from __future__ import annotations

import base64
import secrets
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx2
from servers import free_port

from authz.signing.keys import generate_p256_pem

APP_HOST = "app.bench"  # every scenario's route; the authz scenarios add their own hosts
NOSIGN_HOST, PUBLIC_HOST, DENY_HOST = "nosign.bench", "public.bench", "deny.bench"

# alice (the IdP's demo user: example.com, groups engineering) passes all three allow criteria.
POLICY = {"allow": {"and": [{"domain": {"is": "example.com"}}, {"groups": {"has": "engineering"}},
                            {"http_method": {"in": ["GET", "HEAD", "POST"]}}]},
          "deny": {"or": [{"http_path": {"starts_with": "/admin"}}]}}  # fmt: skip


def authz_config(tmp: Path, upstream_port: int, envoy_port: int, idp: str, secret: str) -> dict[str, Any]:
    """The config every scenario's Envoy is generated from; the authz scenarios use all its routes,
    the others only APP_HOST's (with the ext_authz cluster pointed elsewhere, or no filter)."""
    to = f"http://127.0.0.1:{upstream_port}"

    def route(rid: str, host: str, **extra: Any) -> dict[str, Any]:
        return {"id": rid, "from": f"http://{host}", "to": to, **extra}

    return {
        "insecure_server": True,
        "address": f"127.0.0.1:{envoy_port}",
        "authenticate_service_url": f"http://authenticate.bench:{envoy_port}",
        "shared_secret": base64.b64encode(secrets.token_bytes(32)).decode(),
        "cookie_secret": base64.b64encode(secrets.token_bytes(32)).decode(),
        "signing_key": base64.b64encode(generate_p256_pem()).decode(),
        "cookie_secure": False,
        "session_store": f"sqlite://{tmp}/sessions.db",
        "grpc_address": f"127.0.0.1:{free_port()}",
        "http_address": f"127.0.0.1:{free_port()}",
        "log_level": "warn",
        # Metrics on, as an operated edge runs it (the decision log is on by default: every Check).
        "metrics_address": f"127.0.0.1:{free_port()}",
        "jwt_claims_headers": ["email", "groups"],
        "idp_provider_url": idp,
        "idp_client_id": "authz",
        "idp_client_secret": secret,
        "routes": [
            route("session", APP_HOST, policy=POLICY, pass_identity_headers=True),
            route("nosign", NOSIGN_HOST, policy=POLICY),
            route("public", PUBLIC_HOST, allow_public_unauthenticated_access=True, pass_identity_headers=True),
            route("deny", DENY_HOST, policy={"allow": {"and": [{"domain": {"is": "example.org"}}]}}),
        ],
    }


class _Forms(HTMLParser):
    """The first form's action and every named input's value (the IdP's login page)."""

    def __init__(self) -> None:
        super().__init__()
        self.action = ""
        self.fields: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "form" and not self.action:
            self.action = values.get("action", "")
        elif tag == "input" and values.get("name"):
            self.fields[values["name"]] = values.get("value", "")


class _Loopback(httpx2.HTTPTransport):
    """`*.bench` and `localhost` go to 127.0.0.1, keeping the URL (Host, cookies) as a browser would."""

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        host = request.url.host
        if host == "localhost" or host.endswith(".bench"):
            url = request.url.copy_with(host="127.0.0.1")
            request = httpx2.Request(
                request.method, url, headers=request.headers, stream=request.stream, extensions=request.extensions
            )
        return super().handle_request(request)


def sign_in(envoy_port: int, hosts: list[str], user: str = "alice") -> dict[str, str]:
    """Sign in through Envoy, authz and the real IdP, as a browser does, then visit each host (each
    gets its own session cookie through the authenticate host): host → `_pomerium` cookie value."""
    found: dict[str, str] = {}
    with httpx2.Client(transport=_Loopback(), follow_redirects=True, timeout=20,
                       headers={"accept": "text/html"}) as client:  # fmt: skip
        page = client.get(f"http://{hosts[0]}:{envoy_port}/")
        form = _Forms()
        form.feed(page.text)
        if "login" not in form.fields:
            raise SystemExit(f"no IdP login form at {page.url}: {page.status_code} {page.text[:300]}")
        landed = client.post(urljoin(str(page.url), form.action), data={**form.fields, "login": user, "password": "x"})
        for host in hosts:
            if host != hosts[0]:
                landed = client.get(f"http://{host}:{envoy_port}/")
            if host not in str(landed.url):
                raise SystemExit(f"sign-in did not land on {host}: {landed.status_code} {landed.url}")
            cookie = client.cookies.get("_pomerium", domain=host)
            if not cookie:
                raise SystemExit(f"sign-in set no _pomerium cookie on {host}")
            found[host] = cookie
    return found
