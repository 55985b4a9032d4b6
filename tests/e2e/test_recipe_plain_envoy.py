"""The plain-Envoy recipe (docs/recipes/plain-envoy.md) for real: a hand-written Envoy config with
`authz envoy-config --snippet` pasted in as its comment says, in front of `authz serve` and the IdP.
Twice: with each route's `route_id` pasted (`per_route`), and without it, as Istio's CUSTOM action
must, with `route_matching: host_path`. Sign-in, allow, deny, forged headers stripped, a host the
config does not cover still denied, and authz stopped: fail closed."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from authz.dev.stack import idp_available
from tests.envoy.test_snippet import hand_written, merge_route

from .recipes import (
    Stack,
    denied_untouched,
    fails_closed,
    forged_headers_never_reach_the_upstream,
    sign_in_allow_and_deny,
)

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


def envoy_config(with_ids: bool) -> Callable[[Stack], dict[str, Any]]:
    def build(stack: Stack) -> dict[str, Any]:
        return paste(hand_written(stack.port, stack.upstream.port, HOSTS), stack.pieces, with_ids)

    return build


@pytest.fixture(scope="module", params=[True, False], ids=["route-ids", "host-path-matching"])
def recipe(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    authz: dict[str, Any] = {"ext_authz_transport": os.environ.get("AUTHZ_E2E_TRANSPORT", "grpc")}
    if not request.param:
        authz["route_matching"] = "host_path"
    made = Stack(tmp_path_factory.mktemp("recipe"), envoy_config(request.param), **authz)
    yield made
    made.close()


def test_sign_in_allow_and_deny(recipe: Stack) -> None:
    sign_in_allow_and_deny(recipe)


def test_forged_headers_never_reach_the_upstream(recipe: Stack) -> None:
    forged_headers_never_reach_the_upstream(recipe)
    recipe.upstream.clear()
    assert recipe.get("public.localhost", "/x", **{"x-forwarded-host": "evil"}).status_code == 200
    assert recipe.upstream.last().one("x-forwarded-host") != "evil"


def test_a_host_authz_does_not_name_is_denied(recipe: Stack) -> None:
    """The hand-written config routes extra.localhost; authz's config has no route for it: 404."""
    denied_untouched(recipe, "extra.localhost")


def test_authz_stopped_fails_closed(recipe: Stack) -> None:
    fails_closed(recipe)
