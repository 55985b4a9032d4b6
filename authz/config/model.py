"""The validated config: frozen values built once at load and swapped whole on reload."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple

from authz.policy.ast import Policy
from authz.signing.keys import SigningKey


class Secret:
    """Secret bytes with a masked repr, so they never reach a log line or a traceback."""

    __slots__ = ("value",)

    def __init__(self, value: bytes) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "Secret(***)"


class IssuerFormat(StrEnum):
    HOST_ONLY = "hostOnly"
    URI = "uri"


@dataclass(frozen=True, slots=True)
class Upstream:
    """One `to` URL."""

    url: str
    scheme: str
    host: str
    port: int
    path: str


class Pem(NamedTuple):
    """A PEM as Envoy takes it: a file it reads (`filename`) or the text itself (`inline_string`)."""

    kind: str
    value: str

    def __repr__(self) -> str:  # an inline PEM may be a private key: never in a log or a traceback
        return f"Pem({self.kind!r}, {self.value!r})" if self.kind == "filename" else "Pem('inline_string', <not shown>)"


@dataclass(frozen=True, slots=True)
class UpstreamTls:
    """A route's TLS to its https upstreams (authz/config/tls.py)."""

    custom_ca: Pem | None = None  # replaces the system CAs for this route
    server_name: str | None = None  # SNI and the name verified; None: the first `to` host
    skip_verify: bool = False
    client_cert: Pem | None = None  # the edge's certificate toward the upstream
    client_key: Pem | None = None


@dataclass(frozen=True, slots=True)
class SanMatcher:
    """One `downstream_mtls.match_subject_alt_names` entry: a SAN type and an RE2 pattern that one
    of the leaf's SANs of that type must match in full."""

    kind: str  # email | dns | uri | ip_address | user_principal_name
    pattern: str


@dataclass(frozen=True, slots=True)
class DownstreamMtls:
    """Client certificates at the edge (`downstream_mtls`, authz/config/mtls.py)."""

    ca: Pem  # the CAs a client certificate must chain to, as Envoy reads them
    ca_pem: bytes = field(repr=False, default=b"")  # the same, for authz's own verification
    crl: Pem | None = None
    crl_pem: bytes = field(repr=False, default=b"")
    enforcement: str = "policy_with_default_deny"  # | policy | reject_connection
    match_subject_alt_names: tuple[SanMatcher, ...] = ()
    max_verify_depth: int = 1  # as Pomerium: 1 = issued by a trusted CA itself; 0 = no limit

    @property
    def default_deny(self) -> bool:
        """Whether a request without a valid certificate is refused (495) before any policy."""
        return self.enforcement != "policy"


@dataclass(frozen=True, slots=True)
class JitOptions:
    """A route's just-in-time access (`jit:`): who approves, for how long, and whom to tell."""

    approvers: Policy  # evaluated against the approver's session and the approval call's request
    max_duration: int  # seconds
    default_duration: int  # seconds, at most max_duration
    reason_required: bool = False
    notify_url: Secret | None = None  # the URL's bytes: a Slack webhook URL is a secret, never logged
    notify_secret: Secret | None = None  # HMAC-SHA256 key of the notifications' signature header
    max_stream_duration: float = 900.0  # Envoy closes a stream (WebSocket, SSE, gRPC) after this long


@dataclass(frozen=True, slots=True)
class Route:
    """One route: how Envoy matches it, where it goes, and who may pass."""

    id: str
    index: int
    from_url: str
    scheme: str
    host: str
    to: tuple[Upstream, ...]
    policy: Policy
    prefix: str | None = None
    path: str | None = None
    regex: str | None = None
    prefix_rewrite: str | None = None
    preserve_host_header: bool = False
    host_rewrite: str | None = None
    timeout: float = 30.0
    allow_websockets: bool = False
    public: bool = False
    pass_identity_headers: bool = False
    set_request_headers: tuple[tuple[str, str], ...] = ()
    remove_request_headers: tuple[str, ...] = ()
    set_response_headers: tuple[tuple[str, str], ...] = ()
    show_error_details: bool = False
    jwt_issuer_format: IssuerFormat = IssuerFormat.HOST_ONLY
    # The port of every URL authz builds back to this route's host: `from`'s explicit port, else
    # authenticate_service_url's port when both use one scheme, else None (the scheme's default).
    # Never the request's Host port: a login must land where the config says.
    port: int | None = None
    jwt_groups_filter: tuple[str, ...] | None = None  # None: no route filter (the global one alone)
    keep_request_headers: tuple[str, ...] = ()  # names from the strip list this route lets through
    allow_path_parameters: bool = False  # `;` in the path (refused with 400 by default)
    allow_double_encoding: bool = False  # `%25` + two hex digits in the path (refused by default)
    jit: JitOptions | None = None  # just-in-time access: a denied user may ask for a grant
    tls: UpstreamTls = UpstreamTls()  # TLS to https upstreams
    checksum: str = ""  # of what Envoy's route is made of (not the policy): see `route_checksum`


@dataclass(frozen=True, slots=True)
class IdentityProvider:
    """The OpenID Connect provider users sign in with."""

    url: str
    client_id: str
    client_secret: Secret
    scopes: tuple[str, ...] = ("openid", "profile", "email", "offline_access")
    request_params: tuple[tuple[str, str], ...] = ()
    timeout: float = 10.0
    pkce: bool = True  # PKCE S256 on every sign-in; `idp_disable_pkce: true` only for a broken IdP


@dataclass(frozen=True, slots=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


DEFAULT_LOG_FIELDS = ("request-id", "envoy-route-id", "host", "method", "path", "ip", "user", "email")
DEFAULT_LOG_RATE_LIMIT = 100


@dataclass(frozen=True, slots=True)
class LogSettings:
    """The decision log: Pomerium's `authorize_log_fields`, and authz's sampling and rate limit."""

    fields: tuple[str, ...] = DEFAULT_LOG_FIELDS
    sample_rate: float = 1.0
    rate_limit: int = DEFAULT_LOG_RATE_LIMIT
    format: str = "json"


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    """The metrics listener (`metrics_*`, Pomerium's keys)."""

    address: Address | None = None  # None: no metrics listener
    basic_auth: Secret | None = None  # b"user:password"
    certificate: bytes | None = None  # PEM
    key: Secret | None = None  # PEM
    client_ca: bytes | None = None  # PEM


@dataclass(frozen=True, slots=True)
class InternalTls:
    """Mutual TLS between Envoy and authz (`internal_tls_*`, authz's own keys): authz's side as
    PEM (it serves them), Envoy's side as file paths (Envoy reads them, on its own host)."""

    certificate: bytes  # PEM chain authz presents on grpc_address (every worker) and http_address
    key: Secret  # PEM
    client_ca: bytes  # PEM: a caller's client certificate must chain to it
    envoy_certificate_file: str  # what the generated Envoy config presents to authz
    envoy_key_file: str
    ca_file: str  # what Envoy verifies authz's certificate against
    server_name: str  # the SAN Envoy requires of authz's certificate (and its SNI, when a DNS name)
    client_san: str = ""  # a SAN a caller's certificate must carry (Envoy's); "": any from client_ca


@dataclass(frozen=True, slots=True)
class RedisSettings:
    """A redis:// or rediss:// `session_store` (authz/config/store.py)."""

    url: str  # without the password: safe to log and print
    host: str
    port: int
    db: int
    username: str | None
    password: Secret | None
    tls: bool  # rediss://
    ca_file: str | None = None  # None: the system CAs
    cert_file: str | None = None  # a client certificate toward Redis
    key_file: str | None = None
    key_prefix: str = "authz:"
    timeout: float = 1.0  # seconds a Redis call may take before Redis counts as down


@dataclass(frozen=True, slots=True)
class Branding:
    """How authz's own pages look (authz/config/branding.py): the defaults are authz's plain pages."""

    name: str = "authz"  # shown above every page's heading and in its title
    logo_url: str = ""  # an image shown beside the name (https, or http on loopback)
    favicon_url: str = ""
    primary_color: str = ""  # "#rrggbb": buttons and the card's top edge
    secondary_color: str = ""  # "#rrggbb": links
    error_message_first_paragraph: str = ""  # plain text opening every error page


MAX_WORKERS = 64


@dataclass(frozen=True, slots=True)
class Config:
    """Everything `authz serve` and `authz envoy-config` need, validated."""

    source: str
    address: Address
    insecure_server: bool
    certificate_file: str | None
    key_file: str | None
    authenticate_service_url: str
    authenticate_scheme: str
    authenticate_host: str
    shared_secret: Secret
    cookie_secret: Secret
    cookie_name: str
    cookie_domain: str
    cookie_secure: bool
    cookie_http_only: bool
    cookie_same_site: str
    cookie_expire: float
    signing_keys: tuple[SigningKey, ...]
    jwt_claims_headers: tuple[tuple[str, str], ...]
    jwt_issuer_format: IssuerFormat
    pass_identity_headers: bool
    grpc_address: Address
    http_address: Address
    grpc_client_timeout: float
    default_upstream_timeout: float
    session_store: str  # the URL (a Redis one without its password)
    session_cache_ttl: float  # seconds a Check trusts a session it read; 0: every Check reads the store
    log_level: str
    routes: tuple[Route, ...]
    idp: IdentityProvider | None = None
    certificates: tuple[tuple[str, str], ...] = ()  # more (certificate, key) files, chosen by SNI
    http_redirect_addr: Address | None = None  # a plain-HTTP listener that redirects to https
    signout_redirect_url: str = ""
    programmatic_redirect_domain_whitelist: tuple[str, ...] = ("localhost",)
    routes_by_id: Mapping[str, Route] = field(default_factory=dict)
    authenticate_port: int | None = None  # authenticate_service_url's explicit port, if any
    allow_unverified_email: bool = False  # authz's own: count emails the IdP says are unverified
    jwt_groups_filter: tuple[str, ...] | None = None  # Pomerium's global group filter; None: off
    warnings: tuple[str, ...] = ()  # settings that load but weaken a defence (check-config prints them)
    workers: int = 1  # authz's own: `authz serve` processes, each on its own gRPC port from grpc_address's
    ext_authz_transport: str = "grpc"  # authz's own: how Envoy calls Check, "grpc" or "http" (on grpc_address)
    # authz's own: "host_path" picks the route by host and path when a Check carries no route id
    # (Istio's CUSTOM action, hand-written configs); "off" (the default) answers those 404.
    route_matching: str = "off"
    xff_num_trusted_hops: int = 0  # proxies in front of Envoy whose X-Forwarded-For entries are trusted
    use_proxy_protocol: bool = False  # the listener requires the PROXY protocol (a balancer in front)
    metrics: MetricsSettings = MetricsSettings()
    internal_tls: InternalTls | None = None  # None: plain Envoy ↔ authz (loopback only)
    downstream_mtls: DownstreamMtls | None = None  # None: no client certificate is asked for
    redis: RedisSettings | None = None  # a redis:// or rediss:// session_store
    # Pomerium's authorize_service_url(s): the replicas Envoy dials (each with `workers` Check ports
    # and its sidecar on http_address's port); empty: grpc_address's host, this replica alone.
    authorize_service_urls: tuple[Address, ...] = ()
    logs: LogSettings = LogSettings()
    branding: Branding = Branding()
    # authz's own: `authz serve` writes Envoy's routes.yaml and clusters.yaml here (authz/envoy/files.py)
    envoy_config_dir: str | None = None
    files: tuple[str, ...] = ()  # the files the config named and authz read (secrets, keys)
    signing_key_file: str | None = None  # where signing_key_file points (`authz keys` edits it); None: inline
    from_env: tuple[tuple[str, str], ...] = ()  # (key, environment variable) for each key set from the environment
    digest: str = ""  # SHA-256 of the config's text and of those files: which config is in force

    @property
    def grpc_addresses(self) -> tuple[Address, ...]:
        """Where each worker serves Check: grpc_address, then the next ports up, one per worker."""
        return tuple(Address(self.grpc_address.host, self.grpc_address.port + i) for i in range(self.workers))

    @property
    def check_endpoints(self) -> tuple[Address, ...]:
        """Where Envoy sends Checks: every worker of every replica."""
        if not self.authorize_service_urls:
            return self.grpc_addresses
        return tuple(Address(r.host, r.port + i) for r in self.authorize_service_urls for i in range(self.workers))

    @property
    def sidecar_endpoints(self) -> tuple[Address, ...]:
        """Where Envoy sends sign-in, callbacks and the published documents: every replica's sidecar."""
        if not self.authorize_service_urls:
            return (self.http_address,)
        return tuple(Address(r.host, self.http_address.port) for r in self.authorize_service_urls)

    def workers_problem(self, workers: int) -> str | None:
        """Why this config cannot run `workers` processes, or None."""
        if not 1 <= workers <= MAX_WORKERS:
            return f"must be 1 to {MAX_WORKERS}, got {workers}"
        last = self.grpc_address.port + workers - 1
        if last > 65535:
            return f"{workers} workers need ports {self.grpc_address.port}-{last} from grpc_address; 65535 is the last"
        if workers > 1 and self.session_store == "memory:":
            return "a memory: session store is one process's: with several workers use sqlite:///path"
        http = self.http_address
        same_host = http.host == self.grpc_address.host or "0.0.0.0" in (http.host, self.grpc_address.host)
        if same_host and self.grpc_address.port <= http.port <= last:
            return (
                f"the workers' gRPC ports {self.grpc_address.port}-{last} include http_address's port {http.port};"
                " move http_address (or grpc_address) out of that range"
            )
        return None
