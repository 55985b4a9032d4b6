"""Grafana's side of compose.yaml, without Grafana: what it does with the assertion, done here with
a JOSE library authz does not sign with (joserfc; authz signs with pyjwt) and the JMESPath that
Grafana evaluates its role path with.

The stack is compose's own: deploy/compose/authz.yaml and the certificates, secrets and IdP
settings the setup service writes, run by a real `authz serve` behind the Envoy it generates,
over the edge's TLS and the Envoy ↔ authz mutual TLS. What differs from the containers, and why:
- every address is on 127.0.0.1 with free ports (no container network here); the browser-side
  client still asks for `https://<host>:8443`, sent to Envoy's port with that SNI and Host;
- authz reaches the IdP directly (`http://localhost:<port>`): inside the stack it goes through
  Envoy as `idp.localhost`, a name Python cannot resolve on this machine. The IdP served through
  Envoy by the compose settings (`proxy`, the kept Host) is checked on its own below.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx2
import jmespath
import pytest
import yaml
from joserfc import jwt as jose_jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet, OctKey

from authz.dev.stack import IDP_DIR, Process, free_port, idp_available, start_authz, start_envoy, start_idp, wait_until
from tests.compose_stack import authz_config, compose, relocated, run_setup

from .loopback import idp_login
from .upstream import Recorder

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(idp_available() is not None, reason=str(idp_available()))]
EDGE = 8443  # the port compose publishes, and every URL of the stack carries


class ComposeNames(httpx2.HTTPTransport):
    """A browser on the compose host: `*.localhost:8443` is Envoy (on its test port here), over
    TLS with the request's own name as SNI and Host; other ports on localhost as they are."""

    def __init__(self, edge_port: int, ca: Path) -> None:
        super().__init__(verify=ssl.create_default_context(cafile=str(ca)))
        self.edge_port = edge_port

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        host = request.url.host
        if host == "localhost" or host.endswith(".localhost"):
            port = self.edge_port if request.url.port == EDGE else request.url.port
            request = httpx2.Request(
                request.method,
                request.url.copy_with(host="127.0.0.1", port=port),
                headers=request.headers,
                stream=request.stream,
                extensions={**request.extensions, "sni_hostname": host},
            )
        return super().handle_request(request)


@dataclass
class Compose:
    state: Path
    edge_port: int
    upstream: Recorder
    http_port: int

    def browser(self) -> httpx2.Client:
        return httpx2.Client(
            transport=ComposeNames(self.edge_port, self.state / "public/ca.pem"),
            follow_redirects=True,
            headers={"accept": "text/html"},
            timeout=20,
        )


def _start_compose_idp(state: Path, port: int, log_dir: Path) -> Process:
    """The IdP with the settings the setup service wrote for its container, on a local port."""
    settings = json.loads((state / "idp/config.json").read_text())
    settings.update(host="127.0.0.1", port=port)
    path = log_dir / "idp-compose.json"
    path.write_text(json.dumps(settings))
    node = shutil.which("node") or "node"
    proc = Process("idp-compose", [node, str(IDP_DIR / "server.mjs")], log_dir, env={"IDP_CONFIG_FILE": str(path)})
    wait_until(lambda: b'"ready":true' in proc.log_path.read_bytes(), 30, "the compose IdP", proc.proc)
    return proc


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Compose]:
    tmp = tmp_path_factory.mktemp("compose")
    state, _ = run_setup(tmp)
    upstream = Recorder()
    envoy_port, admin_port, grpc_port, http_port, metrics_port, idp_port, idp2_port = (free_port() for _ in range(7))
    config = relocated(authz_config(), state)
    config.update(
        address=f"127.0.0.1:{envoy_port}",
        grpc_address=f"127.0.0.1:{grpc_port}",
        http_address=f"127.0.0.1:{http_port}",
        authorize_service_urls=[f"https://127.0.0.1:{grpc_port}"],
        metrics_address=f"127.0.0.1:{metrics_port}",
        session_store=f"sqlite://{tmp}/sessions.db",
        idp_provider_url=f"http://localhost:{idp_port}",
        ext_authz_transport=os.environ.get("AUTHZ_E2E_TRANSPORT", "grpc"),
    )
    targets = {"grafana": f"http://127.0.0.1:{upstream.port}", "idp": f"http://127.0.0.1:{idp2_port}"}
    for route in config["routes"]:
        route["to"] = targets[route["id"]]
    config_path = tmp / "config.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    command = [sys.executable, "-m", "authz", "envoy-config", "-c", str(config_path), "--admin-address",
               f"127.0.0.1:{admin_port}"]  # fmt: skip
    (tmp / "envoy.yaml").write_text(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
    auth = authz_config()["authenticate_service_url"]
    processes: list[Process] = []
    try:
        processes.append(
            start_idp(
                idp_port,
                tmp,
                redirect_uris=[f"{auth}/oauth2/callback"],
                post_logout_redirect_uris=[f"{auth}/.pomerium/signed_out"],
                client_secret=(state / "authz/idp_client_secret").read_text(),
            )
        )
        processes.append(_start_compose_idp(state, idp2_port, tmp))
        # authz's health, as compose's healthcheck asks it: its own certificate, the internal CA.
        health = ssl.create_default_context(cafile=str(state / "authz/ca.pem"))
        health.check_hostname = False  # the certificate names `authz`; here it is 127.0.0.1
        health.load_cert_chain(state / "authz/authz.pem", state / "authz/authz.key")
        processes.append(start_authz(config_path, http_port, tmp, tls=health))
        processes.append(start_envoy(tmp / "envoy.yaml", admin_port, tmp))
        running = Compose(state, envoy_port, upstream, http_port)
        with running.browser() as browser:
            jwks = _jwks_url()
            wait_until(lambda: browser.get(jwks).status_code == 200, 15, "the JWKS through Envoy")
        yield running
    finally:
        for process in reversed(processes):
            process.stop()
        upstream.close()


def _grafana() -> dict[str, str]:
    env: dict[str, str] = compose()["services"]["grafana"]["environment"]
    return env


def _jwks_url() -> str:
    return _grafana()["GF_AUTH_JWT_JWK_SET_URL"]


def _grafana_fetches_the_jwks(stack: Compose) -> KeySet:
    """As Grafana does: GET jwk_set_url, trusting only tls_client_ca (the state volume's CA)."""
    ca = Path(_grafana()["GF_AUTH_JWT_TLS_CLIENT_CA"].replace("/etc/authz/", f"{stack.state}/"))
    assert ca == stack.state / "public/ca.pem"
    with stack.browser() as client:
        response = client.get(_jwks_url())
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/json")
    return KeySet.import_key_set(response.json())


def _grafana_accepts(keys: KeySet, token: str) -> dict[str, Any]:
    """What Grafana checks before it signs anyone in: the signature by a key of the JWKS, `exp`,
    and expect_claims (`iss`, and `aud` as a string or among a list)."""
    algorithms = sorted({str(key.alg) for key in keys.keys if key.alg})
    claims = dict(jose_jwt.decode(token, keys, algorithms=algorithms).claims)
    now = time.time()
    assert claims["exp"] > now and claims["iat"] <= now + 60
    expected = json.loads(_grafana()["GF_AUTH_JWT_EXPECT_CLAIMS"])
    assert claims["iss"] == expected["iss"]
    audience = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
    assert expected["aud"] in audience
    return claims


def _sign_in(stack: Compose, user: str) -> tuple[httpx2.Response, str | None]:
    """Sign in to Grafana's host as `user`; the answer and the assertion Grafana would have got."""
    stack.upstream.requests.clear()
    with stack.browser() as browser:
        page = browser.get(f"https://grafana.localhost:{EDGE}/d/authz-overview")
        assert "/interaction/" in str(page.url), page.text[:300]
        landed = idp_login(browser, page, user)
    seen = stack.upstream.requests
    return landed, (seen[-1].one("x-pomerium-jwt-assertion") if seen else None)


def test_a_signed_in_admin_gets_grafanas_admin_role(stack: Compose) -> None:
    landed, token = _sign_in(stack, "alice")
    assert landed.status_code == 200 and str(landed.url) == f"https://grafana.localhost:{EDGE}/d/authz-overview"
    assert token is not None
    claims = _grafana_accepts(_grafana_fetches_the_jwks(stack), token)
    username, email = _grafana()["GF_AUTH_JWT_USERNAME_CLAIM"], _grafana()["GF_AUTH_JWT_EMAIL_CLAIM"]
    assert (claims[username], claims[email]) == ("alice", "alice@example.com")
    assert jmespath.search(_grafana()["GF_AUTH_JWT_ROLE_ATTRIBUTE_PATH"], claims) == "Admin"


def test_another_user_of_the_domain_is_a_viewer(stack: Compose) -> None:
    landed, token = _sign_in(stack, "bob")
    assert landed.status_code == 200 and token is not None
    claims = _grafana_accepts(_grafana_fetches_the_jwks(stack), token)
    assert claims["sub"] == "bob" and claims["groups"] == ["sales"]
    assert jmespath.search(_grafana()["GF_AUTH_JWT_ROLE_ATTRIBUTE_PATH"], claims) == "Viewer"


def test_someone_outside_the_policy_never_reaches_grafana(stack: Compose) -> None:
    landed, token = _sign_in(stack, "mallory")
    assert landed.status_code == 403 and token is None


def test_grafana_would_refuse_an_altered_assertion(stack: Compose) -> None:
    _, token = _sign_in(stack, "bob")
    assert token is not None
    header, _, signature = token.split(".")
    keys = _grafana_fetches_the_jwks(stack)
    claims = _grafana_accepts(keys, token)
    secret = OctKey.import_key("x" * 32)
    forged = jose_jwt.encode({"alg": "HS256"}, {**claims, "groups": ["admins"]}, secret, algorithms=["HS256"])
    for altered in (f"{header}.{forged.split('.')[1]}.{signature}", forged):
        with pytest.raises((JoseError, ValueError)):
            _grafana_accepts(keys, altered)


def test_the_idp_behind_envoy_is_one_issuer_by_its_public_name(stack: Compose) -> None:
    """The compose IdP's settings (proxy, kept Host) make its discovery name the public URL."""
    issuer = authz_config()["idp_provider_url"]
    with stack.browser() as browser:
        discovery = browser.get(f"{issuer}/.well-known/openid-configuration")
    assert discovery.status_code == 200, discovery.text[:300]
    document = discovery.json()
    assert document["issuer"] == issuer
    for endpoint in ("authorization_endpoint", "token_endpoint", "jwks_uri", "end_session_endpoint"):
        assert urlsplit(document[endpoint])[:2] == urlsplit(issuer)[:2], endpoint


def test_the_guides_curl_checks(stack: Compose) -> None:
    """docs/secure-grafana.md, steps 2 and 3: the JWKS by curl, and Grafana's host without a session."""
    with stack.browser() as client:
        client.headers["accept"] = "*/*"  # curl's
        keys = client.get(_jwks_url()).json()["keys"]
        unsigned = client.head(f"https://grafana.localhost:{EDGE}/", follow_redirects=False)
    assert [(k["kty"], k["alg"]) for k in keys] == [("EC", "ES256")]
    assert unsigned.status_code == 302
    assert unsigned.headers["location"].startswith(f"https://authenticate.localhost:{EDGE}/")


def test_composes_healthcheck_command_passes_against_authz(stack: Compose, monkeypatch: pytest.MonkeyPatch) -> None:
    """The healthcheck text of compose.yaml itself, run here: `authz` is this authz's sidecar (by
    name, so the certificate's name is checked), the state volume is the setup's folder."""
    test = compose()["services"]["authz"]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"]
    code = test[3].replace("/etc/authz/", f"{stack.state}/")
    resolve = socket.getaddrinfo

    def names(host: str, port: object, *args: Any, **kwargs: Any) -> Any:
        if (host, port) == ("authz", 9192):
            return resolve("127.0.0.1", stack.http_port, *args, **kwargs)
        return resolve(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", names)
    exec(compile(code, "compose-healthcheck", "exec"), {})  # noqa: S102 - our own compose file's text
    broken = code.replace("c.load_cert_chain(", "(lambda *a: None)(")  # without the client certificate
    with pytest.raises(OSError):
        exec(compile(broken, "compose-healthcheck", "exec"), {})  # noqa: S102
