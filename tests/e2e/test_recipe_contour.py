"""The Contour recipe (docs/recipes/contour.md) for real: the Envoy config Contour generates for
that page's HTTPProxies, ExtensionService and `globalExtAuth`, written out here setting by setting
(each citing the Contour doc or source it comes from), in front of `authz serve` and the IdP.

Plain HTTP, on purpose. Contour attaches an HTTPProxy's own `authorization` only to a TLS virtual
host (one HttpConnectionManager per SNI name), and `globalExtAuth` to the plain-HTTP listener too.
Both build the ext_authz filter with the same function and the routes with the same code, so this
module reproduces the plain-HTTP listener under `globalExtAuth`; TLS termination changes nothing
in the headers, paths and context extensions tested here, and the shared harness (browser sign-in,
`authenticate_service_url`) speaks plain HTTP.

How the recipe keeps what it does not name denied: `route_id` is only ever set on a route
(`authPolicy.context`), never on a virtual host or in `globalExtAuth`, so a route or HTTPProxy
added without it reaches authz with no `route_id`, and authz answers 404; `globalExtAuth` puts
ext_authz in front of every host, so an HTTPProxy without `authorization` is checked too."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from .recipes import (
    EXT_AUTHZ,
    EXT_AUTHZ_PER_ROUTE,
    HCM,
    Stack,
    cluster,
    denied_untouched,
    fails_closed,
    forged_headers_never_reach_the_upstream,
    platform_marks,
    send,
    sign_in_allow_and_deny,
)

pytestmark = platform_marks("Contour")

# Sources, cited below by their tag (Contour's main branch as stored; see the doc page for versions):
#   (listener)  https://github.com/projectcontour/contour/blob/main/internal/envoy/v3/listener.go
#               HttpConnectionManagerBuilder.Get, DefaultFilters, FilterExternalAuthz, grpcService
#   (xds)       https://github.com/projectcontour/contour/blob/main/internal/xdscache/v3/listener.go
#               the plain-HTTP listener gets httpGlobalExternalAuthConfig
#   (route)     https://github.com/projectcontour/contour/blob/main/internal/envoy/v3/route.go
#               buildRoute, routeAuthzDisabled, routeAuthzContext, VirtualHost, RouteConfiguration
#   (proxy)     https://github.com/projectcontour/contour/blob/main/internal/dag/httpproxy_processor.go
#               computeRoutes (authPolicy, context merge), determineExternalAuthTimeout
#   (extension) https://github.com/projectcontour/contour/blob/main/internal/dag/extension_processor.go
#   (sorter)    https://github.com/projectcontour/contour/blob/main/internal/sorter/sorter.go
#   (guide)     https://projectcontour.io/docs/main/guides/external-authorization/
#   (config)    https://projectcontour.io/docs/main/configuration/
FILTER = "envoy.filters.http.ext_authz"  # ExtAuthzFilterName (listener): the per-route configs' key
EXTENSION = "extension/authz/authz-check"  # ExtensionClusterName (extension): "extension/<namespace>/<name>"
PAGES = "authz/authz/9192/da39a3ee5e"  # the Service `authz`, port 9192: authz's http_address (its pages)
APP = "apps/app/80/da39a3ee5e"  # the application's Service
# authz's routes (`to` is the Service Contour routes to; authz itself never connects to it)
TO = "http://app.apps.svc.cluster.local"
ROUTES: list[dict[str, Any]] = [
    {"id": "public", "from": "http://public.localhost", "to": TO, "allow_public_unauthenticated_access": True,
     "pass_identity_headers": True},
    {"id": "private", "from": "http://private.localhost", "to": TO, "allowed_domains": ["example.com"],
     "pass_identity_headers": True},
    # Anyone but 10/8: a client's X-Forwarded-For, if it counted, would turn 200 into 403.
    {"id": "net", "from": "http://net.localhost", "to": TO,
     "policy": {"allow": {"or": [{"accept": True}]}, "deny": {"or": [{"source_ip": "10.0.0.0/8"}]}}},
]  # fmt: skip


def ext_authz() -> dict[str, Any]:
    """What FilterExternalAuthz builds from `globalExtAuth` (or an HTTPProxy's `authorization`)."""
    return {
        "name": FILTER,
        "typed_config": {
            "@type": EXT_AUTHZ,
            "grpc_service": {
                # grpcService(): the ExtensionService's cluster, authority = its name with "/" as "."
                "envoy_grpc": {"cluster_name": EXTENSION, "authority": EXTENSION.replace("/", ".")},
                # `responseTimeout: 5s` (globalExtAuth / authorization); unset, the ExtensionService's
                # timeoutPolicy.response, else Envoy's 200ms (proxy determineExternalAuthTimeout)
                "timeout": "5s",
            },
            "clear_route_cache": True,  # FilterExternalAuthz sets it always (listener)
            "failure_mode_allow": False,  # `failOpen: false` (listener; guide)
            # Hard-coded Forbidden: Contour has no statusOnError setting (listener)
            "status_on_error": {"code": 403},
            "metadata_context_namespaces": [],  # (listener)
            "include_peer_certificate": True,  # (listener)
            "transport_api_version": "V3",  # (listener; Contour requires the v3 Check protocol)
        },
    }


def default_filters() -> list[dict[str, Any]]:
    """DefaultFilters() (listener), then ext_authz, then the router kept last by AddFilter()."""
    t = "type.googleapis.com/envoy.extensions."
    gzip = {"name": "gzip", "typed_config": {"@type": t + "compression.gzip.compressor.v3.Gzip"}}
    return [
        {"name": "compressor", "typed_config": {"@type": t + "filters.http.compressor.v3.Compressor",
                                                "compressor_library": gzip}},
        {"name": "grpcweb", "typed_config": {"@type": t + "filters.http.grpc_web.v3.GrpcWeb"}},
        {"name": "grpc_stats", "typed_config": {"@type": t + "filters.http.grpc_stats.v3.FilterConfig",
                                                "emit_filter_state": True, "enable_upstream_stats": True}},
        {"name": "cors", "typed_config": {"@type": t + "filters.http.cors.v3.Cors"}},
        # No token bucket: off unless a virtual host or route enables it (listener's comment)
        {"name": "local_ratelimit", "typed_config": {"@type": t + "filters.http.local_ratelimit.v3.LocalRateLimit",
                                                     "stat_prefix": "http"}},
        {"name": "envoy.filters.http.lua", "typed_config": {"@type": t + "filters.http.lua.v3.Lua",
         "default_source_code": {"inline_string": "-- Placeholder for per-Route or per-Cluster overrides."}}},
        {"name": "envoy.filters.http.rbac", "typed_config": {"@type": t + "filters.http.rbac.v3.RBAC"}},
        ext_authz(),  # AddFilter(httpGlobalExternalAuthConfig(...)) (xds)
        {"name": "router", "typed_config": {"@type": t + "filters.http.router.v3.Router"}},
    ]  # fmt: skip


def route(prefix: str, *, to: str, route_id: str | None = None, disabled: bool = False,
          remove: list[str] | None = None) -> dict[str, Any]:  # fmt: skip
    """One HTTPProxy route as buildRoute() (route) writes it: `authPolicy.disabled` becomes
    ExtAuthzPerRoute `disabled`; else the merged context (globalExtAuth's, then the virtual host's,
    then the route's `authPolicy.context`: proxy computeRoutes, Route.AuthorizationContext) becomes
    `check_settings.context_extensions`; with no context at all, no per-route config."""
    made: dict[str, Any] = {
        # An HTTPProxy `prefix` is a string prefix (dag.PrefixMatchString), an Envoy `prefix` (route)
        "match": {"prefix": prefix},
        "route": {"cluster": to},
    }
    if disabled:
        made["typed_per_filter_config"] = {FILTER: {"@type": EXT_AUTHZ_PER_ROUTE, "disabled": True}}
    elif route_id is not None:
        settings = {"check_settings": {"context_extensions": {"route_id": route_id}}}
        made["typed_per_filter_config"] = {FILTER: {"@type": EXT_AUTHZ_PER_ROUTE, **settings}}
    if remove:
        made["request_headers_to_remove"] = remove  # requestHeadersPolicy.remove (route)
    return made


def pages() -> list[dict[str, Any]]:
    """The child HTTPProxies `authz-pages` and `authz-well-known` (authz's namespace), included at
    `/.pomerium` and `/.well-known/pomerium`: each one's single route (no conditions, `authPolicy:
    {disabled: true}`) takes the include's prefix as it is (mergePathMatchConditions in
    https://github.com/projectcontour/contour/blob/main/internal/dag/conditions.go), so the
    exemptions are exactly the routes to authz's pages. A string prefix: `/.pomeriumx` goes to
    authz's pages too (harmless, they answer 404)."""
    return [route(p, to=PAGES, disabled=True) for p in ("/.pomerium", "/.well-known/pomerium")]


def virtual_host(fqdn: str, routes: list[dict[str, Any]]) -> dict[str, Any]:
    # Contour sorts a host's routes: exact paths, then prefixes in descending string order (sorter).
    ordered = sorted(routes, key=lambda r: ("path" in r["match"], r["match"].get("prefix", "")), reverse=True)
    return {"name": fqdn, "domains": [fqdn], "routes": ordered}  # VirtualHost(): only the fqdn (route)


def contour(stack: Stack) -> dict[str, Any]:
    """The `ingress_http` listener Contour serves for the page's resources, with globalExtAuth."""
    strip = list(stack.pieces["remove_headers"]["every_route"])  # the recipe's requestHeadersPolicy.remove
    vhosts = [
        # The authenticate host's HTTPProxy: authz's pages only, ext_authz off; /healthz never served.
        # A directResponsePolicy route gets no per-route config (route buildRoute): ext_authz checks
        # it, with no route_id: 404 either way.
        virtual_host("authenticate.localhost", [
            {"match": {"path": "/healthz"}, "direct_response": {"status": 404}},
            route("/", to=PAGES, disabled=True),
        ]),
        virtual_host("private.localhost", [
            *pages(),
            route("/", to=APP, route_id="private", remove=strip),
            # A route added later without `authPolicy.context`: globalExtAuth's context has no route_id
            route("/unnamed", to=APP, remove=strip),
        ]),
        virtual_host("public.localhost", [*pages(), route("/", to=APP, route_id="public", remove=strip)]),
        virtual_host("net.localhost", [*pages(), route("/", to=APP, route_id="net", remove=strip)]),
        # An HTTPProxy with no `authorization` at all, nor the recipe's includes: still checked
        # (globalExtAuth), with no route_id.
        virtual_host("extra.localhost", [route("/", to=APP)]),
    ]  # fmt: skip
    manager = {
        "@type": HCM,
        "stat_prefix": "ingress_http",
        "codec_type": "AUTO",
        "use_remote_address": True,  # (listener)
        "xff_num_trusted_hops": 0,  # `network.num-trusted-hops`, default 0 (config)
        "normalize_path": True,  # (listener)
        "merge_slashes": True,  # MergeSlashes (xds), on unless `disableMergeSlashes` (default false, config)
        # path_with_escaped_slashes_action: not set by Contour (Envoy's default, KEEP_UNCHANGED)
        # headers_with_underscores_action: not set by Contour (Envoy's default, ALLOW)
        "preserve_external_request_id": True,  # (listener, issue #1487)
        "common_http_protocol_options": {"idle_timeout": "60s"},  # `connection-idle-timeout` default (config)
        "http_protocol_options": {"accept_http_10": True},  # (listener, issue #537)
        "http_filters": default_filters(),
        "route_config": {
            "name": "ingress_http",
            "virtual_hosts": vhosts,
            # RouteConfiguration() (route): the port is ignored in host matching and kept upstream
            # (projectcontour/contour#5437 replaced strip_any_host_port with this)
            "ignore_port_in_host_matching": True,
            "request_headers_to_add": [{"header": {"key": "x-request-start", "value": "t=%START_TIME(%s.%3f)%"},
                                        "append_action": "APPEND_IF_EXISTS_OR_ADD"}],
        },
    }  # fmt: skip
    return {
        "static_resources": {
            "listeners": [{
                "name": "ingress_http",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": stack.port}},
                "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                                "typed_config": manager}]}],
            }],
            "clusters": [
                cluster(EXTENSION, stack.grpc_port, http2=True),  # ExtensionService `protocol: h2c` (extension)
                cluster(PAGES, stack.http_port),
                cluster(APP, stack.upstream.port),
            ],
        }
    }  # fmt: skip


@pytest.fixture(scope="module")
def recipe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    made = Stack(tmp_path_factory.mktemp("contour"), contour, routes=ROUTES, ext_authz_transport="grpc")
    yield made
    made.close()


def test_sign_in_allow_and_deny(recipe: Stack) -> None:
    sign_in_allow_and_deny(recipe)


def test_forged_headers_never_reach_the_upstream(recipe: Stack) -> None:
    forged_headers_never_reach_the_upstream(recipe)
    recipe.upstream.clear()
    spoofed = {"x-forwarded-host": "private.localhost", "x-forwarded-for": "10.1.2.3"}
    assert recipe.get("public.localhost", "/x", **spoofed).status_code == 200
    seen = recipe.upstream.last()
    assert seen.one("x-forwarded-host") is None  # requestHeadersPolicy.remove, and authz removes it too
    # Envoy appends the connection's address (use_remote_address): the client's entry is never last.
    forwarded = (seen.one("x-forwarded-for") or "").split(",")
    assert forwarded[0] == "10.1.2.3" and len(forwarded) == 2 and forwarded[1] != "10.1.2.3"
    # Contour keeps the port in the Host it forwards (ignore_port_in_host_matching, no stripping).
    assert seen.one("host") == f"public.localhost:{recipe.port}"


def test_a_client_x_forwarded_for_changes_nothing(recipe: Stack) -> None:
    """`source_ip` judges the connection's address (num-trusted-hops 0): 10/8 is refused, the test
    client is not in it, and claiming 10.1.2.3 in X-Forwarded-For does not put it there."""
    recipe.upstream.clear()
    assert recipe.get("net.localhost", "/").status_code == 200
    assert recipe.get("net.localhost", "/", **{"x-forwarded-for": "10.1.2.3"}).status_code == 200
    assert len(recipe.upstream.requests) == 2


def test_what_the_recipe_does_not_name_is_denied(recipe: Stack) -> None:
    """A route added without `authPolicy.context`, an HTTPProxy without `authorization`, a host no
    HTTPProxy names: authz is asked with no route_id (or Envoy has no route) and refuses, 404."""
    denied_untouched(recipe, "private.localhost", "/unnamed")
    denied_untouched(recipe, "private.localhost", "/unnamed/deeper")
    denied_untouched(recipe, "extra.localhost")
    denied_untouched(recipe, "extra.localhost", "/.pomerium/")  # the exemption lives in the includes only
    denied_untouched(recipe, "nothing.localhost")


HOSTILE = (
    "/.pomerium/../x", "/.pomerium/%2e%2e/x", "/.pomerium/..%2fx", "/.pomerium%2f..%2fx", "/.POMERIUM/x",
    "/%2epomerium/x", "/.pomeriumx", "/.well-known/pomerium/../x", "/.well-known/pomerium%2F..%2Fx",
    "//.pomerium/../x", "/x/../.pomerium/", "/.pomerium\\..\\x", "/.pomerium/./../x", "/x?/.pomerium/",
)  # fmt: skip


@pytest.mark.parametrize("target", HOSTILE)
def test_exemption_abuse_never_reaches_the_upstream(recipe: Stack, target: str) -> None:
    """Every spelling of the exempted prefixes either reaches authz's pages (exempt, harmless) or
    the application route with ext_authz on (refused without a session): never the upstream."""
    recipe.upstream.clear()
    for host in ("private.localhost", f"private.localhost:{recipe.port}", "PRIVATE.LOCALHOST", "private.localhost:1"):
        status = send(recipe, host, target, ("x-forwarded-host", "public.localhost"))
        assert status != 200 or recipe.upstream.requests == [], (host, target, status)
    assert recipe.upstream.requests == [], target


def test_the_exemptions_are_authz_pages(recipe: Stack) -> None:
    """The exempted prefixes do reach authz's pages (a positive control for the test above), on
    every host the recipe names, and nothing but them on the authenticate host."""
    recipe.upstream.clear()
    for host in ("private.localhost", "public.localhost"):
        assert recipe.get(host, "/.well-known/pomerium/jwks.json").json()["keys"]
    assert recipe.get("authenticate.localhost", "/.well-known/pomerium/jwks.json").json()["keys"]
    assert recipe.get("authenticate.localhost", "/healthz").status_code == 404
    assert recipe.get("authenticate.localhost", "/readyz").status_code == 404  # authz's own refusal
    assert recipe.get("authenticate.localhost", "/x").status_code == 404
    assert recipe.upstream.requests == []


def test_underscore_spellings_never_reach_the_upstream(recipe: Stack) -> None:
    """Upstreams that read headers CGI-style (`HTTP_X_POMERIUM_CLAIM_EMAIL`) take `x_pomerium_claim_email`
    for `x-pomerium-claim-email`: removed or refused, it must not arrive."""
    recipe.upstream.clear()
    forged = (("X_Pomerium_Claim_Email", "admin@example.com"), ("X_Forwarded_Host", "evil.example"),
              ("X_Forwarded_For", "10.0.0.1"), ("X_Envoy_External_Address", "10.0.0.1"))  # fmt: skip
    send(recipe, "public.localhost", "/x", *forged)
    assert not [name for seen in recipe.upstream.requests for name in seen.headers if "_" in name]


def test_authz_stopped_fails_closed(recipe: Stack) -> None:
    """Refused with Contour's fixed status_on_error, 403."""
    fails_closed(recipe, ("public.localhost", "private.localhost", "net.localhost"), status=403)
