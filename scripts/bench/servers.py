"""The processes a benchmark run needs: nginx (the upstream, and a canned ext_authz answer), the
Python floors, the IdP, authz and one Envoy per ext_authz backend, with the CPU each is pinned to.

Envoy runs on CPU 0 and every ext_authz server (authz and the floors alike) on CPU 1, so each
scenario gives the auth part the same core; the load tool and the upstream take what is left.
"""

from __future__ import annotations

import base64
import os
import re
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx2
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from authz.dev.stack import Process, find_envoy, free_port, http_ok, idp_available, port_open, wait_until  # noqa: E402
from authz.dev.stack import start_idp as _start_idp  # noqa: E402
from authz.signing.keys import generate_p256_pem  # noqa: E402

ENVOY_CPU, AUTHZ_CPU = "0", "1"
APP_HOST = "app.bench"  # every scenario's route; the authz ones add their own hosts
# A canned ext_authz answer: one gRPC frame holding an empty CheckResponse (status code 0, OK).
CANNED_OK = b"\0\0\0\0\0"


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


def spawn(name: str, argv: list[str], tmp: Path, cpu: str | None = None, env: dict[str, str] | None = None) -> Proc:
    """Start `argv` (pinned to `cpu` with taskset when given), its output in `<tmp>/<name>.log`."""
    log = tmp / f"{name}.log"
    command = ["taskset", "-c", cpu, *argv] if cpu is not None else argv
    with log.open("wb") as out:
        popen = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    return Proc(name, popen, log)


def wait_port(proc: Proc, port: int, timeout: float = 30.0) -> None:
    try:
        wait_until(lambda: port_open(port), timeout, proc.name, proc.popen)
    except (RuntimeError, TimeoutError) as exc:
        proc.stop()
        raise SystemExit(f"{proc.name} did not start: {exc}\n{proc.log.read_text(errors='replace')[-2000:]}") from None


def nginx(tmp: Path, name: str, server_block: str, cpu: str | None) -> Proc:
    """One nginx (one worker, foreground) with one server block."""
    home = tmp / name
    (home / "body").mkdir(parents=True, exist_ok=True)
    conf = home / "nginx.conf"
    conf.write_text(
        f"daemon off;\nmaster_process off;\nworker_processes 1;\nuser root;\npid {home}/nginx.pid;\n"
        f"error_log {home}/error.log warn;\nevents {{ worker_connections 8192; }}\n"
        # Connections stay open for the whole run (the default closes them after 1000 requests).
        f"http {{\n  access_log off;\n  keepalive_requests 100000000;\n  keepalive_timeout 3600s;\n"
        f"  client_body_temp_path {home}/body;\n{server_block}\n}}\n"
    )
    return spawn(name, ["nginx", "-c", str(conf), "-p", str(home)], tmp, cpu)


def upstream(tmp: Path) -> tuple[Proc, int]:
    """The app behind every route: a 200 with a small body."""
    port = free_port()
    block = (
        f"  server {{\n    listen 127.0.0.1:{port};\n"
        '    location / { return 200 "hello from the app\\n"; }\n'
        # For the checks before a run: what assertion this request reached the app with.
        '    location /_seen/ { return 200 "$http_x_pomerium_jwt_assertion"; }\n  }'
    )
    proc = nginx(tmp, "upstream", block, None)
    wait_port(proc, port)
    return proc, port


def canned_ext_authz(tmp: Path) -> tuple[Proc, int]:
    """nginx answering every Check with a canned OK over h2c: what an ext_authz service that costs
    nothing would give (POST to a static file is a 405, which error_page turns into the frame)."""
    port = free_port()
    home = tmp / "ext-authz-limit"
    home.mkdir(parents=True, exist_ok=True)
    (home / "ok.grpc").write_bytes(CANNED_OK)
    block = (
        f"  server {{\n    listen 127.0.0.1:{port} http2;\n    root {home};\n"
        "    location / { error_page 405 =200 /ok.grpc; return 405; }\n"
        "    location = /ok.grpc { internal; default_type application/grpc; add_trailer grpc-status 0 always; }\n"
        "  }"
    )
    proc = nginx(tmp, "ext-authz-limit-nginx", block, AUTHZ_CPU)
    wait_port(proc, port)
    return proc, port


def python_floor(tmp: Path, transport: str) -> tuple[Proc, int]:
    port = free_port()
    script = str(Path(__file__).with_name("floor.py"))
    proc = spawn(f"python-floor-{transport}", [sys.executable, script, transport, str(port)], tmp, AUTHZ_CPU)
    wait_port(proc, port)
    return proc, port


def idp_unavailable() -> str | None:
    """Why the local IdP (idp/, oidc-provider) cannot run here, or None."""
    return idp_available()


def start_idp(port: int, tmp: Path, redirect_uris: list[str], client_secret: str) -> Process:
    return _start_idp(port, tmp, redirect_uris=redirect_uris, client_secret=client_secret,
                      ttl={"AccessToken": 3600, "IdToken": 3600})  # fmt: skip


# -- authz, its config and a real sign-in -------------------------------------------------------------


@dataclass
class AuthzStack:
    config: dict[str, Any]
    config_path: Path
    grpc_port: int
    envoy_port: int  # the Envoy in front of authz (its listener is `address`)
    admin_port: int
    procs: list[Proc] = field(default_factory=list)


POLICY = {"allow": {"and": [{"domain": {"is": "example.com"}}, {"groups": {"has": "engineering"}},
                            {"http_method": {"in": ["GET", "HEAD", "POST"]}}]},
          "deny": {"or": [{"http_path": {"starts_with": "/admin"}}]}}  # fmt: skip


def authz_config(
    tmp: Path, upstream_port: int, grpc_port: int, envoy_port: int, idp: str, secret: str
) -> dict[str, Any]:
    """One route per authz scenario, all to the same upstream; a 3+-criterion policy."""
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
        "grpc_address": f"127.0.0.1:{grpc_port}",
        "http_address": f"127.0.0.1:{free_port()}",
        "log_level": "warn",
        "jwt_claims_headers": ["email", "groups"],
        "idp_provider_url": idp,
        "idp_client_id": "authz",
        "idp_client_secret": secret,
        "routes": [
            route("session", APP_HOST, policy=POLICY, pass_identity_headers=True),
            route("nosign", "nosign.bench", policy=POLICY),
            route("public", "public.bench", allow_public_unauthenticated_access=True, pass_identity_headers=True),
            route("deny", "deny.bench", policy={"allow": {"and": [{"domain": {"is": "example.org"}}]}}),
        ],
    }


def envoy_for(
    tmp: Path, name: str, config: dict[str, Any], *, with_ext_authz: bool = True, jwt_authn: str | None = None
) -> tuple[Proc, int, int]:
    """Envoy from `authz envoy-config` for this config, optionally without its ext_authz filter, or
    with Envoy's own jwt_authn + RBAC instead (`jwt_authn`: the JWKS JSON that verifies tokens)."""
    admin = free_port()
    path = tmp / f"{name}.config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    out = subprocess.run(
        [sys.executable, "-m", "authz", "envoy-config", "-c", str(path), "--admin-address", f"127.0.0.1:{admin}"],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )  # fmt: skip
    bootstrap = yaml.safe_load(out.stdout)
    if not with_ext_authz or jwt_authn:
        _drop_ext_authz(bootstrap)
    if jwt_authn:
        _add_jwt_authn(bootstrap, jwt_authn)
    boot = tmp / f"{name}.envoy.yaml"
    boot.write_text(yaml.safe_dump(bootstrap, sort_keys=False))
    argv = [find_envoy(), "-c", str(boot), "--disable-hot-restart", "--concurrency", "1",
            "--base-id", str(secrets.randbelow(2**30) + 1000), "--log-level", "warn"]  # fmt: skip
    proc = spawn(f"envoy-{name}", argv, tmp, ENVOY_CPU)
    try:
        wait_until(lambda: http_ok(f"http://127.0.0.1:{admin}/ready"), 60, "envoy", proc.popen)
    except (RuntimeError, TimeoutError):
        proc.stop()
        raise SystemExit(f"envoy {name} did not start:\n{proc.log.read_text(errors='replace')[-3000:]}") from None
    return proc, int(config["address"].rsplit(":", 1)[1]), admin


def _drop_ext_authz(bootstrap: dict[str, Any]) -> None:
    """The same listener and routes with no ext_authz filter and no per-route ext_authz settings."""
    for listener in bootstrap["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            for network in chain["filters"]:
                hcm = network["typed_config"]
                hcm["http_filters"] = [f for f in hcm["http_filters"] if "ext_authz" not in f["name"]]
                for vhost in hcm["route_config"]["virtual_hosts"]:
                    for route in vhost["routes"]:
                        per = route.get("typed_per_filter_config", {})
                        for key in [k for k in per if "ext_authz" in k]:
                            del per[key]
                        if "typed_per_filter_config" in route and not per:
                            del route["typed_per_filter_config"]


JWT_HEADER = "x-bench-jwt"


def _add_jwt_authn(bootstrap: dict[str, Any], jwks: str) -> None:
    """C++ doing the comparable job: Envoy verifies an ES256 JWT from a header against a local JWKS
    (`jwt_authn`), then RBAC allows only an email claim under example.com."""
    jwt_filter = {
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": {"bench": {
                "issuer": "bench", "local_jwks": {"inline_string": jwks}, "from_headers": [{"name": JWT_HEADER}],
                "payload_in_metadata": "jwt_payload", "forward": False,
            }},
            "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "bench"}}],
        },
    }  # fmt: skip
    rbac_filter = {
        "name": "envoy.filters.http.rbac",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
            "rules": {"action": "ALLOW", "policies": {"example-com": {
                "permissions": [{"any": True}],
                "principals": [{"metadata": {
                    "filter": "envoy.filters.http.jwt_authn",
                    "path": [{"key": "jwt_payload"}, {"key": "email"}],
                    "value": {"string_match": {"suffix": "@example.com"}},
                }}],
            }}},
        },
    }  # fmt: skip
    for listener in bootstrap["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            for network in chain["filters"]:
                filters = network["typed_config"]["http_filters"]
                filters[-1:-1] = [jwt_filter, rbac_filter]  # before the router


def bench_jwt() -> tuple[str, str]:
    """(JWKS JSON, a signed ES256 token for alice@example.com valid for a day) for envoy-jwt-authn."""
    import json

    from authz.signing.assertion import sign
    from authz.signing.keys import jwks_document, load_signing_keys

    key = load_signing_keys(generate_p256_pem().decode())[0]
    now = int(time.time())
    claims = {"iss": "bench", "sub": "alice", "email": "alice@example.com", "iat": now, "exp": now + 86400}
    return json.dumps(jwks_document((key,))), sign(key, claims)


class _Forms(HTMLParser):
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
        if host == "localhost" or host.endswith(".bench") or host == "bench":
            url = request.url.copy_with(host="127.0.0.1")
            request = httpx2.Request(
                request.method, url, headers=request.headers, stream=request.stream, extensions=request.extensions
            )
        return super().handle_request(request)


def sign_in(envoy_port: int, hosts: list[str], user: str = "alice") -> dict[str, str]:
    """Sign in through Envoy, authz and the real IdP, as a browser does, then visit each host (each
    gets its own session cookie from the authenticate host): host → `_pomerium` cookie value."""
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


def envoy_version() -> str:
    out = subprocess.run([find_envoy(), "--version"], capture_output=True, text=True, check=False).stdout
    found = re.search(r"version: [0-9a-f]+/([^/]+)/", out)
    return found.group(1) if found else out.strip()[:60]


def settle(seconds: float = 0.5) -> None:
    """Let a just-started process finish its start-up before it is measured."""
    time.sleep(seconds)
