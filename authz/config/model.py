"""The validated config: frozen values built once at load and swapped whole on reload."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

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


@dataclass(frozen=True, slots=True)
class IdentityProvider:
    """The OpenID Connect provider users sign in with."""

    url: str
    client_id: str
    client_secret: Secret
    scopes: tuple[str, ...] = ("openid", "profile", "email", "offline_access")
    request_params: tuple[tuple[str, str], ...] = ()
    timeout: float = 10.0


@dataclass(frozen=True, slots=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


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
    session_store: str
    log_level: str
    routes: tuple[Route, ...]
    idp: IdentityProvider | None = None
    signout_redirect_url: str = ""
    programmatic_redirect_domain_whitelist: tuple[str, ...] = ("localhost",)
    routes_by_id: Mapping[str, Route] = field(default_factory=dict)
