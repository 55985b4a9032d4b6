"""The plain-Envoy recipe (docs/recipes/plain-envoy.md) for real: a hand-written Envoy config with
`authz envoy-config --snippet` pasted in as its comment says, in front of `authz serve` and the IdP.
Twice: with each route's `route_id` pasted (`per_route`), and without it, as Istio's CUSTOM action
must, with `route_matching: host_path`. Sign-in, allow, deny, forged headers stripped, a host the
config does not cover still denied, and authz stopped: fail closed."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import jwt
import pytest
import yaml

from authz.dev.stack import Process, free_port, idp_available, start_authz, start_envoy, start_idp
from tests.envoy.test_snippet import hand_written, merge_route

from .conftest import stack_config
from .loopback import browser, idp_login
from .upstream import Recorder

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(idp_available() is not None, reason=f"local IdP unavailable: {idp_available()}"),
]
HOSTS = ("private.localhost", "public.localhost", "extra.localhost")


def paste(config: dict[str, Any], pieces: dict[str, Any], with_ids: bool) -> dict[str, Any]:
    """The snippet's instructions, followed by its reader."""
    resources = config["static_resources"]
    manager = resources["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    manager["http_filters"][:0] = pieces["http_filters"]
    resources["clusters"] += pieces["clusters"]
    ids = {"private.localhost": "private", "public.localhost": "public"}
    for vhost in manager["route_config"]["virtual_hosts"]:
        for route in vhost["routes"]:
            route["request_headers_to_remove"] = list(pieces["remove_headers"]["every_route"])
            if with_ids and vhost["name"] in ids:
                merge_route(route, pieces["per_route"][ids[vhost["name"]]])
        if vhost["name"] in ids:
            vhost["routes"][:0] = pieces["routes"]
    manager["route_config"]["virtual_hosts"][:0] = pieces["virtual_hosts"]
    manager["route_config"]["ignore_port_in_host_matching"] = True
    return config


class Recipe:
    def __init__(self, tmp: Path, with_ids: bool) -> None:
        self.upstream = Recorder()
        self.port, admin, grpc_port, http_port, idp_port = (free_port() for _ in range(5))
        config = stack_config(self.port, grpc_port, http_port, self.upstream.port, tmp / "sessions.db")
        config["routes"] = [r for r in config["routes"] if r["id"] in ("public", "private")]
        config["ext_authz_transport"] = os.environ.get("AUTHZ_E2E_TRANSPORT", "grpc")
        if not with_ids:
            config["route_matching"] = "host_path"
        secret = secrets.token_urlsafe(24)
        auth = config["authenticate_service_url"]
        self.idp = start_idp(idp_port, tmp, redirect_uris=[f"{auth}/oauth2/callback"], client_secret=secret)
        config.update(idp_provider_url=f"http://localhost:{idp_port}", idp_client_id="authz", idp_client_secret=secret)
        path = tmp / "config.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        out = subprocess.run([sys.executable, "-m", "authz", "envoy-config", "--snippet", "-c", str(path)],
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
        pasted = paste(hand_written(self.port, self.upstream.port, HOSTS), yaml.safe_load(out), with_ids)
        pasted["admin"] = {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}}
        (tmp / "envoy.yaml").write_text(yaml.safe_dump(pasted, sort_keys=False))
        self.authz: Process = start_authz(path, http_port, tmp)
        self.envoy: Process = start_envoy(tmp / "envoy.yaml", admin, tmp)

    def url(self, host: str, path: str = "/") -> str:
        return f"http://{host}:{self.port}{path}"

    def get(self, host: str, path: str = "/", **headers: str) -> httpx2.Response:
        return httpx2.get(f"http://127.0.0.1:{self.port}{path}", headers={"host": f"{host}:{self.port}", **headers},
                          timeout=10)  # fmt: skip

    def close(self) -> None:
        self.envoy.stop()
        self.authz.stop()
        self.idp.stop()
        self.upstream.close()


@pytest.fixture(scope="module", params=[True, False], ids=["route-ids", "host-path-matching"])
def recipe(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recipe]:
    made = Recipe(tmp_path_factory.mktemp("recipe"), with_ids=request.param)
    yield made
    made.close()


def test_sign_in_allow_and_deny(recipe: Recipe) -> None:
    with browser() as alice:
        page = alice.get(recipe.url("private.localhost", "/dash"))
        landed = idp_login(alice, page, "alice")
        assert landed.status_code == 200 and str(landed.url) == recipe.url("private.localhost", "/dash")
        assertion = recipe.upstream.last().one("x-pomerium-jwt-assertion")
        assert jwt.decode(assertion or "", options={"verify_signature": False})["email"] == "alice@example.com"
    with browser() as mallory:
        refused = idp_login(mallory, mallory.get(recipe.url("private.localhost", "/")), "mallory")
        assert refused.status_code == 403
    assert recipe.get("public.localhost", "/x").status_code == 200


def test_forged_headers_never_reach_the_upstream(recipe: Recipe) -> None:
    recipe.upstream.clear()
    answer = recipe.get("public.localhost", "/x", **{"x-pomerium-jwt-assertion": "forged", "x-forwarded-host": "evil"})
    assert answer.status_code == 200
    seen = recipe.upstream.last()
    assert seen.one("x-pomerium-jwt-assertion") != "forged"
    assert seen.one("x-forwarded-host") != "evil"


def test_a_host_authz_does_not_name_is_denied(recipe: Recipe) -> None:
    """The hand-written config routes extra.localhost; authz's config has no route for it: 404."""
    recipe.upstream.clear()
    assert recipe.get("extra.localhost", "/").status_code == 404
    assert recipe.upstream.requests == []


def test_authz_stopped_fails_closed(recipe: Recipe) -> None:
    recipe.authz.stop()  # the module's last use of this stack
    assert recipe.get("public.localhost", "/x").status_code == 503
    assert recipe.get("private.localhost", "/x").status_code == 503
