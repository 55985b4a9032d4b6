"""Read and validate a config file; every problem is collected and reported with its path."""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, urlsplit

from authz.config.branding import BRANDING_KEYS, read_branding
from authz.config.internal import INTERNAL_KEYS, read_authorize_urls, read_internal_tls
from authz.config.jit import read_jit
from authz.config.model import Address, Config, IdentityProvider, IssuerFormat, Route, Secret, Upstream
from authz.config.mtls import read_downstream_mtls
from authz.config.ops import OPS_KEYS, read_log_settings, read_metrics
from authz.config.store import STORE_KEYS, read_session_store
from authz.config.tls import ROUTE_TLS_KEYS, read_certificates, read_upstream_tls
from authz.errors import ConfigError, Problem
from authz.policy.legacy import read_route_policy
from authz.schema import yamlcore
from authz.schema.reader import Node, describe
from authz.schema.regex import compile_regex
from authz.signing.keys import SigningKey, load_signing_keys

GLOBAL_KEYS = (
    "address", "insecure_server", "certificate_file", "certificate_key_file", "key_file", "certificates",
    "http_redirect_addr",
    "authenticate_service_url",
    "shared_secret", "shared_secret_file", "cookie_secret", "cookie_secret_file", "cookie_name",
    "cookie_domain", "cookie_secure", "cookie_http_only", "cookie_same_site", "cookie_expire",
    "signing_key", "signing_key_file", "jwt_claims_headers", "jwt_issuer_format",
    "pass_identity_headers", "grpc_address", "http_address", "grpc_client_timeout",
    "default_upstream_timeout", "log_level", "routes", "idp_provider",
    "idp_provider_url", "idp_client_id", "idp_client_secret", "idp_client_secret_file", "idp_scopes",
    "idp_request_params", "idp_timeout", "signout_redirect_url", "programmatic_redirect_domain_whitelist",
    "jwt_groups_filter", "allow_unverified_email", "idp_disable_pkce", "session_cache_ttl", "workers",
    "ext_authz_transport", "route_matching", "xff_num_trusted_hops", "use_proxy_protocol", "envoy_config_dir",
    "downstream_mtls",
    *OPS_KEYS, *INTERNAL_KEYS, *STORE_KEYS, *BRANDING_KEYS,
)  # fmt: skip
GLOBAL_LATER: dict[str, str] = {}
_STORE = "authz keeps sessions in session_store: sqlite:///path on one host, redis://host for replicas"
GLOBAL_UNSUPPORTED = {
    "databroker_storage_type": _STORE,
    "databroker_storage_connection_string": _STORE,
}  # fmt: skip
ROUTE_KEYS = (
    "id", "from", "to", "prefix", "path", "regex", "prefix_rewrite", "preserve_host_header",
    "host_rewrite", "timeout", "allow_websockets", "policy", "allow_public_unauthenticated_access",
    "allow_any_authenticated_user", "allowed_users", "allowed_domains", "allowed_idp_claims", "cors_allow_preflight",
    "pass_identity_headers", "set_request_headers", "remove_request_headers",
    "set_response_headers", "show_error_details", "jwt_issuer_format", "jwt_groups_filter",
    "keep_request_headers", "allow_path_parameters", "allow_double_encoding", "jit", *ROUTE_TLS_KEYS,
)  # fmt: skip
ROUTE_LATER: dict[str, str] = {}
_PER_ROUTE_CA = "per-route client CAs, deprecated by Pomerium: set downstream_mtls.ca or ca_file for the listener"
ROUTE_UNSUPPORTED = {
    "tls_downstream_client_ca": _PER_ROUTE_CA,
    "tls_downstream_client_ca_file": _PER_ROUTE_CA,
    "sub_policies": "custom Rego",
    "bearer_token_format": "IdP bearer tokens",
    "kubernetes_service_account_token": "Kubernetes impersonation",
    "enable_google_cloud_serverless_authentication": "Google Cloud serverless",
}
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_HOSTNAME = re.compile(r"^(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$")
_ROUTE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_BAD_VALUE = re.compile(r"[\x00\r\n]")
_FORBIDDEN_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})
# Client headers that make an upstream read another path, method, host, scheme or client address than the
# policy judged: removed on every route by authz and by the generated Envoy config. A route may keep
# one by name (`keep_request_headers`) for an app that needs it, at its own risk.
STRIPPED_REQUEST_HEADERS = (
    "x-original-url", "x-rewrite-url", "x-forwarded-uri", "x-original-uri",
    "x-http-method-override", "x-http-method", "x-method-override",
    "x-envoy-auth-failure-mode-allowed",
    "x-forwarded-host", "x-forwarded-port", "x-forwarded-prefix", "forwarded",
    "x-forwarded-scheme", "x-forwarded-ssl", "x-url-scheme", "front-end-https",
    "x-real-ip", "true-client-ip", "x-client-ip",
)  # fmt: skip


def _session_cache_ttl(node: Node) -> float:
    """How long a Check may trust a session it read (the bound on a revocation elsewhere); 0: off.
    Kept far below the refresher's lead (60 s), so a cached access token is never one already replaced."""
    ttl = node.duration("session_cache_ttl", 10.0)
    if ttl > 30:
        node.error("session_cache_ttl", "must be at most 30s (it bounds how long a revoked session still opens)")
    return ttl


def load_config(path: str | Path) -> Config:
    """Read, parse and validate a config file; ConfigError lists every problem."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([Problem("", f"cannot read config file {str(file)!r}: {exc}")]) from None
    try:
        data = yamlcore.load(text)
    except yamlcore.YAMLError as exc:
        raise ConfigError([Problem("", f"invalid YAML: {exc}")]) from None
    data, from_env = with_environment(data, os.environ)
    env_values = repr(sorted((key, os.environ[name]) for key, name in from_env.items()))  # in the digest only
    config = parse_config(data, source=str(file), base_dir=file.resolve().parent, text=text + env_values)
    return dataclasses.replace(config, from_env=tuple(sorted(from_env.items())))


def with_environment(data: Any, environ: Mapping[str, str]) -> tuple[Any, dict[str, str]]:
    """The config with every global key that an upper-case environment variable sets replaced by
    it (as Pomerium reads AUTHENTICATE_SERVICE_URL, IDP_CLIENT_SECRET, …): a value is read as YAML,
    so `true`, `10s`, `[a, b]` and mappings work; and which keys came from which variable."""
    if not isinstance(data, Mapping) and data is not None:
        return data, {}
    merged: dict[str, Any] = dict(data or {})
    taken: dict[str, str] = {}
    problems = []
    for key in GLOBAL_KEYS:
        name = key.upper()
        if name not in environ:
            continue
        try:
            merged[key] = yamlcore.load(environ[name]) if environ[name].strip() else ""
        except yamlcore.YAMLError:
            problems.append(Problem(key, f"the environment variable {name} is not valid YAML (value not shown)"))
            continue
        taken[key] = name
    if problems:
        raise ConfigError(problems)
    return merged, taken


def _port_clash(config: Config, address: Address) -> str | None:
    """Which other listener of this config `address` would take, if any."""
    taken = [("address", config.address), ("http_address", config.http_address)]
    taken += [("grpc_address" if i == 0 else f"worker {i}'s gRPC port", a) for i, a in enumerate(config.grpc_addresses)]
    for name, other in taken:
        same_host = address.host == other.host or "0.0.0.0" in (address.host, other.host)
        if same_host and address.port == other.port:
            return name
    return None


def _address(node: Node, key: str, default: str) -> Address:
    text = node.text(key, default)
    host, sep, port = text.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        node.error(key, f"expected host:port, got {describe(text)}")
        return Address("127.0.0.1", 1)
    return Address(host, int(port))


def _url(node: Node, key: str, value: str, insecure: bool) -> SplitResult | None:
    try:
        url = urlsplit(value)
        url.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        node.error(key, f"invalid URL {describe(value)}: {exc}")
        return None
    if url.scheme not in ("http", "https") or not url.hostname:
        node.error(key, f"expected an http(s) URL with a host, got {describe(value)}")
        return None
    if url.scheme == "http" and not insecure:
        node.error(key, f"{describe(value)} uses http; set insecure_server: true to allow it")
        return None
    if url.username is not None or url.query or url.fragment:
        node.error(key, f"URL must not carry user info, a query or a fragment: {describe(value)}")
        return None
    return url


def _host_url(node: Node, key: str, insecure: bool) -> SplitResult | None:
    """A URL that names a host only (route `from`, `authenticate_service_url`)."""
    value = node.raw(key)
    if not isinstance(value, str) or not value:
        node.error(key, "is required" if value is None else f"expected a URL, got {describe(value)}")
        return None
    url = _url(node, key, value, insecure)
    if url is None:
        return None
    if url.path not in ("", "/"):
        node.error(key, f"must not contain a path (use prefix, path or regex): {describe(value)}")
        return None
    if not _HOSTNAME.match(url.hostname or ""):
        node.error(key, f"invalid host name in {describe(value)}")
        return None
    return url


def _optional_url(node: Node, key: str) -> str:
    value = node.text(key)
    if value and _url(node, key, value, insecure=True) is None:
        return ""
    return value


def _headers(node: Node, key: str) -> tuple[tuple[str, str], ...]:
    out = []
    for name, value in node.str_map(key).items():
        where = f"{key}.{name}"
        if not _TOKEN.match(name) or name.lower() in _FORBIDDEN_HEADERS:
            node.error(where, "is not a header name that can be set")
        elif _BAD_VALUE.search(value):
            node.error(where, "header values must not contain CR, LF or NUL")
        else:
            out.append((name, value))
    return tuple(out)


def _claims_headers(node: Node) -> tuple[tuple[str, str], ...]:
    value = node.raw("jwt_claims_headers")
    if value is None:
        return ()
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, list):
        if not all(isinstance(v, str) for v in value):
            node.error("jwt_claims_headers", "expected a list of claim names")
            return ()
        pairs = [(f"x-pomerium-claim-{claim}", claim) for claim in value]
    elif isinstance(value, Mapping):
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            node.error("jwt_claims_headers", "expected a mapping of header name to claim name")
            return ()
        pairs = list(value.items())
    else:
        node.error("jwt_claims_headers", f"expected a mapping or list, got {describe(value)}")
        return ()
    for header, _ in pairs:
        if not _TOKEN.match(header):
            node.error(f"jwt_claims_headers.{header}", "is not a valid header name")
    return tuple((header.lower(), claim) for header, claim in pairs)


def _signing_keys(node: Node, read: Callable[[str], str]) -> tuple[SigningKey, ...]:
    inline, file = node.raw("signing_key"), node.raw("signing_key_file")
    key = "signing_key_file" if file is not None else "signing_key"
    text = file if file is not None else inline
    if inline is not None and file is not None:
        node.error("signing_key", "set either signing_key or signing_key_file, not both")
        return ()
    if text is None:
        node.error(
            "signing_key",
            "no signing key configured: set signing_key or signing_key_file (generate one with"
            " `authz keygen`); unlike Pomerium, authz never derives one from shared_secret",
        )
        return ()
    if not isinstance(text, str):
        node.error(key, "expected a string (value not shown)")
        return ()
    if file is not None:
        try:
            text = read(text)
        except OSError as exc:
            node.error(key, f"cannot read {file!r}: {exc.strerror}")
            return ()
    try:
        return load_signing_keys(text)
    except ValueError as exc:
        node.error(key, f"{exc} (value not shown)")
        return ()


DEFAULT_SCOPES = ("openid", "profile", "email", "offline_access")


def _identity_provider(node: Node, read: Callable[[str], str]) -> IdentityProvider | None:
    provider = node.choice("idp_provider", "oidc", ["oidc"])
    url = node.text("idp_provider_url")
    client_id = node.text("idp_client_id")
    inline, file = node.raw("idp_client_secret"), node.raw("idp_client_secret_file")
    secret = ""
    if inline is not None and file is not None:
        node.error("idp_client_secret", "set either idp_client_secret or idp_client_secret_file, not both")
    elif file is not None:
        if not isinstance(file, str):
            node.error("idp_client_secret_file", f"expected a file path, got {describe(file)}")
        else:
            try:
                secret = read(file).strip()
            except OSError as exc:
                node.error("idp_client_secret_file", f"cannot read {file!r}: {exc.strerror}")
    elif inline is not None:
        if not isinstance(inline, str):
            node.error("idp_client_secret", "expected a string (value not shown)")
        else:
            secret = inline
    scopes_raw = node.raw("idp_scopes")
    if isinstance(scopes_raw, str):
        scopes = [s for s in re.split(r"[\s,]+", scopes_raw) if s]
    else:
        scopes = node.str_list("idp_scopes") if scopes_raw is not None else []
    params = node.str_map("idp_request_params")
    timeout = node.duration("idp_timeout", 10.0)
    if not url and not client_id:
        if node.has("idp_client_secret") or node.has("idp_scopes") or params:
            node.error("idp_provider_url", "is required when other idp_* keys are set")
        return None
    if not url:
        node.error("idp_provider_url", "is required with idp_client_id")
        return None
    if not client_id:
        node.error("idp_client_id", "is required with idp_provider_url")
        return None
    parsed = _url(node, "idp_provider_url", url, insecure=True)
    if parsed is None:
        return None
    if scopes and "openid" not in scopes:
        node.error("idp_scopes", "must include openid")
    reserved = {"state", "nonce", "code_challenge", "code_challenge_method", "redirect_uri", "client_id",
                "response_type", "scope"}  # fmt: skip
    for name in params:
        if name in reserved:
            node.error(f"idp_request_params.{name}", "is set by authz itself and cannot be overridden")
    del provider  # only "oidc" exists; validated above
    return IdentityProvider(
        url=url.rstrip("/"),
        client_id=client_id,
        client_secret=Secret(secret.encode()),
        scopes=tuple(scopes) or DEFAULT_SCOPES,
        request_params=tuple(params.items()),
        timeout=timeout,
        pkce=not node.flag("idp_disable_pkce"),
    )


def _groups_filter(node: Node) -> tuple[str, ...] | None:
    """Pomerium's `jwt_groups_filter`: a list of group names (a route also takes `{groups: [...]}`)."""
    value = node.raw("jwt_groups_filter")
    if value is None:
        return None
    if isinstance(value, Mapping):
        inner = Node(value, node.at("jwt_groups_filter"), node.problems)
        if inner.flag("infer_from_ppl"):
            inner.error("infer_from_ppl", "is not supported: list the groups to keep")
        groups = inner.str_list("groups")
        inner.finish(("groups", "infer_from_ppl"))
        return tuple(groups)
    return tuple(node.str_list("jwt_groups_filter"))


def _kept_headers(node: Node) -> tuple[str, ...]:
    kept = []
    for name in node.str_list("keep_request_headers"):
        if name.lower() not in STRIPPED_REQUEST_HEADERS:
            node.error(
                "keep_request_headers",
                f"{describe(name)} is not a header authz removes (it removes: {', '.join(STRIPPED_REQUEST_HEADERS)})",
            )
        else:
            kept.append(name.lower())
    return tuple(kept)


def _route_port(url: SplitResult | None, auth: SplitResult | None) -> int | None:
    """`from`'s explicit port, else the authenticate URL's when the schemes agree; default ports are None."""
    if url is None:
        return None
    default = 443 if url.scheme == "https" else 80
    port = url.port
    if port is None and auth is not None and auth.scheme == url.scheme:
        port = auth.port
    return None if port == default else port


# A route's keys that only authz reads (who may pass): a change to them is a reload of authz, and
# Envoy's route stays what it was. Every other key shapes Envoy's route (match, upstream, headers).
POLICY_KEYS = frozenset((
    "policy", "allow_public_unauthenticated_access", "allow_any_authenticated_user", "allowed_users",
    "allowed_domains", "allowed_idp_claims", "show_error_details", "jwt_issuer_format", "jwt_groups_filter",
))  # fmt: skip


def route_checksum(raw: Mapping[str, Any]) -> str:
    """A route's `route_checksum` (as Pomerium's): the hash of its keys that make Envoy's route.
    Envoy sends it with each Check; authz answers 404 when it is not the one its config gives the
    route, so traffic matched by an older route never gets a newer policy of the same id."""
    envoy_side = {k: v for k, v in raw.items() if k not in POLICY_KEYS}
    return hashlib.sha256(json.dumps(envoy_side, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _envoy_config_dir(node: Node, base: Path) -> str | None:
    """Where `authz serve` writes Envoy's route files, relative to the config's folder; None: nowhere."""
    name = node.text("envoy_config_dir")
    if not name:
        return None
    path = base / name
    if path.exists() and not path.is_dir():
        node.error("envoy_config_dir", f"{name!r} is not a directory")
    return str(path)


def _route_id(node: Node, url: str, to: tuple[Upstream, ...]) -> str:
    explicit = node.raw("id")
    if explicit is not None:
        if isinstance(explicit, str) and _ROUTE_ID.match(explicit):
            return explicit
        node.error("id", f"expected letters, digits, '.', '_' or '-', got {describe(explicit)}")
    match = {k: node.value.get(k) for k in ("prefix", "path", "regex")}
    canonical = json.dumps({"from": url, **match, "to": [u.url for u in to]}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _upstreams(node: Node, insecure: bool) -> tuple[Upstream, ...]:
    raw = node.raw("to")
    values = [raw] if isinstance(raw, str) else raw
    if not isinstance(values, list) or not values:
        node.error("to", "is required: one upstream URL or a list of them")
        return ()
    out = []
    for i, value in enumerate(values):
        where = f"to[{i}]" if isinstance(raw, list) else "to"
        if not isinstance(value, str):
            node.error(where, f"expected a URL, got {describe(value)}")
            continue
        url = _url(node, where, value, insecure=True)
        if url is None:
            continue
        port = url.port or (443 if url.scheme == "https" else 80)
        out.append(Upstream(value, url.scheme, url.hostname or "", port, url.path))
    return tuple(out)


def _route(node: Node, index: int, cfg: dict[str, Any]) -> Route | None:
    url = _host_url(node, "from", cfg["insecure"])
    auth: SplitResult | None = cfg["auth"]
    if url is not None and auth is not None and url.scheme != auth.scheme and url.port is None:
        cfg["warnings"].append(
            f"{node.at('from')}: uses {url.scheme} but authenticate_service_url uses {auth.scheme}"
            f" and `from` names no port: sign-ins land on the default {url.scheme} port"
        )
    to = _upstreams(node, cfg["insecure"])
    matches = {k: node.text(k) or None for k in ("prefix", "path", "regex")}
    if sum(v is not None for v in matches.values()) > 1:
        node.error(None, "set at most one of prefix, path and regex")
    for key in ("prefix", "path"):
        if matches[key] is not None and not str(matches[key]).startswith("/"):
            node.error(key, f"must start with '/', got {describe(matches[key])}")
    if matches["regex"] is not None:
        try:
            compile_regex(matches["regex"])  # RE2, as Envoy: Python's re accepts what Envoy refuses
        except ValueError as exc:
            node.error("regex", f"invalid regular expression (RE2, as Envoy): {exc}")
    rewrite = node.text("prefix_rewrite") or None
    if rewrite is not None and not rewrite.startswith("/"):
        node.error("prefix_rewrite", f"must start with '/', got {describe(rewrite)}")
    if rewrite is None and to and to[0].path not in ("", "/"):
        rewrite = to[0].path
    policy, legacy = read_route_policy(node)
    remove = [h.lower() for h in node.str_list("remove_request_headers")]
    for name in remove:
        if not _TOKEN.match(name):
            node.error("remove_request_headers", f"{describe(name)} is not a header name")
    route = Route(
        checksum=route_checksum(node.value),
        id=_route_id(node, url.geturl() if url else "", to),
        index=index,
        from_url=url.geturl() if url else "",
        scheme=url.scheme if url else "https",
        host=(url.hostname or "") if url else "",
        to=to,
        policy=policy,
        prefix=matches["prefix"],
        path=matches["path"],
        regex=matches["regex"],
        prefix_rewrite=rewrite,
        preserve_host_header=node.flag("preserve_host_header"),
        host_rewrite=node.text("host_rewrite") or None,
        timeout=node.duration("timeout", cfg["timeout"]),
        allow_websockets=node.flag("allow_websockets"),
        public=legacy.allow_public_unauthenticated_access,
        pass_identity_headers=node.flag("pass_identity_headers", cfg["pass_identity_headers"]),
        set_request_headers=_headers(node, "set_request_headers"),
        remove_request_headers=tuple(remove),
        set_response_headers=_headers(node, "set_response_headers"),
        show_error_details=node.flag("show_error_details"),
        jwt_issuer_format=IssuerFormat(
            node.choice("jwt_issuer_format", cfg["issuer"], [f.value for f in IssuerFormat])
        ),
        port=_route_port(url, auth),
        jwt_groups_filter=_groups_filter(node),
        keep_request_headers=_kept_headers(node),
        allow_path_parameters=node.flag("allow_path_parameters"),
        allow_double_encoding=node.flag("allow_double_encoding"),
        jit=read_jit(node, cfg["read"], cfg["warnings"]),
        tls=read_upstream_tls(node, to, cfg["base"], cfg["read"], cfg["warnings"]),
    )
    if route.keep_request_headers:
        cfg["warnings"].append(
            f"{node.at('keep_request_headers')}: {', '.join(route.keep_request_headers)} reach the"
            " upstream as the client sent them; an upstream that reads them may see another path, method,"
            " host or client address than the policy judged"
        )
    node.finish(ROUTE_KEYS, ROUTE_LATER, ROUTE_UNSUPPORTED)
    return route if url and to else None


def parse_config(data: Any, source: str = "<config>", base_dir: Path | None = None, text: str | None = None) -> Config:
    """Validate parsed YAML into a Config; ConfigError lists every problem with its path. The
    digest covers `text` (the file as read, else the parsed data) and every file the config names."""
    digest_of = text if text is not None else repr(data)
    base = base_dir or Path.cwd()
    problems: list[Problem] = []
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError([Problem("", f"expected a mapping at the top level, got {describe(data)}")])
    node = Node(data, "", problems)

    files: dict[str, str] = {}

    def read(name: str) -> str:
        """A file the config names (a secret, a key), remembered for the digest and for reload."""
        path = base / name
        try:
            text = path.read_text()
        except UnicodeDecodeError:  # a DER certificate, a binary: an error on its key, never a traceback
            raise OSError(errno.EILSEQ, "not a text file (PEM is text; convert DER with openssl)") from None
        files[str(path)] = text
        return text

    insecure = node.flag("insecure_server")
    # Pomerium's name for the key is certificate_key_file; key_file is authz's older one.
    key_name = "certificate_key_file" if node.has("certificate_key_file") else "key_file"
    if node.has("certificate_key_file") and node.has("key_file"):
        node.error("key_file", "set either certificate_key_file (Pomerium's name) or key_file, not both")
    cert, key = node.text("certificate_file") or None, node.text(key_name) or None
    if (cert is None) != (key is None):
        node.error("certificate_file", f"set both certificate_file and {key_name}")
    if not insecure and cert is None and not node.has("certificates"):
        node.error("insecure_server", "no TLS certificate: set certificate_file and key_file (or certificates),"
                   " or insecure_server: true for a plain-HTTP listener")  # fmt: skip
    if insecure and (cert is not None or node.has("certificates")):
        node.error("insecure_server", "a plain-HTTP listener serves no certificate: drop insecure_server: true"
                   " to use certificate_file or certificates")  # fmt: skip
    for name in (cert, key):
        if name is not None and not (base / name).is_file():
            node.error("certificate_file" if name == cert else key_name, f"no such file {name!r}")
    auth = _host_url(node, "authenticate_service_url", insecure)
    shared = node.secret("shared_secret", read=read)
    cookie = node.secret("cookie_secret", read=read)
    for name, value in (("shared_secret", shared), ("cookie_secret", cookie)):
        if value is None and not any(p.path.startswith(name) for p in problems):
            node.error(name, "is required: 32 random bytes, base64 (generate with `authz keygen`)")
    cookie_secure = node.flag("cookie_secure", True)
    same_site = node.choice("cookie_same_site", "lax", ["lax", "strict", "none"])
    if same_site == "none" and not cookie_secure:
        node.error("cookie_same_site", "SameSite=None requires cookie_secure: true")
    cookie_name = node.text("cookie_name", "_pomerium")
    if not _TOKEN.match(cookie_name):
        node.error("cookie_name", f"{describe(cookie_name)} is not a valid cookie name")
    issuer = node.choice("jwt_issuer_format", "hostOnly", [f.value for f in IssuerFormat])
    pass_identity = node.flag("pass_identity_headers")
    upstream_timeout = node.duration("default_upstream_timeout", 30.0)
    grpc_timeout = node.duration("grpc_client_timeout", 10.0)
    if grpc_timeout <= 0:
        node.error("grpc_client_timeout", "must be greater than zero")

    allow_unverified = node.flag("allow_unverified_email")
    routes: list[Route] = []
    raw_routes = node.raw("routes")
    if raw_routes is not None and not isinstance(raw_routes, list):
        node.error("routes", f"expected a list of routes, got {describe(raw_routes)}")
        raw_routes = []
    warnings: list[str] = []
    shared_cfg = {"insecure": insecure, "timeout": upstream_timeout, "pass_identity_headers": pass_identity,
                  "issuer": issuer, "auth": auth, "warnings": warnings, "read": read, "base": base}  # fmt: skip
    for i, item in enumerate(raw_routes or []):
        if not isinstance(item, Mapping):
            problems.append(Problem(f"routes[{i}]", f"expected a mapping, got {describe(item)}"))
            continue
        route = _route(Node(item, f"routes[{i}]", problems), i, shared_cfg)
        if route is None:
            continue
        if auth is not None and route.host == auth.hostname:
            problems.append(Problem(f"routes[{i}].from", "must not use the authenticate_service_url host"))
        routes.append(route)
    if allow_unverified:
        warnings.append(
            "allow_unverified_email: emails the identity provider marks unverified count as identities"
            " (anyone who can set such an email at the IdP passes email and domain rules)"
        )
    by_id: dict[str, Route] = {}
    for route in routes:
        if route.id in by_id:
            first = by_id[route.id].index
            problems.append(Problem(f"routes[{route.index}]", f"duplicate route id (same as routes[{first}])"))
        by_id[route.id] = route

    session_store, redis = read_session_store(node, base, read, warnings)
    config = Config(
        source=source,
        address=_address(node, "address", "127.0.0.1:8080"),
        insecure_server=insecure,
        certificate_file=str(base / cert) if cert else None,
        key_file=str(base / key) if key else None,
        authenticate_service_url=auth.geturl().rstrip("/") if auth else "",
        authenticate_scheme=auth.scheme if auth else "https",
        authenticate_host=(auth.hostname or "") if auth else "",
        shared_secret=Secret(shared or b""),
        cookie_secret=Secret(cookie or b""),
        cookie_name=cookie_name,
        cookie_domain=node.text("cookie_domain"),
        cookie_secure=cookie_secure,
        cookie_http_only=node.flag("cookie_http_only", True),
        cookie_same_site=same_site,
        cookie_expire=node.duration("cookie_expire", 14 * 3600.0),
        signing_keys=_signing_keys(node, read),
        signing_key_file=str(base / name) if isinstance(name := node.raw("signing_key_file"), str) else None,
        jwt_claims_headers=_claims_headers(node),
        jwt_issuer_format=IssuerFormat(issuer),
        pass_identity_headers=pass_identity,
        grpc_address=_address(node, "grpc_address", "127.0.0.1:9191"),
        http_address=_address(node, "http_address", "127.0.0.1:9192"),
        grpc_client_timeout=grpc_timeout,
        default_upstream_timeout=upstream_timeout,
        session_store=session_store,
        redis=redis,
        session_cache_ttl=_session_cache_ttl(node),
        log_level=node.choice("log_level", "info", ["debug", "info", "warn", "warning", "error"]),
        routes=tuple(routes),
        routes_by_id=by_id,
        idp=_identity_provider(node, read),
        certificates=read_certificates(node, base, read),
        http_redirect_addr=_address(node, "http_redirect_addr", "") if node.has("http_redirect_addr") else None,
        signout_redirect_url=_optional_url(node, "signout_redirect_url"),
        programmatic_redirect_domain_whitelist=tuple(
            d.lower() for d in node.str_list("programmatic_redirect_domain_whitelist")
        )
        or ("localhost",),
        authenticate_port=auth.port if auth else None,
        allow_unverified_email=allow_unverified,
        jwt_groups_filter=_groups_filter(node),
        warnings=tuple(warnings),
    )
    config = dataclasses.replace(
        config,
        ext_authz_transport=node.choice("ext_authz_transport", "grpc", ["grpc", "http"]),
        route_matching=node.choice("route_matching", "off", ["off", "host_path"]),
        use_proxy_protocol=node.flag("use_proxy_protocol"),
    )
    metrics_address = _address(node, "metrics_address", "") if node.has("metrics_address") else None
    config = dataclasses.replace(
        config,
        metrics=read_metrics(node, metrics_address, read),
        internal_tls=read_internal_tls(node, config, base, read, warnings),
        downstream_mtls=read_downstream_mtls(node, not insecure, base, read, warnings),
        logs=read_log_settings(node, warnings),
        branding=read_branding(node),
        warnings=tuple(warnings),
    )
    hops = node.integer("xff_num_trusted_hops", 0)
    if not 0 <= hops <= 16:
        node.error("xff_num_trusted_hops", f"must be 0 to 16, got {hops}")
    else:
        config = dataclasses.replace(config, xff_num_trusted_hops=hops)
    config = dataclasses.replace(config, envoy_config_dir=_envoy_config_dir(node, base))
    config = dataclasses.replace(config, authorize_service_urls=read_authorize_urls(node, config, warnings))
    workers = node.integer("workers", 1)
    if (problem := config.workers_problem(workers)) is not None:
        node.error("workers", problem)
    else:
        config = dataclasses.replace(config, workers=workers)
    if metrics_address is not None and (clash := _port_clash(config, metrics_address)):
        node.error("metrics_address", f"{metrics_address} is already {clash}")
    redirect = config.http_redirect_addr
    if redirect is not None and config.insecure_server:
        node.error("http_redirect_addr", "redirects to https: the listener needs certificate_file and key_file")
    elif redirect is not None and (clash := _port_clash(config, redirect)):
        node.error("http_redirect_addr", f"{redirect} is already {clash}")
    node.finish(GLOBAL_KEYS, GLOBAL_LATER, GLOBAL_UNSUPPORTED)
    if problems:
        raise ConfigError(problems)
    digest = hashlib.sha256(json.dumps([digest_of, sorted(files.items())]).encode()).hexdigest()
    return dataclasses.replace(config, files=tuple(sorted(files)), digest=digest, warnings=tuple(warnings))
