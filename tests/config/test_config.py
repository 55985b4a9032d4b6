from __future__ import annotations

import base64
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from authz.config import Config
from authz.errors import ConfigError
from tests.conftest import base_config


def problems(make_config: Callable[..., Config], **overrides: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        make_config(**overrides)
    return [str(p) for p in info.value.problems]


def test_minimal_config_loads(make_config: Callable[..., Config]) -> None:
    config = make_config()
    assert config.cookie_name == "_pomerium"
    assert config.cookie_expire == 14 * 3600
    assert config.grpc_client_timeout == 10
    assert str(config.grpc_address) == "127.0.0.1:9191"
    assert config.pass_identity_headers is False
    (route,) = config.routes
    assert route.host == "public.localhost"
    assert len(route.id) == 64 and config.routes_by_id[route.id] is route
    assert route.public and route.timeout == 30


def test_route_id_is_stable_and_explicit_ids_win(make_config: Callable[..., Config]) -> None:
    first, second = make_config().routes[0].id, make_config().routes[0].id
    assert first == second
    route = {
        "id": "grafana",
        "from": "http://g.localhost",
        "to": "http://127.0.0.1:3000",
        "allow_any_authenticated_user": True,
    }
    assert make_config(routes=[route]).routes[0].id == "grafana"


def test_duplicate_route_ids(make_config: Callable[..., Config]) -> None:
    route = {
        "id": "x",
        "from": "http://a.localhost",
        "to": "http://127.0.0.1:1",
        "allow_any_authenticated_user": True,
    }
    other = {**route, "from": "http://b.localhost"}
    assert "routes[1]: duplicate route id (same as routes[0])" in problems(make_config, routes=[route, other])


def test_unknown_keys_suggest(make_config: Callable[..., Config]) -> None:
    out = problems(make_config, cookie_nmae="x")
    assert "cookie_nmae: unknown key (did you mean 'cookie_name'?)" in out


def test_pomerium_keys_without_a_counterpart_are_rejected_not_ignored(make_config: Callable[..., Config]) -> None:
    out = problems(make_config, databroker_storage_connection_string="x")
    assert out == [
        "databroker_storage_connection_string: is a Pomerium feature not supported (authz keeps sessions in"
        " session_store: sqlite:///path on one host, redis://host for replicas)"
    ]


def _route(**extra: Any) -> dict[str, Any]:
    return {"from": "http://a.localhost", "to": "http://127.0.0.1:1", "allow_any_authenticated_user": True, **extra}


def test_route_ports_come_from_from_else_the_authenticate_url(make_config: Callable[..., Config]) -> None:
    routes = [
        _route(id="same"),
        _route(id="explicit", **{"from": "http://b.localhost:8444"}),
        _route(id="default", **{"from": "http://c.localhost:80"}),
    ]
    config = make_config(routes=routes)
    assert [r.port for r in config.routes] == [8080, 8444, None]
    assert config.authenticate_port == 8080 and config.warnings == ()
    tls = make_config(authenticate_service_url="https://auth.localhost", routes=[_route(id="plain")])
    assert tls.routes[0].port is None
    assert any("routes[0].from: uses http but authenticate_service_url uses https" in w for w in tls.warnings)


def test_hardening_keys(make_config: Callable[..., Config]) -> None:
    config = make_config(
        allow_unverified_email=True,
        jwt_groups_filter=["admins", "ops"],
        idp_provider_url="http://idp.localhost",
        idp_client_id="c",
        idp_disable_pkce=True,
        routes=[
            _route(
                jwt_groups_filter={"groups": ["ops"]},
                keep_request_headers=["X-Forwarded-Host"],
                allow_path_parameters=True,
                allow_double_encoding=True,
            )
        ],
    )
    (route,) = config.routes
    assert config.allow_unverified_email and config.jwt_groups_filter == ("admins", "ops")
    assert config.idp is not None and config.idp.pkce is False
    assert route.jwt_groups_filter == ("ops",) and route.keep_request_headers == ("x-forwarded-host",)
    assert route.allow_path_parameters and route.allow_double_encoding
    assert len(config.warnings) == 2
    assert make_config().routes[0].jwt_groups_filter is None and make_config().jwt_groups_filter is None
    out = problems(
        make_config,
        routes=[_route(keep_request_headers=["x-custom"], jwt_groups_filter={"infer_from_ppl": True, "x": 1})],
    )
    assert any(p.startswith("routes[0].keep_request_headers: 'x-custom' is not a header authz removes") for p in out)
    assert "routes[0].jwt_groups_filter.infer_from_ppl: is not supported: list the groups to keep" in out
    assert any(p.startswith("routes[0].jwt_groups_filter.x: unknown key") for p in out)


def test_identity_provider(make_config: Callable[..., Config], tmp_path: Path) -> None:
    (tmp_path / "idp-secret").write_text("s3cret\n")
    config = make_config(
        idp_provider_url="https://idp.example.com/",
        idp_client_id="authz",
        idp_client_secret_file="idp-secret",
        idp_scopes="openid email",
        idp_request_params={"prompt": "login"},
    )
    assert config.idp is not None
    assert (config.idp.url, config.idp.client_id, config.idp.client_secret.value) == (
        "https://idp.example.com",
        "authz",
        b"s3cret",
    )
    assert config.idp.scopes == ("openid", "email") and config.idp.request_params == (("prompt", "login"),)
    assert make_config().idp is None
    out = problems(make_config, idp_client_id="x", idp_scopes=["email"])
    assert "idp_provider_url: is required with idp_client_id" in out
    out = problems(
        make_config,
        idp_provider_url="https://i",
        idp_client_id="x",
        idp_scopes=["email"],
        idp_request_params={"state": "x"},
    )
    assert "idp_scopes: must include openid" in out
    assert "idp_request_params.state: is set by authz itself and cannot be overridden" in out


def test_secret_errors_never_show_the_value(make_config: Callable[..., Config]) -> None:
    short = base64.b64encode(b"supersecretvalue").decode()
    out = problems(make_config, shared_secret=short, cookie_secret="not base64 !!")
    assert any(p.startswith("shared_secret: must decode to 32 bytes, got 16") for p in out)
    assert any(p.startswith("cookie_secret: is not valid base64") for p in out)
    assert not any(short in p or "not base64 !!" in p for p in out)


def test_missing_signing_key_names_keygen(make_config: Callable[..., Config]) -> None:
    (out,) = problems(make_config, signing_key=None)
    assert out.startswith("signing_key: no signing key configured")
    assert "authz keygen" in out


def test_bad_signing_key(make_config: Callable[..., Config]) -> None:
    (out,) = problems(make_config, signing_key="bm90IGEga2V5")
    assert out.startswith("signing_key: contains no PEM private key")


def test_http_from_requires_insecure_server(make_config: Callable[..., Config], tmp_path: Path) -> None:
    (tmp_path / "c.pem").write_text("x")
    (tmp_path / "k.pem").write_text("x")
    out = problems(
        make_config,
        insecure_server=False,
        certificate_file="c.pem",
        key_file="k.pem",
        authenticate_service_url="https://auth.example.com",
    )
    assert any(p.startswith("routes[0].from: 'http://public.localhost' uses http") for p in out)


def test_route_errors_have_paths(make_config: Callable[..., Config]) -> None:
    routes = [
        {"from": "http://a.localhost/x", "to": "http://u"},
        {"from": "http://b.localhost", "to": "gopher://u", "prefix": "nope", "path": "/p"},
        {"from": "http://authenticate.localhost", "to": "http://u", "allow_any_authenticated_user": True},
        {
            "from": "http://c.localhost",
            "to": "http://u",
            "allow_public_unauthenticated_access": True,
            "allowed_domains": ["example.com"],
        },
        {
            "from": "http://d.localhost",
            "to": "http://u",
            "set_request_headers": {"Bad Header": "x", "X-Ok": "a\nb"},
        },
    ]
    out = problems(make_config, routes=routes)
    assert "routes[0].from: must not contain a path (use prefix, path or regex): 'http://a.localhost/x'" in out
    assert "routes[1].to: expected an http(s) URL with a host, got 'gopher://u'" in out
    assert "routes[1]: set at most one of prefix, path and regex" in out
    assert "routes[1].prefix: must start with '/', got 'nope'" in out
    assert "routes[2].from: must not use the authenticate_service_url host" in out
    assert any(p.startswith("routes[3]: allow_public_unauthenticated_access cannot be combined") for p in out)
    assert "routes[4].set_request_headers.Bad Header: is not a header name that can be set" in out
    assert "routes[4].set_request_headers.X-Ok: header values must not contain CR, LF or NUL" in out


def test_policy_errors_have_paths(make_config: Callable[..., Config]) -> None:
    route = {
        "from": "http://a.localhost",
        "to": "http://u",
        "policy": [{"allow": {"or": [{"emial": "x"}]}}, {"deny": {"and": [{"date": {}}]}}],
    }
    out = problems(make_config, routes=[route])
    prefix = "routes[0].policy[0].allow.or[0].emial: unknown criterion 'emial' (did you mean 'email'?)"
    assert any(p.startswith(prefix) for p in out)
    assert "routes[0].policy[1].deny.and[0].date: set after, before or both" in out


def test_durations(make_config: Callable[..., Config]) -> None:
    config = make_config(grpc_client_timeout="1m30s", cookie_expire="1h30m", default_upstream_timeout="250ms")
    assert (config.grpc_client_timeout, config.cookie_expire, config.default_upstream_timeout) == (
        90,
        5400,
        0.25,
    )
    assert "grpc_client_timeout: invalid duration '10 s' (use Go syntax such as 90s, 5m or 1h30m)" in problems(
        make_config, grpc_client_timeout="10 s"
    )


def test_claims_headers_forms(make_config: Callable[..., Config]) -> None:
    assert make_config(jwt_claims_headers="email, groups").jwt_claims_headers == (
        ("x-pomerium-claim-email", "email"),
        ("x-pomerium-claim-groups", "groups"),
    )
    assert make_config(jwt_claims_headers={"X-Email": "email"}).jwt_claims_headers == (("x-email", "email"),)


def test_samesite_none_requires_secure(make_config: Callable[..., Config]) -> None:
    assert "cookie_same_site: SameSite=None requires cookie_secure: true" in problems(
        make_config, cookie_same_site="none", cookie_secure=False
    )


def test_to_path_becomes_prefix_rewrite(make_config: Callable[..., Config]) -> None:
    route = {"from": "http://a.localhost", "to": "http://u:81/base/", "allow_any_authenticated_user": True}
    (r,) = make_config(routes=[route]).routes
    assert r.prefix_rewrite == "/base/" and r.to[0].port == 81


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "authz", *args], capture_output=True, text=True, check=False)


def test_check_config_cli(write_config: Callable[..., Path], signing_pem: bytes) -> None:
    good = _cli("check-config", "-c", str(write_config()))
    assert good.returncode == 0 and good.stdout.splitlines()[0] == "ok"
    bad = _cli("check-config", "-c", str(write_config(routes=[{"form": "x"}])))
    assert bad.returncode == 1 and bad.stdout == ""
    assert "routes[0].form: unknown key (did you mean 'from'?)" in bad.stderr.splitlines()
    assert "Traceback" not in bad.stderr


def test_check_config_unreadable_and_bad_yaml(tmp_path: Path) -> None:
    missing = _cli("check-config", "-c", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 1 and "cannot read config file" in missing.stderr
    (tmp_path / "bad.yaml").write_text("a: [\n")
    bad = _cli("check-config", "-c", str(tmp_path / "bad.yaml"))
    assert bad.returncode == 1 and "invalid YAML" in bad.stderr and "Traceback" not in bad.stderr


def test_keygen_output_is_loadable(signing_pem: bytes, tmp_path: Path) -> None:
    out = _cli("keygen")
    assert out.returncode == 0
    lines = dict(line.split(": ", 1) for line in out.stdout.splitlines())
    assert sorted(lines) == ["cookie_secret", "shared_secret", "signing_key"]
    data = base_config(signing_pem, **lines)
    from authz.config import parse_config

    config = parse_config(data, base_dir=tmp_path)
    assert config.signing_keys[0].algorithm == "ES256"


def test_workers(make_config: Callable[..., Config], tmp_path: Path) -> None:
    sqlite = f"sqlite:///{tmp_path / 's.db'}"
    config = make_config(workers=3, session_store=sqlite, grpc_address="127.0.0.1:7000", http_address="127.0.0.1:7100")
    assert [str(a) for a in config.grpc_addresses] == ["127.0.0.1:7000", "127.0.0.1:7001", "127.0.0.1:7002"]
    assert make_config().workers == 1 and len(make_config().grpc_addresses) == 1
    refusals = {
        "workers: a memory: session store is one process's": {"workers": 2},
        "workers: must be 1 to 64, got 0": {"workers": 0, "session_store": sqlite},
        "workers: must be 1 to 64, got 65": {"workers": 65, "session_store": sqlite},
        "include http_address's port 9192": {"workers": 2, "session_store": sqlite},  # the default ports
        "65535 is the last": {"workers": 2, "session_store": sqlite, "grpc_address": "127.0.0.1:65535"},
        "workers: expected an integer": {"workers": "2"},
    }
    for expected, settings in refusals.items():
        assert any(expected in p for p in problems(make_config, **settings)), (expected, settings)
    # Another host for http_address does not collide with the workers' ports.
    assert make_config(workers=2, session_store=sqlite, http_address="127.0.0.2:9192").workers == 2


def test_workers_on_the_command_line(write_config: Callable[..., Path]) -> None:
    path = write_config()  # memory: store
    for command in ("serve", "envoy-config"):
        result = subprocess.run(
            [sys.executable, "-m", "authz", command, "-c", str(path), "--workers", "2"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert result.returncode == 1 and "--workers: a memory: session store is one process's" in result.stderr


def test_ext_authz_transport(make_config: Callable[..., Config]) -> None:
    assert make_config().ext_authz_transport == "grpc"
    assert make_config(ext_authz_transport="http").ext_authz_transport == "http"
    assert any(
        "ext_authz_transport: 'h2' is not one of grpc, http" in p
        for p in problems(make_config, ext_authz_transport="h2")
    )


def test_trusted_hops(make_config: Callable[..., Config]) -> None:
    assert make_config().xff_num_trusted_hops == 0 and not make_config().use_proxy_protocol
    assert make_config(xff_num_trusted_hops=2, use_proxy_protocol=True).xff_num_trusted_hops == 2
    assert problems(make_config, xff_num_trusted_hops=17) == ["xff_num_trusted_hops: must be 0 to 16, got 17"]
    assert problems(make_config, xff_num_trusted_hops=-1) == ["xff_num_trusted_hops: must be 0 to 16, got -1"]
