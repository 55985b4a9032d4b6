"""The Envoy bootstrap for a config: listener, virtual hosts, routes, ext_authz, clusters.

Routes are defined once, in authz's config; this module is the only place that knows Envoy's
config schema. The output is one YAML document, validated in tests with `envoy --mode validate`;
or, for `--out DIR`, a bootstrap that reads the routes (RDS) and their clusters (CDS) from two
files in DIR, which authz/envoy/files.py writes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from authz.config import Address, Config, Route, Upstream
from authz.config.load import STRIPPED_REQUEST_HEADERS
from authz.config.model import DownstreamMtls, InternalTls, Pem
from authz.config.pem import is_ip
from authz.envoy import http_check
from authz.envoy.adapter import CLIENT_CERT_NAMESPACE

AUTHZ_CLUSTER = "authz-grpc"
ROUTE_CONFIG_NAME = "authz-routes"
SIDECAR_CLUSTER = "authz-http"
EXT_AUTHZ = "envoy.filters.http.ext_authz"
_T = "type.googleapis.com/"
# Sidecar paths on every host: exact and prefix forms, so `/.pomerium` and `/.pomerium/x` both go
# to the sidecar while `/.pomeriumx` stays an ordinary route path.
SIDECAR_MATCHES: tuple[dict[str, str], ...] = (
    {"path": "/.pomerium"},
    {"prefix": "/.pomerium/"},
    {"path": "/.well-known/pomerium"},
    {"prefix": "/.well-known/pomerium/"},
)
IDENTITY_HEADERS = ("x-pomerium-jwt-assertion", "x-pomerium-jwt-assertion-for")
_DISABLED = {EXT_AUTHZ: {"@type": _T + "envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute", "disabled": True}}
_MAX = 1_000_000  # circuit-breaker ceilings: load tests must measure authz, not Envoy's defaults


def _seconds(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".") + "s"


def _socket(address: Address | tuple[str, int]) -> dict[str, Any]:
    host, port = (address.host, address.port) if isinstance(address, Address) else address
    return {"socket_address": {"address": host, "port_value": port}}


def _header_options(pairs: Iterable[tuple[str, str]]) -> list[dict[str, Any]]:
    return [{"header": {"key": k, "value": v}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"} for k, v in pairs]


def _cluster(
    name: str, endpoints: list[tuple[str, int]], *, http2: bool = False, tls: dict[str, Any] | None = None
) -> dict[str, Any]:
    dns = any(not is_ip(host) for host, _ in endpoints)
    cluster: dict[str, Any] = {
        "name": name,
        "type": "STRICT_DNS" if dns else "STATIC",
        "connect_timeout": "2s",
        "lb_policy": "ROUND_ROBIN",
        "circuit_breakers": {
            "thresholds": [
                {
                    "max_connections": _MAX,
                    "max_pending_requests": _MAX,
                    "max_requests": _MAX,
                    "max_retries": 3,
                }
            ]
        },
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _socket(ep)}} for ep in endpoints]}],
        },
    }
    if dns:
        cluster["dns_lookup_family"] = "V4_PREFERRED"
    if http2:
        cluster["typed_extension_protocol_options"] = {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": _T + "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        }
    if tls is not None:
        cluster["transport_socket"] = tls
    return cluster


def cluster_name(route: Route) -> str:
    """The route's cluster: named by its id alone (ids are unique), so inserting or removing
    another route renames no cluster (with `--out`, a renamed cluster is a new connection pool)."""
    if len(route.id) <= 40:
        return f"route-{route.id}"
    return f"route-{route.id[:32]}-{hashlib.sha256(route.id.encode()).hexdigest()[:8]}"


SYSTEM_CAS = "/etc/ssl/certs/ca-certificates.crt"  # Debian's bundle, where the official Envoy image has it


def _source(pem: Pem) -> dict[str, str]:
    return {pem.kind: pem.value}


def upstream_tls(route: Route) -> dict[str, Any] | None:
    """The transport socket toward a route's https upstreams: SNI, the certificate verified (the
    system CAs or `tls_custom_ca`; the name is `tls_server_name` or the `to` host) unless
    `tls_skip_verify`, and the edge's own certificate when `tls_client_cert` is set."""
    first: Upstream = route.to[0]
    if first.scheme != "https":
        return None
    tls = route.tls
    name = tls.server_name or first.host
    # Envoy's clients stop at TLS 1.2 unless told otherwise.
    common: dict[str, Any] = {
        "tls_params": {"tls_minimum_protocol_version": "TLSv1_2", "tls_maximum_protocol_version": "TLSv1_3"}
    }
    if not tls.skip_verify:
        san_type = "IP_ADDRESS" if is_ip(name) else "DNS"
        common["validation_context"] = {
            "trusted_ca": _source(tls.custom_ca) if tls.custom_ca else {"filename": SYSTEM_CAS},
            "match_typed_subject_alt_names": [{"san_type": san_type, "matcher": {"exact": name}}],
        }
    if tls.client_cert is not None and tls.client_key is not None:
        common["tls_certificates"] = [
            {"certificate_chain": _source(tls.client_cert), "private_key": _source(tls.client_key)}
        ]
    context: dict[str, Any] = {
        "@type": _T + "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        "common_tls_context": common,
    }
    if not is_ip(name):
        context["sni"] = name  # an IP is no server name (RFC 6066): Envoy would send it all the same
    return {"name": "envoy.transport_sockets.tls", "typed_config": context}


def _upstream_cluster(route: Route) -> dict[str, Any]:
    return _cluster(cluster_name(route), [(u.host, u.port) for u in route.to], tls=upstream_tls(route))


def sidecar_routes() -> list[dict[str, Any]]:
    """authz's own pages on a route host (`/.pomerium…`, `/.well-known/pomerium…`): to the sidecar,
    ext_authz off."""
    return [
        {
            "match": dict(m),
            "route": {"cluster": SIDECAR_CLUSTER, "timeout": "30s"},
            "typed_per_filter_config": _DISABLED,
        }
        for m in SIDECAR_MATCHES
    ]


def _route_entry(config: Config, route: Route) -> dict[str, Any]:
    match: dict[str, Any]
    if route.regex is not None:
        match = {"safe_regex": {"regex": route.regex}}
    elif route.path is not None:
        match = {"path": route.path}
    else:
        match = {"prefix": route.prefix or "/"}
    action: dict[str, Any] = {"cluster": cluster_name(route), "timeout": _seconds(route.timeout)}
    if route.prefix_rewrite is not None:
        action["prefix_rewrite"] = route.prefix_rewrite
    if route.host_rewrite:
        action["host_rewrite_literal"] = route.host_rewrite
    elif not route.preserve_host_header:
        action["auto_host_rewrite"] = True
    # Headers this route lets through as they are: kept by name, or set by authz from config (the
    # router removes after ext_authz has added, so removing those would drop authz's own value).
    passed = {*route.keep_request_headers, *(name.lower() for name, _ in route.set_request_headers)}
    request_headers: list[tuple[str, str]] = []
    if (route.host_rewrite or not route.preserve_host_header) and "x-forwarded-host" not in passed:
        # The upstream loses the public host to the rewrite, and the client's X-Forwarded-Host is
        # removed below: say it from config (port included, as login URLs), never from the request.
        # A wildcard host has no one name, so Envoy appends the Host it rewrote, as the client sent it.
        if route.host.startswith("*."):
            action["append_x_forwarded_host"] = True
        else:
            request_headers.append(("x-forwarded-host", f"{route.host}:{route.port}" if route.port else route.host))
    if route.allow_websockets:
        action["upgrade_configs"] = [{"upgrade_type": "websocket"}]
    if route.jit is not None:
        # ext_authz judges a stream once, at its start: on a just-in-time route an open WebSocket,
        # SSE or gRPC stream would outlive the grant, so Envoy ends every stream after this long.
        action["max_stream_duration"] = {"max_stream_duration": _seconds(route.jit.max_stream_duration)}
    # Headers that make an upstream read another path, method, host or client: removed on every
    # route, public ones included (authz removes them as well).
    remove = [h for h in STRIPPED_REQUEST_HEADERS if h not in passed]
    remove += route.remove_request_headers
    if not route.pass_identity_headers:
        remove += [*IDENTITY_HEADERS, *(h for h, _ in config.jwt_claims_headers)]
    entry: dict[str, Any] = {
        "name": route.id,
        "match": match,
        "route": action,
        "typed_per_filter_config": route_id_config(route.id, route.checksum),
        "metadata": checksum_metadata(route.checksum),
    }
    entry["request_headers_to_remove"] = sorted(set(remove))
    if request_headers:
        entry["request_headers_to_add"] = _header_options(request_headers)
    if route.set_response_headers:
        entry["response_headers_to_add"] = _header_options(route.set_response_headers)
    return entry


# What the authenticate host serves: its pages, the IdP's callback and the published documents.
AUTHENTICATE_MATCHES: tuple[dict[str, str], ...] = (
    {"prefix": "/.pomerium/"},
    {"path": "/oauth2/callback"},
    {"path": "/.well-known/pomerium"},
    {"prefix": "/.well-known/pomerium/"},
)


def authenticate_virtual_host(config: Config) -> dict[str, Any]:
    """The authenticate host: its allow-list to the sidecar, ext_authz off; anything else 404 from
    Envoy (/healthz and /readyz answer on http_address only, never through a public host)."""
    to_sidecar = {"route": {"cluster": SIDECAR_CLUSTER, "timeout": "30s"}, "typed_per_filter_config": _DISABLED}
    return {
        "name": f"authenticate-{config.authenticate_host}",
        "domains": [config.authenticate_host],
        "routes": [
            *({"match": dict(m), **to_sidecar} for m in AUTHENTICATE_MATCHES),
            {"match": {"prefix": "/"}, "direct_response": {"status": 404}, "typed_per_filter_config": _DISABLED},
        ],
    }


def _virtual_hosts(config: Config) -> list[dict[str, Any]]:
    hosts: dict[str, list[Route]] = {}
    for route in config.routes:
        hosts.setdefault(route.host, []).append(route)
    vhosts = [authenticate_virtual_host(config)]
    for host, routes in hosts.items():
        vhosts.append(
            {
                "name": f"route-host-{host}",
                "domains": [host],
                "routes": [*sidecar_routes(), *(_route_entry(config, r) for r in routes)],
            }
        )
    vhosts.append(
        {
            "name": "unknown-host",
            "domains": ["*"],
            "routes": [
                {
                    "match": {"prefix": "/"},
                    "direct_response": {"status": 404, "body": {"inline_string": "no route for this host\n"}},
                    "typed_per_filter_config": _DISABLED,
                }
            ],
        }
    )
    return vhosts


def route_configuration(config: Config) -> dict[str, Any]:
    """Every route Envoy serves, as one RouteConfiguration (inline in the bootstrap, or through RDS)."""
    return {
        "name": ROUTE_CONFIG_NAME,
        "ignore_port_in_host_matching": True,
        "virtual_hosts": _virtual_hosts(config),
    }


def upstream_clusters(config: Config) -> list[dict[str, Any]]:
    """One cluster per route, for its `to` upstreams (static in the bootstrap, or through CDS)."""
    return [_upstream_cluster(route) for route in config.routes]


def authz_filters(config: Config) -> list[dict[str, Any]]:
    """The HTTP filters that put authz in front of every route (before the router): ext_authz,
    failing closed, and with the HTTP service the filter that drops forged internal headers."""
    return [
        *_drop_internal_headers(config),
        *client_certificate_filters(config),
        {
            "name": EXT_AUTHZ,
            "typed_config": {
                "@type": _T + "envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
                **_ext_authz_service(config),
                "failure_mode_allow": False,
                "status_on_error": {"code": "ServiceUnavailable"},
            },
        },
    ]


def authz_clusters(config: Config) -> list[dict[str, Any]]:
    """authz's two clusters: Check (every worker of every replica an endpoint) and the sidecar
    (every replica's); over mutual TLS when the config has `internal_tls_*` (health checks go
    through the same TLS)."""
    sidecar = _cluster(SIDECAR_CLUSTER, [(a.host, a.port) for a in config.sidecar_endpoints])
    http2 = config.ext_authz_transport != "http"
    grpc = _cluster(AUTHZ_CLUSTER, [(a.host, a.port) for a in config.check_endpoints], http2=http2)
    if len(config.check_endpoints) > 1:
        grpc.update(_endpoint_health(config.ext_authz_transport))
    if len(config.sidecar_endpoints) > 1:
        sidecar.update(_endpoint_health("sidecar"))
    if config.internal_tls is not None:
        grpc["transport_socket"] = internal_tls_socket(config.internal_tls, "h2" if http2 else "http/1.1")
        sidecar["transport_socket"] = internal_tls_socket(config.internal_tls, "http/1.1")
    return [grpc, sidecar]


def internal_tls_socket(tls: InternalTls, alpn: str) -> dict[str, Any]:
    """Envoy's side of the mutual TLS to authz: its client certificate, and authz's certificate
    verified against the internal CA and required to carry `server_name` (sent as SNI when it is
    a DNS name; an IP address is matched against the certificate's IP SANs)."""
    san_type = "IP_ADDRESS" if is_ip(tls.server_name) else "DNS"
    context: dict[str, Any] = {
        "@type": _T + "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        "common_tls_context": {
            "alpn_protocols": [alpn],
            # Envoy's clients stop at TLS 1.2 unless told otherwise; both ends here speak 1.3.
            "tls_params": {"tls_minimum_protocol_version": "TLSv1_2", "tls_maximum_protocol_version": "TLSv1_3"},
            "tls_certificates": [
                {
                    "certificate_chain": {"filename": tls.envoy_certificate_file},
                    "private_key": {"filename": tls.envoy_key_file},
                }
            ],
            "validation_context": {
                "trusted_ca": {"filename": tls.ca_file},
                "match_typed_subject_alt_names": [{"san_type": san_type, "matcher": {"exact": tls.server_name}}],
            },
        },
    }
    if san_type == "DNS":
        context["sni"] = tls.server_name
    return {"name": "envoy.transport_sockets.tls", "typed_config": context}


def route_id_config(route_id: str, checksum: str = "") -> dict[str, Any]:
    """A route's `typed_per_filter_config`: ext_authz sends authz the route's id and checksum."""
    extensions = {"route_id": route_id, **({"route_checksum": checksum} if checksum else {})}
    return {
        EXT_AUTHZ: {
            "@type": _T + "envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute",
            "check_settings": {"context_extensions": extensions},
        }
    }


def checksum_metadata(checksum: str) -> dict[str, Any]:
    """The route's checksum where Envoy's HTTP ext_authz reads it (`%METADATA(ROUTE:authz:checksum)%`)."""
    return {"filter_metadata": {"authz": {"checksum": checksum}}}


# Envoy's access log, one JSON line per request on its stdout. `request-id` is the id on authz's
# decision line and on its 403 page; the path goes without its query string (codes, tokens), and no
# header that carries a credential is named.
ACCESS_LOG_FIELDS = {
    "time": "%START_TIME%",
    "logger": "envoy.access",
    "request-id": "%REQ(X-REQUEST-ID)%",
    "authority": "%REQ(:AUTHORITY)%",
    "method": "%REQ(:METHOD)%",
    "path": "%REQ_WITHOUT_QUERY(:PATH)%",
    "ip": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
    "route": "%ROUTE_NAME%",
    "status": "%RESPONSE_CODE%",
    "details": "%RESPONSE_CODE_DETAILS%",
    "flags": "%RESPONSE_FLAGS%",
    "upstream": "%UPSTREAM_CLUSTER%",
    "duration-ms": "%DURATION%",
}


def access_log() -> dict[str, Any]:
    """The HTTP connection manager's access log entry (stdout, JSON)."""
    return {
        "name": "envoy.access_loggers.stdout",
        "typed_config": {
            "@type": _T + "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
            "log_format": {
                "json_format": ACCESS_LOG_FIELDS,
                "formatters": [{
                    "name": "envoy.formatter.req_without_query",
                    "typed_config": {
                        "@type": _T + "envoy.extensions.formatter.req_without_query.v3.ReqWithoutQuery"
                    },
                }],
            },
        },
    }  # fmt: skip


def client_cert_forwarding(config: Config) -> dict[str, Any]:
    """With downstream_mtls, X-Forwarded-Client-Cert: a client's own is always dropped, and Envoy
    sets it to the connection's certificate (hash, subject, SANs) for the upstream. Under
    `enforcement: policy`, authz removes it from a request whose certificate it found invalid."""
    if config.downstream_mtls is None:
        return {}  # Envoy's default, SANITIZE: a client's XFCC is dropped, none is set
    return {
        "forward_client_cert_details": "SANITIZE_SET",
        "set_current_client_cert_details": {"subject": True, "uri": True, "dns": True},
    }


def _listener(config: Config, routing: dict[str, Any], secrets_dir: str | None = None) -> dict[str, Any]:
    """The one listener; `routing` is the connection manager's `route_config` (inline) or `rds`;
    with `secrets_dir` its certificates come through SDS files there (they rotate)."""
    manager = {
        "@type": _T + "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "ingress",
        "codec_type": "AUTO",
        "use_remote_address": True,
        # The client's address: the connection's, or with N proxies in front (xff_num_trusted_hops)
        # the entry they appended to X-Forwarded-For: what `source_ip` rules and authz see.
        "xff_num_trusted_hops": config.xff_num_trusted_hops,
        "normalize_path": True,
        "merge_slashes": True,
        "path_with_escaped_slashes_action": "UNESCAPE_AND_REDIRECT",
        "always_set_request_id_in_response": True,
        "max_request_headers_kb": 96,
        "common_http_protocol_options": {
            "headers_with_underscores_action": "REJECT_REQUEST",
            "idle_timeout": "300s",
            "max_headers_count": 1000,
        },
        "access_log": [access_log()],
        **client_cert_forwarding(config),
        **routing,
        "http_filters": [
            *authz_filters(config),
            {
                "name": "envoy.filters.http.router",
                "typed_config": {"@type": _T + "envoy.extensions.filters.http.router.v3.Router"},
            },
        ],
    }
    chain: dict[str, Any] = {
        "filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": manager}]
    }
    if listener_certificates(config):
        chain["transport_socket"] = downstream_tls(config, secrets_dir)
    listener: dict[str, Any] = {"name": "authz-listener", "address": _socket(config.address), "filter_chains": [chain]}
    if config.use_proxy_protocol:
        # A balancer in front speaks the PROXY protocol (v1 or v2): the client's address comes from it.
        listener["listener_filters"] = [{
            "name": "envoy.filters.listener.proxy_protocol",
            "typed_config": {"@type": _T + "envoy.extensions.filters.listener.proxy_protocol.v3.ProxyProtocol"},
        }]  # fmt: skip
    return listener


# Mozilla's "intermediate" TLS 1.2 suites: ECDHE key exchange and AEAD ciphers only (no CBC, no
# static RSA); TLS 1.3 has its own (all AEAD) and is negotiated first.
TLS12_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
)  # fmt: skip
SECRET_TYPE = _T + "envoy.extensions.transport_sockets.tls.v3.Secret"


def listener_certificates(config: Config) -> list[tuple[str, str]]:
    """The listener's (certificate, key) files: `certificate_file` first, then `certificates`;
    Envoy picks the one whose names match the client's SNI (the first when none does)."""
    first = [(config.certificate_file, config.key_file)] if config.certificate_file and config.key_file else []
    return [*first, *config.certificates]


def secret_name(index: int) -> str:
    return f"edge-certificate-{index}"


def listener_secrets(config: Config) -> dict[str, str]:
    """For `--out DIR`: one SDS file per listener certificate, by file name. Each names its
    certificate and key files; Envoy watches their folder and loads a new pair the moment it is
    moved in (a renewal, a Kubernetes Secret's symlink swap), without a restart. With
    downstream_mtls's CA (and CRL) in files, one more for them, followed the same way."""
    files = {}
    for i, (cert, key) in enumerate(listener_certificates(config)):
        secret = {
            "name": secret_name(i),
            "tls_certificate": {
                "certificate_chain": {"filename": cert},
                "private_key": {"filename": key},
                "watched_directory": {"path": str(Path(cert).parent)},
            },
        }
        files[f"{secret_name(i)}.yaml"] = _discovery_response(SECRET_TYPE, [secret])
    mtls = config.downstream_mtls
    if mtls is not None and _watched_client_ca(mtls):
        # The CA's folder is watched: a new CA or CRL moved in there (keep them in one folder) is read.
        validation = {**_validation_context(mtls), "watched_directory": {"path": str(Path(mtls.ca.value).parent)}}
        secret = {"name": CLIENT_CA_SECRET, "validation_context": validation}
        files[f"{CLIENT_CA_SECRET}.yaml"] = _discovery_response(SECRET_TYPE, [secret])
    return files


# downstream_mtls: the client's whole certificate chain, for authz to verify (ext_authz's
# include_peer_certificate sends the leaf only). A Lua filter copies it from the connection into
# the request's dynamic metadata, which ext_authz sends in the CheckRequest (gRPC) or as a header
# (HTTP). Only filters write dynamic metadata: a client cannot forge it.
CLIENT_CERT_LUA = f"""\
function envoy_on_request(handle)
  local ssl = handle:connection():ssl()
  if ssl ~= nil and ssl:peerCertificatePresented() then
    handle:streamInfo():dynamicMetadata():set("{CLIENT_CERT_NAMESPACE}", "chain",
      ssl:urlEncodedPemEncodedPeerCertificateChain())
  end
end
"""
_SAN_TYPES = {"email": "EMAIL", "dns": "DNS", "uri": "URI", "ip_address": "IP_ADDRESS"}
_UPN_OID = "1.3.6.1.4.1.311.20.2.3"


def client_certificate_filters(config: Config) -> list[dict[str, Any]]:
    """With downstream_mtls, the Lua filter that hands the client's chain to ext_authz."""
    if config.downstream_mtls is None:
        return []
    return [{
        "name": "envoy.filters.http.lua",
        "typed_config": {
            "@type": _T + "envoy.extensions.filters.http.lua.v3.Lua",
            "default_source_code": {"inline_string": CLIENT_CERT_LUA},
        },
    }]  # fmt: skip


def _san_matcher(kind: str, pattern: str) -> dict[str, Any]:
    matcher: dict[str, Any] = {"matcher": {"safe_regex": {"regex": pattern}}}
    if kind == "user_principal_name":
        return {"san_type": "OTHER_NAME", "oid": _UPN_OID, **matcher}
    return {"san_type": _SAN_TYPES[kind], **matcher}


def _validation_context(mtls: DownstreamMtls) -> dict[str, Any]:
    validation: dict[str, Any] = {"trusted_ca": _source(mtls.ca)}
    if mtls.enforcement != "reject_connection":
        validation["trust_chain_verification"] = "ACCEPT_UNTRUSTED"
        return validation
    if mtls.crl is not None:
        validation["crl"] = _source(mtls.crl)
        validation["only_verify_leaf_cert_crl"] = True
    if mtls.match_subject_alt_names:
        validation["match_typed_subject_alt_names"] = [
            _san_matcher(m.kind, m.pattern) for m in mtls.match_subject_alt_names
        ]
    if mtls.max_verify_depth:
        validation["max_verify_depth"] = mtls.max_verify_depth
    return validation


CLIENT_CA_SECRET = "edge-client-ca"  # noqa: S105 - an SDS resource name (the client CA), no secret


def _watched_client_ca(mtls: DownstreamMtls | None) -> bool:
    """Whether the client CA (and CRL) are files Envoy can follow through SDS."""
    return mtls is not None and mtls.ca.kind == "filename" and (mtls.crl is None or mtls.crl.kind == "filename")


def client_validation(config: Config, secrets_dir: str | None = None) -> dict[str, Any]:
    """downstream_mtls in the listener's TLS context: Envoy asks every client for a certificate
    issued by `ca`. In the policy modes it accepts any certificate or none (authz judges it, and
    answers 495 with the reason); with reject_connection it requires one and verifies it as authz
    does (CA, CRL of the leaf's issuer, SANs, depth), failing the handshake otherwise. With
    `secrets_dir` and the CA and CRL in files, through an SDS file (`listener_secrets`), so a new CA
    or CRL is loaded without a restart."""
    mtls = config.downstream_mtls
    if mtls is None:
        return {}
    out: dict[str, Any] = {"validation_context": _validation_context(mtls)}
    if secrets_dir is not None and _watched_client_ca(mtls):
        source = _file_source(secrets_dir, f"{CLIENT_CA_SECRET}.yaml")
        out = {"validation_context_sds_secret_config": {"name": CLIENT_CA_SECRET, "sds_config": source}}
    if mtls.enforcement == "reject_connection":
        out["require_client_certificate"] = True
    return out


def downstream_tls(config: Config, secrets_dir: str | None = None) -> dict[str, Any]:
    """The listener's TLS: TLS 1.2 at least with TLS12_CIPHERS, h2 and http/1.1 by ALPN, the
    certificates inline (read at start) or, with `secrets_dir`, through SDS files (rotating)."""
    common: dict[str, Any] = {
        "alpn_protocols": ["h2", "http/1.1"],
        "tls_params": {"tls_minimum_protocol_version": "TLSv1_2", "cipher_suites": list(TLS12_CIPHERS)},
    }
    pairs = listener_certificates(config)
    if secrets_dir is None:
        common["tls_certificates"] = [
            {"certificate_chain": {"filename": cert}, "private_key": {"filename": key}} for cert, key in pairs
        ]
    else:
        common["tls_certificate_sds_secret_configs"] = [
            {"name": secret_name(i), "sds_config": _file_source(secrets_dir, f"{secret_name(i)}.yaml")}
            for i in range(len(pairs))
        ]
    validation = client_validation(config, secrets_dir)
    for key in ("validation_context", "validation_context_sds_secret_config"):
        if key in validation:
            common[key] = validation[key]
    context: dict[str, Any] = {
        "@type": _T + "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
        "common_tls_context": common,
    }
    if validation.get("require_client_certificate"):
        context["require_client_certificate"] = True
    return {"name": "envoy.transport_sockets.tls", "typed_config": context}


def redirect_listener(config: Config) -> dict[str, Any] | None:
    """`http_redirect_addr`: plain HTTP, where a request for a host this config serves is answered
    301 to the same URL over https on the TLS listener's port. No check runs there: nothing passes."""
    if config.http_redirect_addr is None:
        return None
    # The port always said: with https_redirect alone Envoy keeps a port the client named (:80, :8080).
    redirect: dict[str, Any] = {"https_redirect": True, "port_redirect": config.address.port}
    # Only the hosts this config serves are redirected: a Host a client made up gets a 404.
    hosts = sorted({config.authenticate_host, *(route.host for route in config.routes)})
    manager = {
        "@type": _T + "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "http_redirect",
        "codec_type": "AUTO",
        "route_config": {
            "name": "https-redirect",
            "ignore_port_in_host_matching": True,
            "virtual_hosts": [
                {"name": "served", "domains": hosts, "routes": [{"match": {"prefix": "/"}, "redirect": redirect}]},
                {
                    "name": "unknown-host",
                    "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "direct_response": {"status": 404}}],
                },
            ],
        },
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {"@type": _T + "envoy.extensions.filters.http.router.v3.Router"},
            }
        ],
    }
    return {
        "name": "authz-http-redirect",
        "address": _socket(config.http_redirect_addr),
        "filter_chains": [
            {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": manager}]}
        ],
    }


# What an HTTP check answer may carry to the client when it denies: every header authz's denials set.
_DENIAL_HEADERS = (
    "content-type", "cache-control", "location", "set-cookie", "x-request-id", "x-frame-options",
    "content-security-policy", "x-content-type-options", "referrer-policy", "strict-transport-security",
    "grpc-status", "grpc-message",
)  # fmt: skip


def _exact(names: Iterable[str]) -> dict[str, Any]:
    return {"patterns": [{"exact": name, "ignore_case": True} for name in sorted(set(names))]}


def client_certificate_source(config: Config) -> dict[str, Any]:
    """How a gRPC Check receives the client's certificate: its whole chain in dynamic metadata under
    downstream_mtls (from the Lua filter), else the leaf (`include_peer_certificate`), for the
    `client_certificate` criteria."""
    if config.downstream_mtls is not None:
        return {"metadata_context_namespaces": [CLIENT_CERT_NAMESPACE]}
    return {"include_peer_certificate": True}


def _ext_authz_service(config: Config) -> dict[str, Any]:
    """How the ext_authz filter calls authz: gRPC (context extensions carry the route id), or
    Envoy's HTTP service (`ext_authz_transport: http`), to which Envoy adds the route id, the
    client's address and certificate itself, replacing any a client sent (authz/envoy/http_check.py)."""
    timeout = _seconds(config.grpc_client_timeout)
    retry = _check_retry(config)
    if config.ext_authz_transport != "http":
        return {
            "transport_api_version": "V3",
            "grpc_service": {"envoy_grpc": {"cluster_name": AUTHZ_CLUSTER}, "timeout": timeout, **retry},
            **client_certificate_source(config),
        }
    address = config.check_endpoints[0]
    # The client's chain (downstream_mtls, from the Lua filter), else its certificate: URL-encoded PEM.
    certificate = "%DOWNSTREAM_PEER_CERT%"
    if config.downstream_mtls is not None:
        certificate = f"%DYNAMIC_METADATA({CLIENT_CERT_NAMESPACE}:chain)%"
    scheme = "https" if config.internal_tls is not None else "http"  # the cluster's transport socket does the TLS
    # On an allow, Envoy sets (overwrites) on the upstream request only the headers named here:
    # everything authz may set, never what else its answer carries.
    upstream = {*IDENTITY_HEADERS, *(h for h, _ in config.jwt_claims_headers), "cookie"}
    for route in config.routes:
        upstream.update(name.lower() for name, _ in route.set_request_headers)
    return {
        # Every header goes to the check, as with gRPC (the top-level key: authorization_request's is deprecated).
        "allowed_headers": {"patterns": [{"safe_regex": {"regex": ".*"}}]},
        "http_service": {
            "server_uri": {"uri": f"{scheme}://{address}", "cluster": AUTHZ_CLUSTER, "timeout": timeout},
            "authorization_request": {
                "headers_to_add": [
                    {"key": http_check.ROUTE_HEADER, "value": "%ROUTE_NAME%"},
                    {"key": http_check.CHECKSUM_HEADER, "value": "%METADATA(ROUTE:authz:checksum)%"},
                    {"key": http_check.SOURCE_HEADER, "value": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"},
                    {"key": http_check.CERTIFICATE_HEADER, "value": certificate},
                ],
            },
            "authorization_response": {
                "allowed_upstream_headers": _exact(upstream),
                "allowed_client_headers": _exact(_DENIAL_HEADERS),
            },
            **retry,
        },
    }


def _check_retry(config: Config) -> dict[str, Any]:
    """With several Check endpoints: a Check that got no answer (no connection, a refused or reset
    stream, gRPC UNAVAILABLE from a replica shutting down) is sent once or twice more, each time to
    another endpoint. An answer is never retried: a denial (any status over HTTP) is final."""
    if len(config.check_endpoints) < 2:
        return {}
    conditions = "connect-failure,refused-stream,reset"
    if config.ext_authz_transport != "http":
        conditions += ",unavailable"
    return {
        "retry_policy": {
            "retry_on": conditions,
            "num_retries": 2,
            # Envoy takes the back-off's max_interval as the per-try timeout of a gRPC or HTTP
            # service's retry policy: it must be the whole Check timeout, or a slow Check under load
            # would be cut and sent again (measured: 504s and doubled load with 0.05 s).
            "retry_back_off": {"base_interval": "0.025s", "max_interval": _seconds(config.grpc_client_timeout)},
            "retry_host_predicate": [
                {
                    "name": "envoy.retry_host_predicates.previous_hosts",
                    "typed_config": {
                        "@type": _T + "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
                    },
                }
            ],
            "host_selection_retry_max_attempts": 5,
        }
    }


def _drop_internal_headers(config: Config) -> list[dict[str, Any]]:
    """With the HTTP service, a filter ahead of ext_authz removes the headers through which Envoy
    tells authz the route, address and certificate, whatever a client sent under those names:
    Envoy adds its own only when they have a value (no certificate on a plain connection, so a
    client's would otherwise reach authz)."""
    if config.ext_authz_transport != "http":
        return []
    return [
        {
            "name": "envoy.filters.http.header_mutation",
            "typed_config": {
                "@type": _T + "envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
                "mutations": {"request_mutations": [{"remove": name} for name in http_check.INTERNAL_HEADERS]},
            },
        }
    ]


def _endpoint_health(kind: str) -> dict[str, Any]:
    """For several workers or replicas: Envoy asks each one's health every 2 s (also while idle:
    grpc.health.v1; over the HTTP transport GET /.authz/health expecting 204; the sidecar's
    GET /healthz) and sends requests only to those serving, never to a stopped or draining one (no
    panic routing: with none serving, Checks fail closed); one whose connections fail is ejected at once."""
    probe: dict[str, Any] = {"grpc_health_check": {}}
    if kind == "http":
        probe = {
            "http_health_check": {"path": http_check.HEALTH_PATH, "expected_statuses": [{"start": 204, "end": 205}]}
        }
    elif kind == "sidecar":
        probe = {"http_health_check": {"path": "/healthz"}}
    return {
        "health_checks": [
            {
                "timeout": "1s",
                "interval": "2s",
                "no_traffic_interval": "2s",
                "unhealthy_threshold": 1,
                "healthy_threshold": 1,
                **probe,
            }
        ],
        # Health changes reach the workers' balancers at once (Envoy merges them for 1 s by default).
        "common_lb_config": {"healthy_panic_threshold": {"value": 0}, "update_merge_window": "0s"},
        # Ejection only when an endpoint cannot be reached, never for what it answers: over HTTP a
        # denial may be a 5xx (a 503 while the session store is down), and ejecting every replica
        # for it would turn one store outage into Envoy's own 503 for every request, signed in or not.
        "outlier_detection": {
            "consecutive_local_origin_failure": 1,
            "split_external_local_origin_errors": True,
            "enforcing_consecutive_5xx": 0,
            "enforcing_consecutive_gateway_failure": 0,
            "enforcing_success_rate": 0,
            "enforcing_failure_percentage": 0,
            "interval": "1s",
            "base_ejection_time": "2s",
            "max_ejection_percent": 100,
        },
    }


def _listeners(config: Config, routing: dict[str, Any], secrets_dir: str | None = None) -> list[dict[str, Any]]:
    redirect = redirect_listener(config)
    return [_listener(config, routing, secrets_dir), *([redirect] if redirect else [])]


def bootstrap(config: Config, admin_address: str | None = None) -> dict[str, Any]:
    """The bootstrap as plain data."""
    data: dict[str, Any] = {
        "node": {"id": "authz", "cluster": "authz"},
        "static_resources": {
            "listeners": _listeners(config, {"route_config": route_configuration(config)}),
            "clusters": [*authz_clusters(config), *upstream_clusters(config)],
        },
    }
    return _with_admin(data, admin_address)


def _with_admin(data: dict[str, Any], admin_address: str | None) -> dict[str, Any]:
    if admin_address:
        host, _, port = admin_address.rpartition(":")
        data["admin"] = {"address": _socket((host or "127.0.0.1", int(port)))}
    return data


def render_bootstrap(config: Config, admin_address: str | None = None) -> str:
    """The bootstrap as one YAML document."""
    return yaml.safe_dump(bootstrap(config, admin_address), sort_keys=False, explicit_start=True)


# The dynamic mode (`authz envoy-config --out DIR`): the listener and authz's own clusters stay in
# the bootstrap; the routes (RDS) and the routes' clusters (CDS) come from two files in DIR that
# Envoy reloads whenever a file is moved into DIR, so routes change without an Envoy restart.
BOOTSTRAP_FILE = "envoy.yaml"
ROUTES_FILE = "routes.yaml"
CLUSTERS_FILE = "clusters.yaml"
_ROUTE_TYPE = _T + "envoy.config.route.v3.RouteConfiguration"
_CLUSTER_TYPE = _T + "envoy.config.cluster.v3.Cluster"


def _file_source(directory: str, name: str) -> dict[str, Any]:
    # Watching the directory, not the file: Envoy reloads on any rename into it, which is how the
    # files are replaced, and it also follows a Kubernetes volume's `..data` symlink swap.
    return {
        "path_config_source": {"path": f"{directory}/{name}", "watched_directory": {"path": directory}},
        "resource_api_version": "V3",
    }


def dynamic_bootstrap(config: Config, directory: str, admin_address: str | None = None) -> dict[str, Any]:
    """The bootstrap whose routes and route clusters Envoy reads from `directory` (an absolute path)."""
    rds = {"rds": {"route_config_name": ROUTE_CONFIG_NAME, "config_source": _file_source(directory, ROUTES_FILE)}}
    data: dict[str, Any] = {
        "node": {"id": "authz", "cluster": "authz"},
        "dynamic_resources": {"cds_config": _file_source(directory, CLUSTERS_FILE)},
        "static_resources": {"listeners": _listeners(config, rds, directory), "clusters": authz_clusters(config)},
    }
    return _with_admin(data, admin_address)


def _discovery_response(type_url: str, resources: list[dict[str, Any]]) -> str:
    """A DiscoveryResponse as Envoy's file subscription reads it; its version is a hash of the content."""
    typed = [{"@type": type_url, **resource} for resource in resources]
    version = hashlib.sha256(json.dumps(typed, sort_keys=True).encode()).hexdigest()[:16]
    return yaml.safe_dump({"version_info": version, "resources": typed}, sort_keys=False, explicit_start=True)


def render_routes(config: Config) -> str:
    """The RDS file: the one RouteConfiguration."""
    return _discovery_response(_ROUTE_TYPE, [route_configuration(config)])


def render_clusters(clusters: Iterable[dict[str, Any]]) -> str:
    """The CDS file: these clusters, by name order (the same set always reads the same)."""
    return _discovery_response(_CLUSTER_TYPE, sorted(clusters, key=lambda cluster: str(cluster["name"])))


def clusters_in(text: str) -> dict[str, dict[str, Any]]:
    """The clusters a CDS file holds, by name; empty for a file that is not one (a writer's first run)."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError:
        return {}
    resources = document.get("resources") if isinstance(document, dict) else None
    found: dict[str, dict[str, Any]] = {}
    for resource in resources if isinstance(resources, list) else []:
        if isinstance(resource, dict) and resource.get("@type") == _CLUSTER_TYPE and "name" in resource:
            found[str(resource["name"])] = {k: v for k, v in resource.items() if k != "@type"}
    return found


def clusters_routed(text: str) -> set[str]:
    """The clusters the routes of an RDS file send to; empty for a file that is not one."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError:
        return set()
    resources = document.get("resources") if isinstance(document, dict) else None
    names: set[str] = set()
    for resource in resources if isinstance(resources, list) else []:
        hosts = resource.get("virtual_hosts") if isinstance(resource, dict) else None
        for host in hosts if isinstance(hosts, list) else []:
            routes = host.get("routes") if isinstance(host, dict) else None
            for route in routes if isinstance(routes, list) else []:
                action = route.get("route") if isinstance(route, dict) else None
                if isinstance(action, dict) and isinstance(action.get("cluster"), str):
                    names.add(action["cluster"])
    return names


def render_dynamic_bootstrap(config: Config, directory: str, admin_address: str | None = None) -> str:
    """The dynamic bootstrap as one YAML document."""
    return yaml.safe_dump(dynamic_bootstrap(config, directory, admin_address), sort_keys=False, explicit_start=True)
