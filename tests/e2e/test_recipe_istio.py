"""The Istio recipe (docs/recipes/istio.md) for real: the Envoy config an Istio ingress gateway gets
from the recipe's MeshConfig `extensionProviders` entry, its `action: CUSTOM` AuthorizationPolicy,
its Gateway and VirtualServices and `pathNormalization: DECODE_AND_MERGE_SLASHES`, reproduced
setting by setting in plain Envoy config (no Kubernetes here), in front of `authz serve` with
`route_matching: host_path` (the CUSTOM action sends no context extensions) and the local IdP.

What Istio generates for a CUSTOM policy: an RBAC filter holding the policy's rules as *shadow*
rules (never enforced), which records the id of the rule that matched in dynamic metadata, and an
ext_authz filter that runs only when that id is there (`filter_enabled_metadata`). So the rules
say where authz is asked, and every request they do not match skips authz. The recipe's rules
match everything except exactly what its VirtualServices send to authz's pages: the whole
authenticate host, and `/.pomerium…` / `/.well-known/pomerium…` on the hosts authz protects. The
tests try to reach the upstream through that gap (other ports, case, dot segments, encoded slashes,
hosts only a VirtualService names) and find it closed.

Only what bears on authentication is reproduced; Istio adds more filters (metadata exchange,
stats, CORS, fault) and route settings (retries, timeouts) that do not change who gets through.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from .recipes import (
    EXT_AUTHZ,
    ROUTER,
    Stack,
    cluster,
    denied_untouched,
    fails_closed,
    forged_headers_never_reach_the_upstream,
    listener,
    never_reaches_the_upstream,
    platform_marks,
    send,
    sign_in_allow_and_deny,
)

pytestmark = platform_marks("Istio")

# https://istio.io/latest/docs/reference/config/security/authorization-policy/ (CUSTOM, provider)
PROVIDER, POLICY_NAMESPACE, POLICY_NAME = "authz", "istio-system", "authz"
AUTHENTICATE = "authenticate.localhost"
PROTECTED = ("public.localhost", "private.localhost", "net.localhost", "loopback.localhost")
EXTRA = "extra.localhost"  # a VirtualService routes it; authz's config does not name it
POMERIUM_PATHS = ("/.pomerium", "/.pomerium/*", "/.well-known/pomerium", "/.well-known/pomerium/*")
# authz's own routes. `to` is never dialled here: the gateway's VirtualServices route to the app.
APP = "http://app.default.svc.cluster.local:8080"
ROUTES: list[dict[str, Any]] = [
    {"id": "public", "from": "http://public.localhost", "to": APP, "allow_public_unauthenticated_access": True,
     "pass_identity_headers": True},
    {"id": "private", "from": "http://private.localhost", "to": APP, "allowed_domains": ["example.com"],
     "pass_identity_headers": True},
    {"id": "net", "from": "http://net.localhost", "to": APP,
     "policy": {"allow": {"or": [{"source_ip": "10.0.0.0/8"}]}}},
    {"id": "loopback", "from": "http://loopback.localhost", "to": APP,
     "policy": {"allow": {"or": [{"source_ip": "127.0.0.0/8"}]}}},
]  # fmt: skip


def with_ports(hosts: tuple[str, ...], port: int) -> list[str]:
    """Each host as a browser may send it: bare, and with the gateway's public port. Exact entries,
    never `host:*`: a prefix also matches `host:1:2`, which Envoy routes as the host `host:1`."""
    return [name for host in hosts for name in (host, f"{host}:{port}")]


def host_matcher(value: str) -> dict[str, Any]:
    """An exact Operation `hosts` entry as Istio writes it: the whole `:authority`, port included,
    case ignored (the recipe uses no `*` entries).
    https://github.com/istio/istio/blob/master/pilot/pkg/security/authz/matcher/header.go (HostMatcher)
    https://github.com/istio/istio/blob/master/pilot/pkg/security/authz/model/generator.go (hostGenerator)"""
    return {"name": ":authority", "string_match": {"exact": value, "ignore_case": True}}


def path_matcher(value: str) -> dict[str, Any]:
    """An Operation `paths` entry: Envoy's `url_path` (the path without its query), case-sensitive,
    a trailing `*` a prefix match.
    https://github.com/istio/istio/blob/master/pilot/pkg/security/authz/matcher/string.go (StringMatcher)
    https://github.com/istio/istio/blob/master/pilot/pkg/security/authz/matcher/header.go (PathMatcher)"""
    if value.endswith("*"):
        return {"url_path": {"path": {"prefix": value[:-1]}}}
    return {"url_path": {"path": {"exact": value}}}


def operation(not_hosts: list[str], not_paths: tuple[str, ...] = ()) -> dict[str, Any]:
    """One `to.operation`: its fields ANDed, each list ORed, a `not*` list under `not_rule`, hosts
    before paths.
    https://github.com/istio/istio/blob/master/pilot/pkg/security/authz/model/model.go (New, generatePermission)"""
    rules: list[dict[str, Any]] = []
    if not_hosts:
        rules.append({"not_rule": {"or_rules": {"rules": [{"header": host_matcher(h)} for h in not_hosts]}}})
    if not_paths:
        rules.append({"not_rule": {"or_rules": {"rules": [path_matcher(p) for p in not_paths]}}})
    return {"and_rules": {"rules": rules}}


def custom_policy_rules(port: int) -> list[dict[str, Any]]:
    """The recipe's AuthorizationPolicy rules (docs/recipes/istio.md), as permissions. A request
    goes to authz when any rule matches:
      1. any host but the authenticate host, any path but authz's pages;
      2. any host that is neither the authenticate host nor one whose VirtualService sends authz's
         pages to authz (`/.pomerium/x` on such a host is asked about, never let through).
    So authz is skipped for the authenticate host, and for authz's pages on the protected hosts:
    exactly what the VirtualServices below route to authz's web cluster."""
    authenticate = with_ports((AUTHENTICATE,), port)
    return [
        operation(not_hosts=authenticate, not_paths=POMERIUM_PATHS),
        operation(not_hosts=authenticate + with_ports(PROTECTED, port)),
    ]


def rbac_filter(port: int) -> dict[str, Any]:
    """The RBAC filter Istio puts before ext_authz for a CUSTOM policy: the rules as DENY shadow
    rules (evaluated, never enforced), named `istio-ext-authz-<provider>-ns[..]-policy[..]-rule[i]`,
    each with every principal, and the stat prefix `istio_ext_authz_`, which Envoy also puts before
    the dynamic metadata key `shadow_effective_policy_id`.
    https://github.com/istio/istio/blob/master/pilot/pkg/security/authz/builder/builder.go
      (build, buildHTTP, policyName)
    https://github.com/istio/istio/blob/master/pilot/pkg/security/authz/model/model.go
      (RBACExtAuthzShadowRulesStatPrefix)
    https://www.envoyproxy.io/docs/envoy/latest/configuration/http/http_filters/rbac_filter"""
    policies = {
        f"istio-ext-authz-{PROVIDER}-ns[{POLICY_NAMESPACE}]-policy[{POLICY_NAME}]-rule[{i}]": {
            "permissions": [permission],
            "principals": [{"and_ids": {"ids": [{"any": True}]}}],  # no `from`: any source
        }
        for i, permission in enumerate(custom_policy_rules(port))
    }
    return {
        "name": "envoy.filters.http.rbac",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
            "shadow_rules": {"action": "DENY", "policies": policies},
            "shadow_rules_stat_prefix": "istio_ext_authz_",
        },
    }


def ext_authz_filter(grpc_cluster: str) -> dict[str, Any]:
    """The ext_authz filter from the recipe's `envoyExtAuthzGrpc` provider.
    https://github.com/istio/istio/blob/master/pilot/pkg/security/authz/builder/extauthz.go
      (generateGRPCConfig, generateFilterMatcher, timeoutOrDefault)
    https://istio.io/latest/docs/reference/config/istio.mesh.v1alpha1/ (EnvoyExternalAuthorizationGrpcProvider)"""
    return {
        "name": "envoy.filters.http.ext_authz",
        "typed_config": {
            "@type": EXT_AUTHZ,
            "grpc_service": {
                "envoy_grpc": {"cluster_name": grpc_cluster, "authority": "authz.authz.svc.cluster.local"},
                "timeout": "10s",  # `timeout: 10s` (Istio's default is 600s)
            },
            "failure_mode_allow": False,  # `failOpen: false` (the default)
            "status_on_error": {"code": "ServiceUnavailable"},  # `statusOnError: "503"` (default 403)
            "transport_api_version": "V3",
            # Run only when the RBAC filter above recorded that one of this provider's rules matched.
            # The provider in the prefix follows the newest source (policyName in builder.go) and
            # https://github.com/istio/istio/blob/master/pilot/pkg/security/authz/builder/testdata/http/
            #   extended-custom-grpc-provider-clear-route-cache-default-out2.yaml; older releases
            # use the prefix `istio-ext-authz` and rule names without the provider: the same gate.
            "filter_enabled_metadata": {
                "filter": "envoy.filters.http.rbac",
                "path": [{"key": "istio_ext_authz_shadow_effective_policy_id"}],
                "value": {"string_match": {"prefix": f"istio-ext-authz-{PROVIDER}"}},
            },
        },
    }


def to_cluster(name: str, remove: list[str] | None = None) -> dict[str, Any]:
    action: dict[str, Any] = {"route": {"cluster": name}}
    if remove:
        # VirtualService `headers.request.remove`
        # https://istio.io/latest/docs/reference/config/networking/virtual-service/#Headers
        action["request_headers_to_remove"] = remove
    return action


def authz_pages(http_cluster: str) -> list[dict[str, Any]]:
    """The recipe's VirtualService matches for authz's pages on a protected host: `uri.exact` is
    Envoy's `path`, `uri.prefix` its `prefix`, both case-sensitive.
    https://github.com/istio/istio/blob/master/pilot/pkg/networking/core/route/route.go (TranslateRouteMatch)"""
    return [
        {"match": {"path": "/.pomerium"}, **to_cluster(http_cluster)},
        {"match": {"prefix": "/.pomerium/"}, **to_cluster(http_cluster)},
        {"match": {"path": "/.well-known/pomerium"}, **to_cluster(http_cluster)},
        {"match": {"prefix": "/.well-known/pomerium/"}, **to_cluster(http_cluster)},
    ]


def gateway_config(stack: Stack) -> dict[str, Any]:
    """The ingress gateway's listener, routes and clusters as Istio would write them for the recipe."""
    authz_grpc = f"outbound|{stack.grpc_port}||authz.authz.svc.cluster.local"
    authz_http = f"outbound|{stack.http_port}||authz.authz.svc.cluster.local"
    app = "outbound|8080||app.default.svc.cluster.local"
    every_route = list(stack.pieces["remove_headers"]["every_route"])
    identity = list(stack.pieces["remove_headers"]["routes_without_identity_headers"])
    passes_identity = {r["from"].removeprefix("http://") for r in ROUTES if r.get("pass_identity_headers")}

    def app_route(host: str) -> dict[str, Any]:
        # The snippet's remove_headers, as the recipe's VirtualServices list them.
        remove = every_route if host in passes_identity else every_route + identity
        return {"match": {"prefix": "/"}, **to_cluster(app, remove)}

    def vhost(domain: str, routes: list[dict[str, Any]]) -> dict[str, Any]:
        # One virtual host per host, its only domain the lower-cased host, no port:
        # https://github.com/istio/istio/blob/master/pilot/pkg/networking/core/gateway.go (buildGatewayHTTPRouteConfig)
        return {"name": f"{domain}:{stack.port}", "domains": [domain], "routes": routes}

    authenticate = [
        # VirtualService `directResponse`: authz's /healthz stays inside the cluster.
        # https://istio.io/latest/docs/reference/config/networking/virtual-service/#HTTPDirectResponse
        {"match": {"path": "/healthz"}, "direct_response": {"status": 404}},
        {"match": {"prefix": "/"}, **to_cluster(authz_http)},
    ]
    virtual_hosts = [
        vhost(AUTHENTICATE, authenticate),
        *(vhost(host, [*authz_pages(authz_http), app_route(host)]) for host in PROTECTED),
        vhost(EXTRA, [app_route(EXTRA)]),
        vhost("*", [app_route("*")]),  # a VirtualService for `hosts: ["*"]`: what a catch-all gets
    ]
    manager = {
        "stat_prefix": "outbound_0.0.0.0_8080",
        "codec_type": "AUTO",
        # Gateways take the client's address from the connection; xff_num_trusted_hops is
        # `gatewayTopology.numTrustedProxies` (0 unless set):
        # https://github.com/istio/istio/blob/master/pilot/pkg/networking/core/gateway.go
        #   (createGatewayHTTPFilterChainOpts, buildGatewayConnectionManager)
        "use_remote_address": True,
        "xff_num_trusted_hops": 0,
        # `pathNormalization: DECODE_AND_MERGE_SLASHES`; the default, BASE, is normalize_path alone:
        # https://github.com/istio/istio/blob/master/pilot/pkg/networking/core/listener_builder.go
        #   (buildHTTPConnectionManager)
        # https://istio.io/latest/docs/ops/best-practices/security/#customize-your-system-on-path-normalization
        "normalize_path": True,
        "merge_slashes": True,
        "path_with_escaped_slashes_action": "UNESCAPE_AND_FORWARD",
        "stream_idle_timeout": "0s",
        "upgrade_configs": [{"upgrade_type": "websocket"}],
        # The recipe's EnvoyFilter (Istio leaves Envoy's default, ALLOW): `x_pomerium_jwt_assertion`
        # must not reach an upstream that reads `_` as `-`.
        # https://istio.io/latest/docs/reference/config/networking/envoy-filter/
        # https://www.envoyproxy.io/docs/envoy/latest/configuration/best_practices/edge
        "common_http_protocol_options": {"headers_with_underscores_action": "REJECT_REQUEST"},
        "route_config": {
            "name": f"http.{stack.port}",
            "virtual_hosts": virtual_hosts,
            "validate_clusters": False,
            # `IgnorePortInHostMatching: !node.IsProxylessGrpc()` in
            # https://github.com/istio/istio/blob/master/pilot/pkg/networking/core/gateway.go
            #   (buildGatewayHTTPRouteConfig)
            "ignore_port_in_host_matching": True,
        },
        # CUSTOM filters come first among Istio's HTTP filters:
        # https://github.com/istio/istio/blob/master/pilot/pkg/networking/core/listener_builder.go
        #   (buildHTTPConnectionManager)
        "http_filters": [rbac_filter(stack.port), ext_authz_filter(authz_grpc), ROUTER],
    }
    return {
        "static_resources": {
            "listeners": [listener(stack.port, manager)],
            "clusters": [
                # The Check port is named `grpc` in authz's Service, so Istio speaks HTTP/2 to it
                # (https://istio.io/latest/docs/ops/configuration/traffic-management/protocol-selection/).
                cluster(authz_grpc, stack.grpc_port, http2=True),
                cluster(authz_http, stack.http_port),
                cluster(app, stack.upstream.port),
            ],
        }
    }


@pytest.fixture(scope="module")
def istio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    made = Stack(
        tmp_path_factory.mktemp("istio"), gateway_config, routes=ROUTES, ext_authz_transport="grpc",
        route_matching="host_path",
    )  # fmt: skip
    yield made
    made.close()


def test_sign_in_allow_and_deny(istio: Stack) -> None:
    """The sign-in callback (`/.pomerium/callback/` on private.localhost) and the authenticate host
    work only through the exemption: this passing shows the exempted requests reach authz's pages."""
    sign_in_allow_and_deny(istio)


def test_forged_headers_never_reach_the_upstream(istio: Stack) -> None:
    forged_headers_never_reach_the_upstream(istio)
    port = istio.port
    # authz judges the :authority, never a client's X-Forwarded-Host.
    istio.upstream.clear()
    assert istio.get("public.localhost", "/x", **{"x-forwarded-host": "evil"}).status_code == 200
    assert istio.upstream.last().one("x-forwarded-host") != "evil"
    assert send(istio, f"private.localhost:{port}", "/x", **{"X-Forwarded-Host": "public.localhost"}) == 302
    # A header name with `_`, which some servers read as `-`, is refused before anything runs.
    forged = {"x_pomerium_jwt_assertion": "forged"}
    assert never_reaches_the_upstream(istio, f"public.localhost:{port}", "/x", **forged) == 400


def test_the_client_address_is_the_connections(istio: Stack) -> None:
    """`source_ip` judges the address the gateway saw (use_remote_address, no trusted hops), never a
    client's X-Forwarded-For, to which Envoy appends its own entry (for a loopback peer, Envoy's
    local address)."""
    assert istio.get("loopback.localhost", "/x", **{"x-forwarded-for": "10.1.2.3"}).status_code == 200
    forwarded = [entry.strip() for entry in (istio.upstream.last().one("x-forwarded-for") or "").split(",")]
    assert forwarded[0] == "10.1.2.3" and len(forwarded) == 2
    forged = {"X-Forwarded-For": "10.1.2.3"}
    assert never_reaches_the_upstream(istio, f"net.localhost:{istio.port}", "/x", **forged) == 403


def test_a_host_only_a_virtualservice_names_is_denied(istio: Stack) -> None:
    """extra.localhost and any other host (the `*` VirtualService) reach the app only through
    authz, which has no route for them: 404. The policy's rule 2 asks authz about every host it
    does not list; their `/.pomerium…` paths too, since no VirtualService of theirs sends those to
    authz's pages."""
    denied_untouched(istio, EXTRA)
    denied_untouched(istio, "anything.example")
    denied_untouched(istio, EXTRA, "/.pomerium/x")
    denied_untouched(istio, "anything.example", "/.well-known/pomerium/x")


@pytest.mark.parametrize(
    ("authority", "path"),
    [
        ("private.localhost:{port}", "/.pomerium/"),
        ("private.localhost:{port}", "/.pomerium"),
        ("private.localhost:{port}", "/.well-known/pomerium/jwks.json"),
        ("PRIVATE.LOCALHOST:{port}", "/.pomerium/x"),
        ("private.localhost:{port}", "//.pomerium/x"),
        ("{auth}:{port}", "/anything"),
        ("{auth}", "/anything"),
        ("AUTHENTICATE.localhost:{port}", "/anything"),
    ],
)
def test_exempted_requests_go_to_authz_pages_only(istio: Stack, authority: str, path: str) -> None:
    """What the policy exempts from the Check is what the VirtualServices route to authz's pages,
    in every spelling that still matches the exemption (host case, slashes merged first)."""
    never_reaches_the_upstream(istio, authority.format(port=istio.port, auth=AUTHENTICATE), path)


def test_authz_health_stays_inside(istio: Stack) -> None:
    """authz's /healthz answers on its pages port inside the cluster, never through the gateway."""
    assert never_reaches_the_upstream(istio, f"{AUTHENTICATE}:{istio.port}", "/healthz") == 404
    assert never_reaches_the_upstream(istio, f"{AUTHENTICATE}:{istio.port}", "/readyz") == 404  # authz's own refusal


@pytest.mark.parametrize(
    ("authority", "path", "status"),
    [
        # Dot segments and encoded slashes are resolved before the policy looks: /x, a private page.
        ("private.localhost:{port}", "/.pomerium/../x", 302),
        ("private.localhost:{port}", "/.pomerium/%2e%2e/x", 302),
        ("private.localhost:{port}", "/.pomerium%2F..%2Fx", 302),
        ("private.localhost:{port}", "/.well-known/pomerium/../../x", 302),
        # Paths compare case-sensitively, as the VirtualService's matches: an ordinary private path.
        ("private.localhost:{port}", "/.POMERIUM/x", 302),
        ("private.localhost:{port}", "/.pomeriumx", 302),
        # Another port is not an exempted host: authz judges it (private: sign in).
        ("private.localhost:1", "/.pomerium/x", 302),
        # The authenticate host on another port, or with a port Envoy does not strip, is not exempt
        # either, and authz has no route for it.
        ("{auth}:1", "/x", 404),
        ("{auth}:{port}:1", "/x", 404),
        ("{auth}:x", "/x", 404),
        # An absolute request target names the host Envoy routes on, and the policy sees the same.
        ("{auth}:{port}", "http://private.localhost:{port}/x", 302),
    ],
)
def test_spellings_outside_the_exemption_are_judged(istio: Stack, authority: str, path: str, status: int) -> None:
    """Every variant that tries to land on the exemption without matching it is judged by authz:
    sign-in for a private page, 404 for what authz does not route; never the upstream unauthenticated."""
    names = {"port": istio.port, "auth": AUTHENTICATE}
    got = never_reaches_the_upstream(istio, authority.format(**names), path.format(**names))
    assert got == status


def test_slashes_are_merged_before_anything_judges(istio: Stack) -> None:
    """With DECODE_AND_MERGE_SLASHES `//x` is `/x` for the policy, authz and the upstream alike (with
    Istio's default BASE, authz would refuse it with 400); `%2F` is a slash."""
    istio.upstream.clear()
    assert send(istio, f"public.localhost:{istio.port}", "//x") == 200
    assert istio.upstream.last().path == "/x"
    assert send(istio, f"public.localhost:{istio.port}", "/a%2Fb") == 200
    assert istio.upstream.last().path == "/a/b"
    assert never_reaches_the_upstream(istio, f"private.localhost:{istio.port}", "//x") == 302


def test_authz_stopped_fails_closed(istio: Stack) -> None:
    fails_closed(istio, ("public.localhost", "private.localhost", EXTRA))
