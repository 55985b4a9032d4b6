"""What every recipe test shares: authz, the local IdP and a recording upstream behind an Envoy whose
config the recipe module writes (plain Envoy config reproducing what the platform generates), and
the checks every recipe must pass: sign-in, allow, deny, forged headers stripped, what the
platform's selector does not name still denied, and authz stopped failing closed."""

from __future__ import annotations

import http.client
import os
import secrets
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2
import jwt
import pytest
import yaml

from authz.dev.stack import Process, free_port, idp_available, start_authz, start_envoy, start_idp

from .conftest import stack_config
from .loopback import browser, idp_login
from .upstream import Recorder

ROUTER = {"name": "envoy.filters.http.router",
          "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}  # fmt: skip
HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
EXT_AUTHZ = "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz"
EXT_AUTHZ_PER_ROUTE = "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute"


def platform_marks(platform: str) -> list[pytest.MarkDecorator]:
    """A platform recipe's module marks: end to end, the IdP needed, and the gRPC pass only (the
    platform calls authz's gRPC service; the HTTP-transport pass skips it, saying so)."""
    return [
        pytest.mark.e2e,
        pytest.mark.skipif(idp_available() is not None, reason=f"local IdP unavailable: {idp_available()}"),
        pytest.mark.skipif(
            os.environ.get("AUTHZ_E2E_TRANSPORT") == "http",
            reason=f"the {platform} recipe calls authz's gRPC service; it ran in the gRPC pass",
        ),
    ]


class Stack:
    """One recipe's stack. `envoy_config(stack)` returns the whole Envoy config (no admin: added
    here); it may read `ports`, `upstream.port`, `authz` (authz's config) and `pieces` (what
    `authz envoy-config --snippet` printed for that config)."""

    def __init__(
        self,
        tmp: Path,
        envoy_config: Callable[[Stack], dict[str, Any]],
        routes: list[dict[str, Any]] | None = None,
        **authz: Any,
    ) -> None:
        self.upstream = Recorder()
        self.port, self.admin, self.grpc_port, self.http_port, idp_port = (free_port() for _ in range(5))
        config = stack_config(self.port, self.grpc_port, self.http_port, self.upstream.port, tmp / "sessions.db")
        config["routes"] = (
            routes if routes is not None else [r for r in config["routes"] if r["id"] in ("public", "private")]
        )
        config.update(authz)
        secret = secrets.token_urlsafe(24)
        auth = config["authenticate_service_url"]
        self.idp = start_idp(idp_port, tmp, redirect_uris=[f"{auth}/oauth2/callback"], client_secret=secret)
        try:
            config.update(
                idp_provider_url=f"http://localhost:{idp_port}", idp_client_id="authz", idp_client_secret=secret
            )
            self.authz = config
            path = tmp / "config.yaml"
            path.write_text(yaml.safe_dump(config, sort_keys=False))
            out = subprocess.run([sys.executable, "-m", "authz", "envoy-config", "--snippet", "-c", str(path)],
                                 capture_output=True, text=True, check=True).stdout  # fmt: skip
            self.pieces: dict[str, Any] = yaml.safe_load(out)
            envoy = envoy_config(self)
            envoy["admin"] = {"address": {"socket_address": {"address": "127.0.0.1", "port_value": self.admin}}}
            (tmp / "envoy.yaml").write_text(yaml.safe_dump(envoy, sort_keys=False))
            self.authz_process: Process = start_authz(path, self.http_port, tmp)
            self.envoy: Process = start_envoy(tmp / "envoy.yaml", self.admin, tmp)
        except BaseException:  # a failed start leaves nothing running
            if hasattr(self, "authz_process"):
                self.authz_process.stop()
            self.idp.stop()
            self.upstream.close()
            raise

    def url(self, host: str, path: str = "/") -> str:
        return f"http://{host}:{self.port}{path}"

    def get(self, host: str, path: str = "/", **headers: str) -> httpx2.Response:
        """A request with `host` and this stack's port as its Host (as a browser sends it)."""
        return httpx2.get(f"http://127.0.0.1:{self.port}{path}", headers={"host": f"{host}:{self.port}", **headers},
                          timeout=10)  # fmt: skip

    def close(self) -> None:
        self.envoy.stop()
        self.authz_process.stop()
        self.idp.stop()
        self.upstream.close()


def cluster(name: str, port: int, http2: bool = False) -> dict[str, Any]:
    """A STATIC cluster of one loopback endpoint."""
    made: dict[str, Any] = {
        "name": name, "type": "STATIC", "connect_timeout": "1s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]},
    }  # fmt: skip
    if http2:
        made["typed_extension_protocol_options"] = {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}}}}  # fmt: skip
    return made


def listener(port: int, manager: dict[str, Any]) -> dict[str, Any]:
    """One plain-HTTP listener on loopback with `manager` (an HttpConnectionManager's fields)."""
    return {
        "name": "main",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                        "typed_config": {"@type": HCM, **manager}}]}],
    }  # fmt: skip


def send(stack: Stack, authority: str, target: str, *headers: tuple[str, str], **named: str) -> int:
    """One GET exactly as given, for its status: the request target byte for byte and the Host as
    written (no client-side resolving of dots, case or ports), headers in order, repeats and `_`
    names allowed."""
    conn = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=10)
    try:
        conn.putrequest("GET", target, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", authority)
        for name, value in (*headers, *named.items()):
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def never_reaches_the_upstream(stack: Stack, authority: str, target: str, **headers: str) -> int:
    """The status of a request that must not reach the upstream (it may be sent to sign in, refused,
    redirected or answered by authz's pages)."""
    stack.upstream.clear()
    status = send(stack, authority, target, **headers)
    assert stack.upstream.requests == [], f"{authority} {target} reached the upstream ({status})"
    return status


# The checks every recipe passes, each on hosts of the stack's authz config.


def sign_in_allow_and_deny(stack: Stack, private: str = "private.localhost", public: str = "public.localhost") -> None:
    """A browser signs in through the IdP and lands where it started, with a signed assertion at
    the upstream; a user the policy does not admit is refused; a public route is open."""
    with browser() as alice:
        landed = idp_login(alice, alice.get(stack.url(private, "/dash")), "alice")
        assert landed.status_code == 200 and str(landed.url) == stack.url(private, "/dash")
        assertion = stack.upstream.last().one("x-pomerium-jwt-assertion")
        assert jwt.decode(assertion or "", options={"verify_signature": False})["email"] == "alice@example.com"
    with browser() as mallory:
        refused = idp_login(mallory, mallory.get(stack.url(private, "/")), "mallory")
        assert refused.status_code == 403
    assert stack.get(public, "/x").status_code == 200


def forged_headers_never_reach_the_upstream(stack: Stack, public: str = "public.localhost") -> None:
    stack.upstream.clear()
    forged = {"x-pomerium-jwt-assertion": "forged", "x-pomerium-claim-email": "admin@example.com"}
    assert stack.get(public, "/x", **forged).status_code == 200
    seen = stack.upstream.last()
    assert seen.one("x-pomerium-jwt-assertion") != "forged"
    assert seen.one("x-pomerium-claim-email") != "admin@example.com"


def denied_untouched(stack: Stack, host: str, path: str = "/", status: int = 404) -> None:
    """A request authz has no route for is refused and the upstream never sees it."""
    stack.upstream.clear()
    assert stack.get(host, path).status_code == status
    assert stack.upstream.requests == []


def fails_closed(
    stack: Stack, hosts: tuple[str, ...] = ("public.localhost", "private.localhost"), status: int = 503
) -> None:
    """authz stopped: every protected request is refused with the Envoy's `status_on_error` (503 in
    authz's configs) and never reaches the upstream (the module's last use of its stack)."""
    stack.authz_process.stop()
    stack.upstream.clear()
    for host in hosts:
        assert stack.get(host, "/x").status_code == status
    assert stack.upstream.requests == []
