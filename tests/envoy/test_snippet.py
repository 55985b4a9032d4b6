"""`authz envoy-config --snippet`: the pieces pasted into a hand-written Envoy config validate with
Envoy itself, and carry what the generated bootstrap does."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from authz.config import Config
from authz.envoy.bootstrap import AUTHZ_CLUSTER, EXT_AUTHZ, SIDECAR_CLUSTER
from authz.envoy.snippet import snippet

from .test_bootstrap import envoy_validate

ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
APP = {
    "id": "app", "from": "http://app.localhost", "to": "http://127.0.0.1:9000", "allowed_domains": ["example.com"],
    "remove_request_headers": ["X-Internal"], "jit": {"approvers": [{"allow": {"or": [{"groups": {"has": "a"}}]}}]},
}  # fmt: skip


def hand_written(
    port: int = 10000, upstream: int = 9000, hosts: tuple[str, ...] = ("app.localhost",)
) -> dict[str, Any]:
    """An Envoy config as its owner wrote it (the snippet's fail-safe settings on its connection
    manager): one listener, a virtual host per host, all to one upstream."""

    def vhost(host: str) -> dict[str, Any]:
        return {"name": host, "domains": [host], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "app"}}]}

    return {
        "static_resources": {
            "listeners": [{
                "name": "main",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": HCM, "stat_prefix": "main", "use_remote_address": True, "normalize_path": True,
                        "merge_slashes": True, "path_with_escaped_slashes_action": "UNESCAPE_AND_REDIRECT",
                        "common_http_protocol_options": {"headers_with_underscores_action": "REJECT_REQUEST"},
                        "route_config": {"virtual_hosts": [vhost(h) for h in hosts]},
                        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}}],
                    },
                }]}],
            }],
            "clusters": [{
                "name": "app", "type": "STATIC", "connect_timeout": "1s",
                "load_assignment": {"cluster_name": "app", "endpoints": [{"lb_endpoints": [{"endpoint": {
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": upstream}}}}]}]},
            }],
        }
    }  # fmt: skip


def merge_route(route: dict[str, Any], extra: dict[str, Any]) -> None:
    """A `per_route` entry merged into the owner's route, as the snippet's comment says."""
    route["name"] = extra["name"]
    route["typed_per_filter_config"] = extra["typed_per_filter_config"]
    route["request_headers_to_remove"] += extra.get("request_headers_to_remove", [])
    route["route"].update(extra.get("route", {}))


def paste(config: dict[str, Any], pieces: dict[str, Any], route_ids: dict[str, str]) -> dict[str, Any]:
    """What the snippet's comment tells its reader to do, done to `config` (route_ids: vhost → authz route id)."""
    resources = config["static_resources"]
    manager = resources["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    manager["http_filters"][:0] = pieces["http_filters"]
    resources["clusters"] += pieces["clusters"]
    vhosts = manager["route_config"]["virtual_hosts"]
    for vhost in vhosts:
        for route in vhost["routes"]:
            route["request_headers_to_remove"] = list(pieces["remove_headers"]["every_route"])
            route_id = route_ids.get(vhost["name"])
            if route_id:
                merge_route(route, pieces["per_route"][route_id])
        vhost["routes"][:0] = pieces["routes"]
    vhosts[:0] = pieces["virtual_hosts"]
    return config


def test_the_pasted_snippet_validates(make_config: Callable[..., Config], tmp_path: Path) -> None:
    for transport in ("grpc", "http"):
        config = make_config(routes=[APP], ext_authz_transport=transport)
        pasted = paste(hand_written(), snippet(config), {"app.localhost": "app"})
        envoy_validate(yaml.safe_dump(pasted, sort_keys=False), tmp_path)


def test_the_pieces(make_config: Callable[..., Config]) -> None:
    config = make_config(routes=[APP])
    pieces = snippet(config)
    (authz_filter,) = pieces["http_filters"]
    assert authz_filter["name"] == EXT_AUTHZ
    assert authz_filter["typed_config"]["failure_mode_allow"] is False  # fail closed
    assert authz_filter["typed_config"]["include_peer_certificate"] is True  # client_certificate criteria
    assert [c["name"] for c in pieces["clusters"]] == [AUTHZ_CLUSTER, SIDECAR_CLUSTER]
    assert pieces["virtual_hosts"][0]["domains"] == ["authenticate.localhost"]
    assert {r["route"]["cluster"] for r in pieces["routes"]} == {SIDECAR_CLUSTER}
    app = pieces["per_route"]["app"]
    checksum = config.routes_by_id["app"].checksum
    extensions = app["typed_per_filter_config"][EXT_AUTHZ]["check_settings"]["context_extensions"]
    assert extensions == {"route_id": "app", "route_checksum": checksum}
    assert app["metadata"] == {"filter_metadata": {"authz": {"checksum": checksum}}}
    assert app["name"] == "app" and app["request_headers_to_remove"] == ["x-internal"]
    assert app["route"]["max_stream_duration"] == {"max_stream_duration": "900s"}  # a jit route
    assert "x-forwarded-host" in pieces["remove_headers"]["every_route"]
    assert "x-pomerium-jwt-assertion" in pieces["remove_headers"]["routes_without_identity_headers"]


def test_the_cli_prints_it_with_its_instructions(write_config: Callable[..., Path]) -> None:
    path = write_config(routes=[APP])
    out = subprocess.run([sys.executable, "-m", "authz", "envoy-config", "--snippet", "-c", str(path)],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert out.startswith("# authz for an Envoy you already run")
    assert set(yaml.safe_load(out)) == {"http_filters", "clusters", "virtual_hosts", "routes", "per_route",
                                        "remove_headers"}  # fmt: skip
    argv = ["envoy-config", "--snippet", "--admin-address", "127.0.0.1:9901", "-c", str(path)]
    refused = subprocess.run([sys.executable, "-m", "authz", *argv], capture_output=True, text=True, check=False)
    assert refused.returncode == 1 and "not with --snippet" in refused.stderr


def test_every_piece_pastes_on_its_own(write_config: Callable[..., Path]) -> None:
    argv = [sys.executable, "-m", "authz", "envoy-config", "--snippet", "-c", str(write_config(routes=[APP]))]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    assert "&id" not in out and "*id" not in out  # no YAML anchors: a piece cut out still parses
