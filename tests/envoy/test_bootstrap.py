"""The generated bootstrap: its structure, and `envoy --mode validate` on real configs."""

from __future__ import annotations

import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from authz.config import Config
from authz.config.load import STRIPPED_REQUEST_HEADERS
from authz.dev.stack import find_envoy
from authz.envoy.bootstrap import bootstrap, render_bootstrap

STRIPPED = set(STRIPPED_REQUEST_HEADERS)
ROUTES: list[dict[str, Any]] = [
    {
        "id": "app",
        "from": "http://app.localhost",
        "to": "http://127.0.0.1:9000",
        "allow_any_authenticated_user": True,
        "remove_request_headers": ["X-Internal"],
        "set_response_headers": {"X-Frame-Options": "DENY"},
        "jit": {"approvers": [{"allow": {"or": [{"groups": {"has": "admins"}}]}}], "max_stream_duration": "90s"},
    },
    {
        "from": "http://app.localhost",
        "prefix": "/api/",
        "to": ["http://127.0.0.1:9001", "http://localhost:9002"],
        "prefix_rewrite": "/",
        "allowed_domains": ["example.com"],
        "pass_identity_headers": True,
        "timeout": "90s",
    },
    {
        "from": "https://secure.example.com",
        "regex": "^/v[0-9]+/.*",
        "to": "https://upstream.example.com/base",
        "allow_websockets": True,
        "allowed_users": ["a@example.com"],
        "preserve_host_header": True,
    },
    {
        "from": "http://*.wild.localhost",
        "path": "/exact",
        "to": "http://127.0.0.1:9003",
        "allow_public_unauthenticated_access": True,
        "host_rewrite": "internal.example.com",
    },
]


def envoy_validate(text: str, tmp_path: Path) -> None:
    path = tmp_path / "envoy.yaml"
    path.write_text(text)
    result = subprocess.run(
        [
            find_envoy(),
            "--mode",
            "validate",
            "-c",
            str(path),
            "--disable-hot-restart",
            "--base-id",
            str(random.randint(1000, 2**30)),
            "--log-level",
            "error",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _self_signed(tmp_path: Path) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    import datetime as dt

    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return "cert.pem", "key.pem"


@pytest.fixture
def full(make_config: Callable[..., Config]) -> Config:
    return make_config(routes=ROUTES, jwt_claims_headers={"X-Email": "email"}, grpc_client_timeout="3s")


def test_generated_configs_validate(full: Config, make_config: Callable[..., Config], tmp_path: Path) -> None:
    envoy_validate(render_bootstrap(full), tmp_path)
    envoy_validate(render_bootstrap(make_config(), admin_address="127.0.0.1:9901"), tmp_path)
    cert, key = _self_signed(tmp_path)
    tls = make_config(
        insecure_server=False,
        certificate_file=cert,
        key_file=key,
        authenticate_service_url="https://auth.example.com",
        routes=[
            {
                "from": "https://app.example.com",
                "to": "http://127.0.0.1:1",
                "allow_any_authenticated_user": True,
            }
        ],
    )
    text = render_bootstrap(tls)
    assert "DownstreamTlsContext" in text
    envoy_validate(text, tmp_path)


def _hcm(data: dict[str, Any]) -> dict[str, Any]:
    (listener,) = data["static_resources"]["listeners"]
    (chain,) = listener["filter_chains"]
    return chain["filters"][0]["typed_config"]  # type: ignore[no-any-return]


def _vhost(data: dict[str, Any], domain: str) -> dict[str, Any]:
    (vhost,) = [v for v in _hcm(data)["route_config"]["virtual_hosts"] if domain in v["domains"]]
    return vhost


def test_ext_authz_filter_fails_closed(full: Config) -> None:
    data = bootstrap(full)
    ext = _hcm(data)["http_filters"][0]
    assert ext["name"] == "envoy.filters.http.ext_authz"
    cfg = ext["typed_config"]
    assert cfg["failure_mode_allow"] is False
    assert cfg["status_on_error"] == {"code": "ServiceUnavailable"}
    assert cfg["grpc_service"]["timeout"] == "3s"
    assert cfg["transport_api_version"] == "V3"
    assert _hcm(data)["http_filters"][-1]["name"] == "envoy.filters.http.router"


def test_connection_manager_is_hardened(full: Config) -> None:
    hcm = _hcm(bootstrap(full))
    assert hcm["normalize_path"] and hcm["merge_slashes"] and hcm["use_remote_address"]
    assert hcm["path_with_escaped_slashes_action"] == "UNESCAPE_AND_REDIRECT"
    assert hcm["always_set_request_id_in_response"]
    assert hcm["common_http_protocol_options"]["headers_with_underscores_action"] == "REJECT_REQUEST"
    assert hcm["route_config"]["ignore_port_in_host_matching"] is True


def test_routes_carry_route_id_and_sidecar_paths_skip_ext_authz(full: Config) -> None:
    data = bootstrap(full)
    vhost = _vhost(data, "app.localhost")
    sidecar, user = vhost["routes"][:4], vhost["routes"][4:]
    assert [r["match"] for r in sidecar] == [
        {"path": "/.pomerium"},
        {"prefix": "/.pomerium/"},
        {"path": "/.well-known/pomerium"},
        {"prefix": "/.well-known/pomerium/"},
    ]
    for route in sidecar:
        assert route["route"]["cluster"] == "authz-http"
        assert route["typed_per_filter_config"]["envoy.filters.http.ext_authz"]["disabled"] is True
    ids = [
        r["typed_per_filter_config"]["envoy.filters.http.ext_authz"]["check_settings"]["context_extensions"]["route_id"]
        for r in user
    ]
    assert ids == [full.routes[0].id, full.routes[1].id]
    assert user[0]["match"] == {"prefix": "/"} and user[1]["match"] == {"prefix": "/api/"}
    assert user[1]["route"]["prefix_rewrite"] == "/" and user[1]["route"]["timeout"] == "90s"


def test_identity_headers_stripped_unless_passed(full: Config) -> None:
    vhost = _vhost(bootstrap(full), "app.localhost")
    first, second = vhost["routes"][4:]
    assert set(first["request_headers_to_remove"]) - STRIPPED == {
        "x-internal",
        "x-pomerium-jwt-assertion",
        "x-pomerium-jwt-assertion-for",
        "x-email",
    }
    assert set(second["request_headers_to_remove"]) == STRIPPED
    assert first["response_headers_to_add"][0]["append_action"] == "OVERWRITE_IF_EXISTS_OR_ADD"


def _routes(config: Config) -> dict[str, dict[str, Any]]:
    vhosts = _hcm(bootstrap(config))["route_config"]["virtual_hosts"]
    return {r["name"]: r for v in vhosts for r in v["routes"] if "name" in r}


def test_streams_on_a_jit_route_end_with_max_stream_duration(full: Config) -> None:
    routes = _routes(full)
    assert routes["app"]["route"]["max_stream_duration"] == {"max_stream_duration": "90s"}
    assert [name for name, r in routes.items() if "max_stream_duration" in r["route"]] == ["app"]


def test_headers_that_redirect_the_upstream_are_removed_on_every_route(
    full: Config, make_config: Callable[..., Config]
) -> None:
    for route in _routes(full).values():  # public and signed-in routes alike
        assert set(route["request_headers_to_remove"]) >= STRIPPED, route["name"]
    config = make_config(
        routes=[
            {
                "id": "keeps",
                "from": "http://app.localhost",
                "to": "http://127.0.0.1:9000",
                "allow_public_unauthenticated_access": True,
                "pass_identity_headers": True,
                "keep_request_headers": ["X-Forwarded-Prefix", "Forwarded"],
                # authz sets this one from config after the client's is gone: Envoy must not drop it.
                "set_request_headers": {"X-Real-IP": "fixed"},
            }
        ]
    )
    removed = set(_routes(config)["keeps"]["request_headers_to_remove"])
    assert removed == STRIPPED - {"x-forwarded-prefix", "forwarded", "x-real-ip"}


def test_a_rewritten_host_reaches_the_upstream_as_x_forwarded_host_from_config(
    full: Config, make_config: Callable[..., Config]
) -> None:
    routes = list(_routes(full).values())
    app, api, secure, wild = routes
    for route in (app, api):  # auto_host_rewrite; the port is authenticate_service_url's
        assert route["route"]["auto_host_rewrite"] is True
        assert route["request_headers_to_add"] == [
            {
                "header": {"key": "x-forwarded-host", "value": "app.localhost:8080"},
                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
            }
        ]
    assert "request_headers_to_add" not in secure  # preserve_host_header: the upstream reads Host
    assert "append_x_forwarded_host" not in secure["route"]
    # A wildcard host has no one name: Envoy appends the Host it rewrote (the client's XFH is removed first).
    assert wild["route"]["host_rewrite_literal"] == "internal.example.com"
    assert wild["route"]["append_x_forwarded_host"] is True and "request_headers_to_add" not in wild
    kept = make_config(
        routes=[
            {
                "id": name,
                "from": "http://app.localhost",
                "to": "http://127.0.0.1:9000",
                "allow_public_unauthenticated_access": True,
                option: value,
            }
            for name, option, value in (
                ("kept", "keep_request_headers", ["X-Forwarded-Host"]),
                ("set", "set_request_headers", {"X-Forwarded-Host": "front.example.com"}),
            )
        ]
    )
    for route in _routes(kept).values():
        assert "request_headers_to_add" not in route and "append_x_forwarded_host" not in route["route"]
        assert "x-forwarded-host" not in route["request_headers_to_remove"]


def test_authenticate_host_serves_its_allow_list_only(full: Config) -> None:
    vhost = _vhost(bootstrap(full), "authenticate.localhost")
    *allowed, rest = vhost["routes"]
    assert [r["match"] for r in allowed] == [
        {"prefix": "/.pomerium/"}, {"path": "/oauth2/callback"},
        {"path": "/.well-known/pomerium"}, {"prefix": "/.well-known/pomerium/"},
    ]  # fmt: skip
    for route in allowed:
        assert route["route"]["cluster"] == "authz-http"
        assert route["typed_per_filter_config"]["envoy.filters.http.ext_authz"]["disabled"] is True
    assert rest["match"] == {"prefix": "/"} and rest["direct_response"]["status"] == 404
    callbacks = [
        v
        for v in _hcm(bootstrap(full))["route_config"]["virtual_hosts"]
        if v["name"] != vhost["name"] and any("oauth2" in str(r["match"]) for r in v["routes"])
    ]
    assert callbacks == []  # /oauth2/callback only through the authenticate host


def test_clusters(full: Config) -> None:
    clusters = {c["name"]: c for c in bootstrap(full)["static_resources"]["clusters"]}
    grpc = clusters["authz-grpc"]
    assert "http2_protocol_options" in str(grpc["typed_extension_protocol_options"])
    tls = [c for c in clusters.values() if "transport_socket" in c]
    assert len(tls) == 1 and tls[0]["transport_socket"]["typed_config"]["sni"] == "upstream.example.com"
    dns = [c for c in clusters.values() if c["type"] == "STRICT_DNS"]
    assert len(dns) == 2  # localhost:9002 and upstream.example.com


def test_cli_one_document_and_no_admin(write_config: Callable[..., Path]) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "authz", "envoy-config", "-c", str(write_config())],
        capture_output=True,
        text=True,
        check=True,
    )
    documents = list(yaml.safe_load_all(out.stdout))
    assert len(documents) == 1 and "admin" not in documents[0]
    bad = subprocess.run(
        [sys.executable, "-m", "authz", "envoy-config", "-c", str(write_config(routes=[{}]))],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 1 and bad.stdout == "" and "routes[0].from: is required" in bad.stderr


def test_every_worker_is_an_endpoint_sent_checks_only_while_serving(
    make_config: Callable[..., Config], tmp_path: Path
) -> None:
    config = make_config(workers=2, session_store=f"sqlite:///{tmp_path / 's.db'}", grpc_address="127.0.0.1:7000",
                         http_address="127.0.0.1:7100")  # fmt: skip
    clusters = {c["name"]: c for c in bootstrap(config)["static_resources"]["clusters"]}
    grpc = clusters["authz-grpc"]
    endpoints = grpc["load_assignment"]["endpoints"][0]["lb_endpoints"]
    assert [e["endpoint"]["address"]["socket_address"]["port_value"] for e in endpoints] == [7000, 7001]
    (health,) = grpc["health_checks"]
    assert "grpc_health_check" in health and health["no_traffic_interval"] == "2s"
    assert grpc["common_lb_config"]["healthy_panic_threshold"] == {"value": 0}  # none serving: fail closed
    one = {c["name"]: c for c in bootstrap(make_config())["static_resources"]["clusters"]}["authz-grpc"]
    assert "health_checks" not in one and len(one["load_assignment"]["endpoints"][0]["lb_endpoints"]) == 1
    envoy_validate(render_bootstrap(config), tmp_path)


def test_the_http_transport_is_told_what_only_envoy_knows(make_config: Callable[..., Config], tmp_path: Path) -> None:
    routes = [{**ROUTES[0], "set_request_headers": {"X-Team": "eng"}}, *ROUTES[1:]]
    config = make_config(routes=routes, ext_authz_transport="http", jwt_claims_headers={"X-Email": "email"})
    data = bootstrap(config)
    filters = _hcm(data)["http_filters"]
    assert [f["name"] for f in filters] == [
        "envoy.filters.http.header_mutation", "envoy.filters.http.ext_authz", "envoy.filters.http.router",
    ]  # fmt: skip
    removed = [m["remove"] for m in filters[0]["typed_config"]["mutations"]["request_mutations"]]
    assert removed == ["x-authz-route-id", "x-authz-route-checksum", "x-authz-source", "x-authz-client-cert"]
    service = filters[1]["typed_config"]["http_service"]
    added = {h["key"]: h["value"] for h in service["authorization_request"]["headers_to_add"]}
    assert added == {"x-authz-route-id": "%ROUTE_NAME%", "x-authz-route-checksum": "%METADATA(ROUTE:authz:checksum)%",
                     "x-authz-source": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
                     "x-authz-client-cert": "%DOWNSTREAM_PEER_CERT%"}  # fmt: skip
    upstream = {p["exact"] for p in service["authorization_response"]["allowed_upstream_headers"]["patterns"]}
    assert upstream == {"x-pomerium-jwt-assertion", "x-pomerium-jwt-assertion-for", "x-email", "x-team", "cookie"}
    routes_out = [r for vh in _hcm(data)["route_config"]["virtual_hosts"] for r in vh["routes"] if "name" in r]
    assert {r["name"] for r in routes_out} == {r.id for r in config.routes}  # %ROUTE_NAME% is the route id
    clusters = {c["name"]: c for c in data["static_resources"]["clusters"]}
    assert "typed_extension_protocol_options" not in clusters["authz-grpc"]  # HTTP/1.1
    envoy_validate(render_bootstrap(config), tmp_path)


def test_trusted_hops_and_the_proxy_protocol(make_config: Callable[..., Config], tmp_path: Path) -> None:
    """Behind a balancer: the client's address from its X-Forwarded-For entry or the PROXY protocol."""
    plain = bootstrap(make_config())
    assert _hcm(plain)["xff_num_trusted_hops"] == 0 and _hcm(plain)["use_remote_address"] is True
    assert "listener_filters" not in plain["static_resources"]["listeners"][0]
    behind = make_config(xff_num_trusted_hops=1, use_proxy_protocol=True)
    data = bootstrap(behind)
    assert _hcm(data)["xff_num_trusted_hops"] == 1
    (proxy,) = data["static_resources"]["listeners"][0]["listener_filters"]
    assert proxy["name"] == "envoy.filters.listener.proxy_protocol"
    envoy_validate(render_bootstrap(behind), tmp_path)
