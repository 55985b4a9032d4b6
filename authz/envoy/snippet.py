"""`authz envoy-config --snippet`: the pieces to paste into an Envoy config you already run.

The generated bootstrap stays the easiest path; this is for a hand-written Envoy. It prints one
YAML document whose top-level keys say where each piece goes:

  http_filters    into the HttpConnectionManager's `http_filters`, before the router
  clusters        into `static_resources.clusters` (authz's Check and its web pages)
  virtual_hosts   into the `route_config`: the authenticate host, all of it to authz's pages
  routes          first in every virtual host authz protects: its pages there, ext_authz off
  listener        with downstream_mtls: the client-certificate settings of the listener's TLS
                  context and connection manager
  per_route       merged into each route authz protects: its name and `typed_per_filter_config`, so
                  the Check names the route (`route_id`), its own headers to remove, and on a `jit`
                  route `max_stream_duration`; without the id, set `route_matching: host_path`
  remove_headers  on each route authz protects, `request_headers_to_remove`: what a client sends to
                  move the upstream's view of the request, and (on routes that pass none) identity
                  headers in authz's name; authz removes them too: do both

What the HttpConnectionManager must also have is listed in the document's comment: the client's
address from the connection (`use_remote_address`, with `xff_num_trusted_hops` for a balancer in
front), normalised paths, and no headers with underscores.
"""

from __future__ import annotations

from typing import Any

import yaml

from authz.config.load import STRIPPED_REQUEST_HEADERS
from authz.config.model import Config, Route
from authz.envoy.bootstrap import (
    IDENTITY_HEADERS,
    authenticate_virtual_host,
    authz_clusters,
    authz_filters,
    checksum_metadata,
    client_cert_forwarding,
    client_validation,
    route_id_config,
    sidecar_routes,
)

HEADER = """\
# authz for an Envoy you already run (authz envoy-config --snippet). Paste each part where its key says:
#   http_filters    -> your HttpConnectionManager's http_filters, before envoy.filters.http.router
#   clusters        -> static_resources.clusters
#   virtual_hosts   -> your route_config.virtual_hosts (the authenticate host)
#   routes          -> first in every virtual host whose routes authz protects (authz's own pages there)
#   per_route       -> merged into each protected route, under that route's id in authz's config: its
#                      `name` (ext_authz_transport: http sends the route's name), typed_per_filter_config
#                      (the route id for gRPC), its own request_headers_to_remove, and on a jit route
#                      `route.max_stream_duration`; without name and id, set route_matching: host_path,
#                      which also needs route_config.ignore_port_in_host_matching: true
#   remove_headers  -> each protected route's request_headers_to_remove (every_route; and
#                      routes_without_identity_headers on routes that do not pass identity headers)
# Your HttpConnectionManager must also fail safe: use_remote_address: true (and xff_num_trusted_hops for a
# balancer in front), normalize_path: true, merge_slashes: true, path_with_escaped_slashes_action:
# UNESCAPE_AND_REDIRECT, and common_http_protocol_options.headers_with_underscores_action: REJECT_REQUEST;
# and route_config.ignore_port_in_host_matching: true (or every domain also with its port): authz's
# sign-in URLs carry the port of authenticate_service_url and of each route's `from`.
# Only Envoy may reach authz's ports: whoever reaches the Check port can have assertions signed.
"""


MTLS_HEADER = """\
# downstream_mtls: `listener` holds the client-certificate settings: validation_context (and
# require_client_certificate, with reject_connection) go into your listener's DownstreamTlsContext
# (validation_context under common_tls_context); forward_client_cert_details and
# set_current_client_cert_details into its HttpConnectionManager. The Lua filter in http_filters
# hands the client's whole chain to authz: keep it before ext_authz.
"""


def _per_route(route: Route) -> dict[str, Any]:
    """What one protected route needs on top of its own settings."""
    out: dict[str, Any] = {
        "name": route.id,
        "typed_per_filter_config": route_id_config(route.id, route.checksum),
        "metadata": checksum_metadata(route.checksum),
    }
    if route.remove_request_headers:
        out["request_headers_to_remove"] = list(route.remove_request_headers)
    if route.jit is not None:
        # ext_authz judges a stream once: a stream must not outlive a just-in-time grant by long.
        out["route"] = {"max_stream_duration": {"max_stream_duration": f"{route.jit.max_stream_duration:g}s"}}
    return out


class _Dumper(yaml.SafeDumper):
    """Every piece written out in full (no `&id001` anchors): each can be pasted on its own."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def snippet(config: Config) -> dict[str, Any]:
    """The pieces as plain data."""
    identity = sorted({*IDENTITY_HEADERS, *(h for h, _ in config.jwt_claims_headers)})
    return {
        "http_filters": authz_filters(config),
        "clusters": authz_clusters(config),
        "virtual_hosts": [authenticate_virtual_host(config)],
        "routes": sidecar_routes(),
        "per_route": {route.id: _per_route(route) for route in config.routes},
        **(
            {"listener": {**client_validation(config), **client_cert_forwarding(config)}}
            if config.downstream_mtls
            else {}
        ),
        "remove_headers": {
            # On every protected route (a route's own set_request_headers and keep_request_headers excepted).
            "every_route": list(STRIPPED_REQUEST_HEADERS),
            # Only on routes without pass_identity_headers: Envoy's router removes after ext_authz adds,
            # so on the others this would drop authz's own assertion (authz removes a client's copies).
            "routes_without_identity_headers": identity,
        },
    }


def render_snippet(config: Config) -> str:
    """The pieces as one commented YAML document."""
    header = HEADER + (MTLS_HEADER if config.downstream_mtls is not None else "")
    return header + yaml.dump(snippet(config), Dumper=_Dumper, sort_keys=False, explicit_start=True)
