"""One Envoy per scenario, all from the bootstrap `authz envoy-config` writes for the same config:
the same listener, virtual hosts and routes; only the auth part differs (the ext_authz cluster
pointed at another server, the filter removed, or replaced by Envoy's own jwt_authn + RBAC)."""

from __future__ import annotations

import copy
import json
import re
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from servers import ENVOY_CPU, ROOT, Proc, free_port, spawn

from authz.dev.stack import find_envoy, http_ok, wait_until
from authz.envoy.bootstrap import SIDECAR_CLUSTER
from authz.signing.keys import generate_p256_pem

JWT_HEADER = "x-bench-jwt"


def envoy_for(
    tmp: Path,
    name: str,
    config: dict[str, Any],
    *,
    with_ext_authz: bool = True,
    jwt_authn: str | None = None,
    http_ext_authz: int | None = None,
) -> tuple[Proc, int]:
    """Envoy (`--concurrency 1`, on CPU 0) from `authz envoy-config` for this config, optionally
    without its ext_authz filter, or with jwt_authn + RBAC instead (`jwt_authn`: the JWKS JSON), or
    with its ext_authz calling an HTTP service on 127.0.0.1:`http_ext_authz` instead of gRPC;
    (the process, its listener port). Writes the config as `<tmp>/<name>.config.yaml`."""
    admin = free_port()
    path = tmp / f"{name}.config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    out = subprocess.run(
        [sys.executable, "-m", "authz", "envoy-config", "-c", str(path), "--admin-address", f"127.0.0.1:{admin}"],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )  # fmt: skip
    bootstrap = yaml.safe_load(out.stdout)
    if not with_ext_authz or jwt_authn:
        drop_ext_authz(bootstrap)
    if jwt_authn:
        add_jwt_authn(bootstrap, jwt_authn)
    if http_ext_authz:
        use_http_service(bootstrap, http_ext_authz)
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
    return proc, int(config["address"].rsplit(":", 1)[1])


def _connection_managers(bootstrap: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        network["typed_config"]
        for listener in bootstrap["static_resources"]["listeners"]
        for chain in listener["filter_chains"]
        for network in chain["filters"]
    ]


def drop_ext_authz(bootstrap: dict[str, Any]) -> None:
    """The same listener and routes with no ext_authz filter and no per-route ext_authz settings."""
    for hcm in _connection_managers(bootstrap):
        hcm["http_filters"] = [f for f in hcm["http_filters"] if "ext_authz" not in f["name"]]
        for vhost in hcm["route_config"]["virtual_hosts"]:
            for route in vhost["routes"]:
                per = route.get("typed_per_filter_config", {})
                for key in [k for k in per if "ext_authz" in k]:
                    del per[key]
                if "typed_per_filter_config" in route and not per:
                    del route["typed_per_filter_config"]


HTTP_CLUSTER = "bench-http-ext-authz"


def use_http_service(bootstrap: dict[str, Any], port: int) -> None:
    """The same ext_authz filter and settings, but calling an HTTP/1.1 service (`http_service`: the
    request's method and path and a few of its headers are forwarded, a 200 allows) instead of the
    gRPC Check. Its cluster is shaped like the sidecar's (HTTP/1.1, no health checks)."""
    clusters = bootstrap["static_resources"]["clusters"]
    cluster = copy.deepcopy(next(c for c in clusters if c["name"] == SIDECAR_CLUSTER))
    cluster["name"] = HTTP_CLUSTER
    cluster["load_assignment"] = {"cluster_name": HTTP_CLUSTER, "endpoints": [{"lb_endpoints": [{"endpoint": {
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]}  # fmt: skip
    clusters.append(cluster)
    for hcm in _connection_managers(bootstrap):
        for http_filter in hcm["http_filters"]:
            if "ext_authz" in http_filter["name"]:
                settings = http_filter["typed_config"]
                grpc = settings.pop("grpc_service")
                settings["http_service"] = {
                    "server_uri": {"uri": f"http://127.0.0.1:{port}", "cluster": HTTP_CLUSTER,
                                   "timeout": grpc.get("timeout", "10s")},
                }  # fmt: skip


def add_jwt_authn(bootstrap: dict[str, Any], jwks: str) -> None:
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
    for hcm in _connection_managers(bootstrap):
        hcm["http_filters"][-1:-1] = [jwt_filter, rbac_filter]  # before the router


def bench_jwt() -> tuple[str, str, str]:
    """For envoy-jwt-authn: (the JWKS JSON, an ES256 token for alice@example.com, one for
    mallory@example.org that RBAC must refuse), the tokens valid for a day."""
    from authz.signing.assertion import sign
    from authz.signing.keys import jwks_document, load_signing_keys

    key = load_signing_keys(generate_p256_pem().decode())[0]
    now = int(time.time())

    def token(user: str, email: str) -> str:
        return sign(key, {"iss": "bench", "sub": user, "email": email, "iat": now, "exp": now + 86400})

    good, outsider = token("alice", "alice@example.com"), token("mallory", "mallory@example.org")
    return json.dumps(jwks_document((key,))), good, outsider


def envoy_version() -> str:
    out = subprocess.run([find_envoy(), "--version"], capture_output=True, text=True, check=False).stdout
    found = re.search(r"version: [0-9a-f]+/([^/]+)/", out)
    return found.group(1) if found else out.strip()[:60]
