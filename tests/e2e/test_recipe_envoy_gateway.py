"""The Envoy Gateway recipe (docs/recipes/envoy-gateway.md) for real, without Kubernetes: the page's
Gateway API and Envoy Gateway resources are modelled below (HTTP_ROUTES, SECURITY_POLICIES and the
ClientTrafficPolicy's EARLY_REMOVE), translated setting by setting into the plain Envoy config Envoy
Gateway's translator makes of them, each setting citing its source, and that Envoy runs in front of
`authz serve` and the IdP.

How the recipe covers every route, so authz never guesses:
- a SecurityPolicy on the Gateway sends every route to authz with no `route_id`: an HTTPRoute added
  later that authz's config does not name (a new host, or a new path on a protected host) is 404;
- a SecurityPolicy per HTTPRoute authz protects overrides it (route over Gateway) and sends that
  route's id as the `route_id` context extension;
- a SecurityPolicy without extAuth on exactly the two HTTPRoutes to authz's web Service (the
  authenticate host; `/.pomerium` and `/.well-known/pomerium` on every protected host) is the only
  exemption, and it coincides with routing to authz's pages.

Sources, cited by name in the comments (translator files read on envoyproxy/gateway's main branch in
2026; `contextExtensions` came in v1.7, PR #7383; `statusOnError` in v1.8, PR #8432):
- [api] https://gateway.envoyproxy.io/v1.8/api/extension_types/
- [precedence] https://gateway.envoyproxy.io/v1.8/concepts/gateway_api_extensions/security-policy/#precedence
- [exempt] https://github.com/envoyproxy/gateway/issues/4892 (an empty SecurityPolicy on an HTTPRoute
  opts it out of the Gateway's; again in https://github.com/envoyproxy/gateway/issues/6625)
- [extauth.go] https://github.com/envoyproxy/gateway/blob/main/internal/xds/translator/extauth.go
- [httpfilters.go] https://github.com/envoyproxy/gateway/blob/main/internal/xds/translator/httpfilters.go
- [listener.go] https://github.com/envoyproxy/gateway/blob/main/internal/xds/translator/listener.go
- [translator.go] https://github.com/envoyproxy/gateway/blob/main/internal/xds/translator/translator.go
- [route.go] https://github.com/envoyproxy/gateway/blob/main/internal/xds/translator/route.go
- [gw-listener.go] https://github.com/envoyproxy/gateway/blob/main/internal/gatewayapi/listener.go
- [ext_service.go] https://github.com/envoyproxy/gateway/blob/main/internal/gatewayapi/ext_service.go
- [gwapi] https://gateway-api.sigs.k8s.io/reference/spec/#httprouterule (match precedence across HTTPRoutes)
Only what bears on what reaches authz and the upstream is reproduced (no access logs, stats, HTTP/2
options or timeouts).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from .recipes import (
    EXT_AUTHZ,
    EXT_AUTHZ_PER_ROUTE,
    ROUTER,
    Stack,
    cluster,
    denied_untouched,
    fails_closed,
    forged_headers_never_reach_the_upstream,
    listener,
    never_reaches_the_upstream,
    platform_marks,
    sign_in_allow_and_deny,
)

pytestmark = platform_marks("Envoy Gateway")

NAMESPACE = "default"
APP, AUTHZ_WEB = "app", "authz-web"  # the two backend Services: the application, authz's pages
PROTECTED = ("public.localhost", "private.localhost", "ten.localhost", "loop.localhost")
# The ClientTrafficPolicy's headers.earlyRequestHeaders.remove ([api] #headersettings; Gateway API caps
# a header filter at 16 names): what moves the upstream's view of the host, path, method or client.
# authz removes these and the rest of its list in its own answer as well.
EARLY_REMOVE = (
    "x-forwarded-host", "x-forwarded-port", "x-forwarded-prefix", "forwarded",
    "x-original-url", "x-rewrite-url", "x-forwarded-uri", "x-original-uri",
    "x-http-method-override", "x-http-method", "x-method-override",
    "x-real-ip", "true-client-ip", "x-client-ip", "x-forwarded-scheme", "x-forwarded-ssl",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class HTTPRoute:
    """An HTTPRoute as the recipe writes it: one rule per PathPrefix, all to one backend Service."""

    name: str
    hostnames: tuple[str, ...]
    prefixes: tuple[str, ...]
    backend: str
    not_found: tuple[str, ...] = ()  # Exact paths answered 404 by an HTTPRouteFilter directResponse


@dataclass(frozen=True, slots=True)
class SecurityPolicy:
    """On the Gateway (no `targets`) or on HTTPRoutes by name; `ext_auth` False is the policy with no
    extAuth that exempts its routes; `route_id` its one `contextExtensions` entry."""

    name: str
    targets: tuple[str, ...] = ()
    ext_auth: bool = True
    route_id: str | None = None


HTTP_ROUTES = (
    HTTPRoute("authz-authenticate", ("authenticate.localhost",), ("/",), AUTHZ_WEB, not_found=("/healthz",)),
    HTTPRoute("authz-pages", PROTECTED, ("/.pomerium", "/.well-known/pomerium"), AUTHZ_WEB),
    HTTPRoute("public", ("public.localhost",), ("/",), APP),
    HTTPRoute("private", ("private.localhost",), ("/",), APP),
    HTTPRoute("ten", ("ten.localhost",), ("/",), APP),
    HTTPRoute("loop", ("loop.localhost",), ("/",), APP),
    # Added later by someone who did not touch authz's config: a new host, a new path on a protected one.
    HTTPRoute("extra", ("extra.localhost",), ("/",), APP),
    HTTPRoute("private-reports", ("private.localhost",), ("/reports",), APP),
)
SECURITY_POLICIES = (
    SecurityPolicy("authz-default"),
    SecurityPolicy("authz-exempt", ("authz-authenticate", "authz-pages"), ext_auth=False),
    *(SecurityPolicy(f"authz-{name}", (name,), route_id=name) for name in ("public", "private", "ten", "loop")),
)
# authz's routes, one per HTTPRoute it protects and under its name. authz never proxies: `to` only feeds
# its generated config, unused here (the Envoy config below sends these routes to the recorder).
UNUSED = "http://127.0.0.1:9"
AUTHZ_ROUTES = [
    {"id": "public", "from": "http://public.localhost", "to": UNUSED,
     "allow_public_unauthenticated_access": True, "pass_identity_headers": True},
    {"id": "private", "from": "http://private.localhost", "to": UNUSED,
     "allowed_domains": ["example.com"], "pass_identity_headers": True},
    {"id": "ten", "from": "http://ten.localhost", "to": UNUSED,
     "policy": {"allow": {"or": [{"source_ip": "10.0.0.0/8"}]}}},
    {"id": "loop", "from": "http://loop.localhost", "to": UNUSED,
     "policy": {"allow": {"or": [{"source_ip": "127.0.0.1/32"}]}}},
]  # fmt: skip


def policy_of(route: HTTPRoute) -> SecurityPolicy:
    """The one SecurityPolicy that applies to `route`: a policy on the HTTPRoute wins over the Gateway's
    and replaces it whole when it sets no `mergeType` ([precedence], [exempt])."""
    own = [p for p in SECURITY_POLICIES if route.name in p.targets]
    return own[0] if own else next(p for p in SECURITY_POLICIES if not p.targets)


def filter_name(policy: SecurityPolicy) -> str:
    # One ext_authz filter per SecurityPolicy ([extauth.go] extAuthFilterName, [httpfilters.go]
    # perRouteFilterName), named with irConfigName: "securitypolicy/<namespace>/<name>".
    return f"envoy.filters.http.ext_authz/securitypolicy/{NAMESPACE}/{policy.name}"


def check_cluster(policy: SecurityPolicy) -> str:
    # Each policy's extAuth.grpc.backendRefs become a cluster of its own ([ext_service.go]
    # irIndexedExtServiceDestinationName), all to authz's Check port here.
    return f"securitypolicy/{NAMESPACE}/{policy.name}/extauth/0"


def ext_authz_filter(policy: SecurityPolicy) -> dict[str, Any]:
    """What [extauth.go] extAuthConfig and buildHCMExtAuthFilter make of the recipe's extAuth."""
    return {
        "name": filter_name(policy),
        "disabled": True,  # buildHCMExtAuthFilter: off on the connection manager, on route by route
        "typed_config": {
            "@type": EXT_AUTHZ,
            "transport_api_version": "V3",  # extAuthConfig, always
            "failure_mode_allow": False,  # extAuth.failOpen: false ([api] #extauth)
            # extAuth.statusOnError: 503 (v1.8+); without it Envoy answers 403 when authz cannot be reached.
            "status_on_error": {"code": "ServiceUnavailable"},
            "grpc_service": {
                # extAuth.grpc.backendRefs: envoy_grpc to the policy's cluster, with the Service's authority.
                "envoy_grpc": {"cluster_name": check_cluster(policy), "authority": "authz.authz:9191"},
                "timeout": "5s",  # extAuth.timeout: 5s (Envoy Gateway's default is 10s)
            },
            # Left unset by Envoy Gateway, so Envoy's defaults: include_peer_certificate false (no
            # `client_certificate` criteria), allowed_headers unset (no headersToExtAuth: gRPC sends every
            # header), clear_route_cache false (no recomputeRoute), with_request_body unset.
        },
    }


def per_route(policy: SecurityPolicy) -> dict[str, Any]:
    """A route's typed_per_filter_config ([extauth.go] patchRoute): its policy's filter enabled with
    ExtAuthzPerRoute check_settings carrying the policy's contextExtensions (the Gateway's has none).
    A config of its own on the route is what runs a filter the connection manager disables."""
    if not policy.ext_auth:
        return {}  # no extAuth, no filter enabled: the route is never checked
    settings: dict[str, Any] = {}
    if policy.route_id is not None:
        settings["context_extensions"] = {"route_id": policy.route_id}
    return {filter_name(policy): {"@type": EXT_AUTHZ_PER_ROUTE, "check_settings": settings}}


def route_entries(route: HTTPRoute, host: str) -> list[tuple[tuple[int, int], dict[str, Any]]]:
    """`route`'s rules on `host`, each with its precedence: Exact paths first, then longer prefixes."""
    config = per_route(policy_of(route))
    enabled = {"typed_per_filter_config": config} if config else {}
    out: list[tuple[tuple[int, int], dict[str, Any]]] = []
    for path in route.not_found:
        # An HTTPRouteFilter directResponse ([api] #httpdirectresponsefilter): Envoy answers the route itself.
        out.append(((0, -len(path)), {"match": {"path": path}, "direct_response": {"status": 404}, **enabled}))
    for index, prefix in enumerate(route.prefixes):
        # [route.go] buildXdsRouteMatch: PathPrefix "/" is prefix "/", any other path_separated_prefix, which
        # matches "/.pomerium" and "/.pomerium/..." but not "/.pomeriumx". Envoy matches paths
        # case-sensitively by default: "/.POMERIUM/" is no exemption.
        match = {"prefix": "/"} if prefix == "/" else {"path_separated_prefix": prefix}
        entry = {
            "name": f"httproute/{NAMESPACE}/{route.name}/rule/{index}/match/0/{host.replace('.', '_')}",
            "match": match,
            "route": {"cluster": f"httproute/{NAMESPACE}/{route.name}/rule/{index}"},
            **enabled,
        }
        out.append(((1, -len(prefix)), entry))
    return out


def gateway_config(stack: Stack) -> dict[str, Any]:
    """The Envoy config Envoy Gateway generates for the recipe on one plain-HTTP listener."""
    entries: dict[str, list[tuple[tuple[int, int], dict[str, Any]]]] = {}
    for route in HTTP_ROUTES:
        for host in route.hostnames:
            entries.setdefault(host, []).extend(route_entries(route, host))
    # [translator.go]: one virtual host per hostname, its only domain the hostname; the HTTPRoutes on it
    # merged in match precedence ([gwapi]). No catch-all: a host no HTTPRoute names is Envoy's 404.
    virtual_hosts = [
        {"name": f"{NAMESPACE}/eg/http/{host.replace('.', '_')}", "domains": [host],
         "routes": [entry for _, entry in sorted(found, key=lambda pair: pair[0])]}
        for host, found in entries.items()
    ]  # fmt: skip
    policies = [p for p in SECURITY_POLICIES if p.ext_auth]
    manager = {
        "stat_prefix": "http-10080",
        # [listener.go] addHCMToXDSListener: use_remote_address true unless a ClientTrafficPolicy sets
        # clientIPDetection, with no trusted hops: Envoy appends an entry of its own to X-Forwarded-For
        # and never takes a client's entry for the client.
        "use_remote_address": True,
        # [listener.go]: normalize_path always; merge_slashes and UnescapeAndRedirect are the listener
        # defaults ([gw-listener.go]), changed only by ClientTrafficPolicy path.disableMergeSlashes and
        # path.escapedSlashesAction ([api] #pathsettings), which the recipe leaves alone.
        "normalize_path": True,
        "merge_slashes": True,
        "path_with_escaped_slashes_action": "UNESCAPE_AND_REDIRECT",
        # [listener.go] buildHeadersWithUnderscoresAction: REJECT_REQUEST unless headers.withUnderscoresAction.
        "common_http_protocol_options": {"headers_with_underscores_action": "REJECT_REQUEST"},
        "server_header_transformation": "PASS_THROUGH",  # [listener.go]
        # [listener.go] buildEarlyHeaderMutation, from headers.earlyRequestHeaders: removed before routing,
        # so neither ext_authz nor the upstream sees them.
        "early_header_mutation_extensions": [{
            "name": "envoy.http.early_header_mutation.header_mutation",
            "typed_config": {
                "@type": "type.googleapis.com/"
                         "envoy.extensions.http.early_header_mutation.header_mutation.v3.HeaderMutation",
                "mutations": [{"remove": name} for name in EARLY_REMOVE],
            },
        }],
        "route_config": {
            "name": f"{NAMESPACE}/eg/http",
            "ignore_port_in_host_matching": True,  # [translator.go]: on every route config it writes
            "virtual_hosts": virtual_hosts,
        },
        # [extauth.go] patchHCM: one disabled ext_authz filter per policy, ahead of the router.
        "http_filters": [*(ext_authz_filter(p) for p in policies), ROUTER],
    }  # fmt: skip
    clusters = [cluster(check_cluster(p), stack.grpc_port, http2=True) for p in policies]
    for route in HTTP_ROUTES:
        port = stack.http_port if route.backend == AUTHZ_WEB else stack.upstream.port
        clusters += [cluster(f"httproute/{NAMESPACE}/{route.name}/rule/{i}", port) for i in range(len(route.prefixes))]
    return {"static_resources": {"listeners": [listener(stack.port, manager)], "clusters": clusters}}


@pytest.fixture(scope="module")
def recipe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    made = Stack(tmp_path_factory.mktemp("envoy-gateway"), gateway_config, routes=AUTHZ_ROUTES,
                 ext_authz_transport="grpc")  # fmt: skip
    yield made
    made.close()


def untouched(stack: Stack, host: str, path: str, spelled: str | None = None, **headers: str) -> int:
    """The status of a request that must never reach the upstream (it may be sent to sign in, refused,
    redirected or answered by authz's pages); `spelled` is the exact Host to send instead of `host`."""
    return never_reaches_the_upstream(stack, spelled or f"{host}:{stack.port}", path, **headers)


def test_sign_in_allow_and_deny(recipe: Stack) -> None:
    """Through both exemptions: sign-in on the authenticate host, the callback on the route's host."""
    sign_in_allow_and_deny(recipe)


def test_forged_headers_never_reach_the_upstream(recipe: Stack) -> None:
    forged_headers_never_reach_the_upstream(recipe)
    recipe.upstream.clear()
    assert recipe.get("public.localhost", "/x", **{"x-forwarded-host": "evil"}).status_code == 200
    assert recipe.upstream.last().one("x-forwarded-host") != "evil"


def test_a_client_x_forwarded_host_changes_nothing(recipe: Stack) -> None:
    """authz judges the route Envoy matched (its route_id), never a client's X-Forwarded-Host."""
    assert untouched(recipe, "private.localhost", "/", **{"x-forwarded-host": "public.localhost"}) in (302, 401)


def test_a_client_x_forwarded_for_changes_nothing(recipe: Stack) -> None:
    """`source_ip` judges the connection's address (127.0.0.1): a client's X-Forwarded-For neither opens
    the route for 10.0.0.0/8 nor closes the one for 127.0.0.1/32."""
    forged = {"x-forwarded-for": "10.1.2.3"}
    assert untouched(recipe, "ten.localhost", "/", **forged) in (401, 403)
    recipe.upstream.clear()
    assert recipe.get("loop.localhost", "/", **forged).status_code == 200
    # Envoy appended an entry of its own (use_remote_address; for a loopback peer, its own address), so
    # the client's is no longer the last one, the one a trusted hop would be read from.
    entries = (recipe.upstream.last().one("x-forwarded-for") or "").split(",")
    assert len(entries) == 2 and entries[0] == "10.1.2.3" and entries[-1] != "10.1.2.3"


def from_authz(stack: Stack, host: str, path: str) -> bool:
    """Whether authz wrote the answer (its pages all carry a Content-Security-Policy; Envoy's own 404
    carries none)."""
    return "content-security-policy" in stack.get(host, path).headers


def test_routes_authz_does_not_name_are_denied(recipe: Stack) -> None:
    """HTTPRoutes added later with no SecurityPolicy of their own fall under the Gateway's, which sends
    no route_id: authz itself answers 404 for the new host and for the new path on a protected host,
    the upstream never sees either, and authz's pages are not served on a host it does not protect."""
    for host, path in [("extra.localhost", "/"), ("extra.localhost", "/.pomerium/"),
                       ("private.localhost", "/reports"), ("private.localhost", "/reports/q1")]:  # fmt: skip
        denied_untouched(recipe, host, path)
        assert from_authz(recipe, host, path), f"{host}{path} was never checked"


def test_a_host_no_httproute_names_is_envoys_404(recipe: Stack) -> None:
    denied_untouched(recipe, "nowhere.localhost")
    assert not from_authz(recipe, "nowhere.localhost", "/")
    assert untouched(recipe, "", "/", "private.localhost.") == 404  # a trailing dot is another host to Envoy


@pytest.mark.parametrize(
    "path",
    [
        "/.pomerium/../x",
        "/.pomerium/./../x",
        "/.pomerium/%2e%2e/x",
        "/.pomerium/%2E%2E/x",
        "/.pomerium/..;/x",
        "/.pomerium\\..\\x",
        "/.pomerium%2f..%2fx",
        "/.pomerium%2F..%2Fx",
        "/.pomerium%5c..%5cx",
        "/.pomerium/..%2fx",
        "/.well-known/pomerium/../../x",
        "//.pomerium/../x",
        "/x/../.pomerium/../x",
        "/%2epomerium/x",
        "/.POMERIUM/x",
        "/.Pomerium/x",
        "/.pomeriumx",
        "/x",
    ],
)
def test_exemption_abuse_never_reaches_the_upstream(recipe: Stack, path: str) -> None:
    """Paths that look like authz's exempted pages but are not, or normalise away from them: each ends
    at authz's pages (harmless), at authz's Check (sent to sign in), or at Envoy's redirect to the
    unescaped path, never at the upstream."""
    untouched(recipe, "private.localhost", path)


@pytest.mark.parametrize("spelled", ["private.localhost:1", "PRIVATE.LOCALHOST", "Private.Localhost:8443"])
def test_host_spelling_never_skips_the_check(recipe: Stack, spelled: str) -> None:
    """Envoy ignores the port and the case in host matching, so each is the private route, checked with
    its route_id (sent to sign in, not 404); its pages on such a Host are authz's, never the upstream's."""
    assert untouched(recipe, "private.localhost", "/x", spelled) in (302, 401)
    untouched(recipe, "private.localhost", "/.pomerium/x", spelled)


def test_the_exemptions_lead_only_to_authz(recipe: Stack) -> None:
    """What the exempt SecurityPolicy covers is authz's pages, never the upstream: the whole authenticate
    host (its /healthz hidden) and the two prefixes on a protected host."""
    assert untouched(recipe, "authenticate.localhost", "/healthz") == 404
    assert untouched(recipe, "authenticate.localhost", "/readyz") == 404  # authz's own refusal
    untouched(recipe, "authenticate.localhost", "/x")
    untouched(recipe, "private.localhost", "/.pomerium/")
    untouched(recipe, "private.localhost", "/.well-known/pomerium")


def test_authz_stopped_fails_closed(recipe: Stack) -> None:
    fails_closed(recipe, hosts=("public.localhost", "private.localhost", "extra.localhost"))
