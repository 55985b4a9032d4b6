"""The Runtime: config, keys, codecs, stores and the OIDC client, built once and swapped whole on reload.

Nothing here is global: `RuntimeHolder` (runtime/holder.py) owns the current Runtime, and every
request, page and background pass reads it from there once and uses that one throughout.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from authz.check.clientcert import ClientCertificates
from authz.check.routing import RouteTable
from authz.config import Config, Route
from authz.config.load import STRIPPED_REQUEST_HEADERS
from authz.errors import InvalidSession
from authz.identity.oidc import OidcClient
from authz.jit.cache import GrantCache
from authz.jit.model import Grant
from authz.jit.store import GrantStore, open_grant_store
from authz.ops.decisions import DecisionLog
from authz.ops.metrics import NO_METRICS, Recorder
from authz.sessions import codec as handle_codec
from authz.sessions.cache import MISS, CachedStore, Miss
from authz.sessions.codec import HandleCodec
from authz.sessions.redis_store import RedisStore
from authz.sessions.sealing import Sealer, derive_key
from authz.sessions.session import Session, SessionHandle
from authz.sessions.stores import SessionStore, open_store
from authz.web.cookies import CookieNames
from authz.web.pages import DEFAULT as PLAIN_THEME
from authz.web.pages import Theme, theme

_STRIPPED = frozenset(STRIPPED_REQUEST_HEADERS)


def host_matches(pattern: str, hostname: str) -> bool:
    """Envoy's domain matching: exact, or `*.example.com` for any name ending in `.example.com`."""
    if pattern.startswith("*."):
        return hostname.endswith(pattern[1:]) and len(hostname) > len(pattern) - 1
    return hostname == pattern


def groups_filter(config: Config, route: Route) -> frozenset[str] | None:
    """The groups a route's assertion may carry: those the global or the route's `jwt_groups_filter`
    lists (a group passes if either does, as in Pomerium); None when neither is set."""
    if config.jwt_groups_filter is None and route.jwt_groups_filter is None:
        return None
    return frozenset((*(config.jwt_groups_filter or ()), *(route.jwt_groups_filter or ())))


def needs_assertion(route: Route) -> bool:
    """The assertion is signed when it is passed upstream or a header template uses it."""
    return route.pass_identity_headers or any("pomerium.jwt" in v for _, v in route.set_request_headers)


@dataclass(frozen=True, slots=True)
class Runtime:
    """Everything the hot path and the sidecar need, with no global state behind it."""

    config: Config
    codec: HandleCodec  # route hosts' session cookie
    auth_codec: HandleCodec  # the authenticate host's own session cookie (another key)
    api_codec: HandleCodec  # programmatic logins' tokens: route hosts, and the grants API's bearer
    cookies: CookieNames
    store: SessionStore  # the cache, when there is one, in front of the configured store
    cache: CachedStore | None  # None: the store does not block (memory:) or session_cache_ttl is 0
    url_key: bytes
    state: Sealer  # the login `state` (travels through the IdP, so it is encrypted)
    csrf: Sealer  # the per-login CSRF cookie: CSRF token, PKCE verifier, nonce
    handoff: Sealer  # the one-time session handoff to a route host's /.pomerium/callback/
    signout: Sealer  # the session id carried by a signed sign-out link
    form_key: bytes  # HMAC key of the CSRF tokens in authz's own forms (the sign-out confirmation)
    identity_headers: frozenset[str]  # jwt_claims_headers names: stripped from clients unless authz sets them
    signing_routes: frozenset[str]  # ids of routes whose Check signs an assertion (decided at load)
    stripped: Mapping[str, frozenset[str]]  # route id → client headers removed before its upstream
    groups_filters: Mapping[str, frozenset[str] | None]  # route id → jwt_groups_filter (global or route)
    extra_claims: tuple[str, ...]  # the claims jwt_claims_headers names, for the assertion
    group_headers: int  # how many claim headers repeat `groups` (they share the groups' size budget)
    oidc: OidcClient | None  # None when no identity provider is configured
    sign_in_endpoint: str  # {authenticate_service_url}/.pomerium/sign_in
    grants: GrantStore | None = None  # None: no route has just-in-time access
    grant_cache: GrantCache | None = None  # None: the grant store does not block, or no cache TTL
    route_table: RouteTable | None = None  # route_matching: host_path: routes by host and path
    metrics: Recorder = NO_METRICS  # the process's metrics (they outlive a reload's Runtime)
    decisions: DecisionLog | None = None  # None: built by `build` (a Runtime made by hand logs nothing)
    client_certs: ClientCertificates | None = None  # downstream_mtls: verifies presented chains
    theme: Theme = PLAIN_THEME  # how authz's pages look: `branding`, and the pages' CSP

    @classmethod
    def build(
        cls,
        config: Config,
        store: SessionStore | None = None,
        oidc: OidcClient | None = None,
        grants: GrantStore | None = None,
        metrics: Recorder = NO_METRICS,
    ) -> Runtime:
        """Build every part from a validated config; `store`, `oidc` and `grants` may be injected (tests)."""
        secret = config.cookie_secret.value
        if store is None:
            store = open_store(config.session_store, secret=secret, redis=config.redis)
        link = store.link if isinstance(store, RedisStore) else None
        cache = CachedStore(store, config.session_cache_ttl) if store.blocking and config.session_cache_ttl else None
        if grants is None and any(r.jit is not None for r in config.routes):
            grants = open_grant_store(config.session_store, config.redis, link)
        grant_cache = (
            GrantCache(grants, config.session_cache_ttl)
            if grants is not None and grants.blocking and config.session_cache_ttl
            else None
        )
        if link is not None:  # other replicas' writes reach these caches at once
            for listener in (cache, grant_cache):
                if listener is not None:
                    link.watch(listener)
        if oidc is None and config.idp is not None:
            oidc = OidcClient(config.idp, f"{config.authenticate_service_url}/oauth2/callback", metrics=metrics)
        return cls(
            config=config,
            codec=HandleCodec(secret, handle_codec.ROUTE),
            auth_codec=HandleCodec(secret, handle_codec.AUTHENTICATE),
            api_codec=HandleCodec(secret, handle_codec.PROGRAMMATIC),
            cookies=CookieNames.build(config),
            store=cache if cache is not None else store,
            cache=cache,
            url_key=derive_key(config.shared_secret.value, b"authz/signed-url"),
            state=Sealer(secret, b"login-state"),
            csrf=Sealer(secret, b"login-csrf"),
            handoff=Sealer(secret, b"session-handoff"),
            signout=Sealer(secret, b"sign-out"),
            form_key=derive_key(secret, b"authz/form-csrf"),
            identity_headers=frozenset(h for h, _ in config.jwt_claims_headers),
            signing_routes=frozenset(r.id for r in config.routes if needs_assertion(r)),
            # The route's own remove_request_headers too: authz removes them as Envoy's route does.
            stripped={
                r.id: (_STRIPPED - frozenset(r.keep_request_headers)) | frozenset(r.remove_request_headers)
                for r in config.routes
            },
            groups_filters={r.id: groups_filter(config, r) for r in config.routes},
            extra_claims=tuple(claim for _, claim in config.jwt_claims_headers),
            group_headers=sum(claim == "groups" for _, claim in config.jwt_claims_headers),
            oidc=oidc,
            sign_in_endpoint=f"{config.authenticate_service_url}/.pomerium/sign_in",
            grants=grants,
            grant_cache=grant_cache,
            route_table=RouteTable.build(config.routes) if config.route_matching == "host_path" else None,
            metrics=metrics,
            decisions=DecisionLog(config.logs, metrics),
            client_certs=ClientCertificates(config.downstream_mtls) if config.downstream_mtls else None,
            theme=theme(config.branding),
        )

    @property
    def raw_store(self) -> SessionStore:
        """The configured session store, without the cache in front of it."""
        return self.cache.inner if self.cache is not None else self.store

    async def close_unshared(self, successor: Runtime) -> None:
        """Close what this Runtime holds that `successor` (its reload) does not use."""
        if self.oidc is not None and self.oidc is not successor.oidc:
            await self.oidc.close()

    async def close(self) -> None:
        """Release the IdP connections and the store (after the last request that uses them)."""
        if self.oidc is not None:
            await self.oidc.close()
        self.store.close()
        if self.grants is not None:
            self.grants.close()

    def route_for_host(self, hostname: str) -> Route | None:
        """The first route whose `from` host names this host."""
        for route in self.config.routes:
            if host_matches(route.host, hostname):
                return route
        return None

    def open_handles(
        self, tokens: list[str], hostname: str, now: float, codec: HandleCodec | None = None
    ) -> tuple[SessionHandle, ...]:
        """The handles among `tokens` that open (as a route cookie or a programmatic token, unless
        a codec is given), are live and name this host (no I/O)."""
        openers = (codec,) if codec is not None else (self.codec, self.api_codec)
        handles = []
        for token in tokens:
            for opener in openers:
                try:
                    handles.append(opener.open(token, hostname, now))
                    break
                except InvalidSession:
                    continue
        return tuple(handles)

    def live_session(self, handles: tuple[SessionHandle, ...], now: float) -> Session | None:
        """The first handle's stored session that is live and belongs to the handle's user."""
        for handle in handles:
            session = self.store.get(handle.session_id, now)
            if session is not None and session.user_id == handle.user_id and session.expires_at > now:
                return session
        return None

    def stored_session(self, session_id: str, now: float) -> Session | None:
        """The session as the store holds it now, never an older cached copy."""
        return self.cache.fresh(session_id, now) if self.cache is not None else self.store.get(session_id, now)

    def cached_session(self, handles: tuple[SessionHandle, ...], now: float) -> Session | Miss | None:
        """`live_session` from the cache alone (no I/O), or MISS when a handle needs the store."""
        assert self.cache is not None
        for handle in handles:
            found = self.cache.peek(handle.session_id, now)
            if found is MISS:
                return MISS
            if found is not None and found.user_id == handle.user_id:
                return found
        return None

    def peek_grants(self, route: str, user: str, now: float) -> tuple[Grant, ...] | Miss:
        """A user's active grants on a route without blocking: MISS when only the store can tell."""
        if self.grants is None:
            return ()
        if self.grant_cache is not None:
            return self.grant_cache.peek(route, user, now)
        return MISS if self.grants.blocking else self.grants.active(route, user)

    def load_grants(self, route: str, user: str, now: float) -> tuple[Grant, ...]:
        """A user's active grants on a route (may block)."""
        if self.grants is None:
            return ()
        if self.grant_cache is not None:
            return self.grant_cache.load(route, user, now)
        return self.grants.active(route, user)

    def grant_changed(self, grant: Grant) -> None:
        """A grant changed in this process: counted by the state it entered, and the next Check of
        its user on its route reads the store."""
        self.metrics.grant(str(grant.status))
        if self.grant_cache is not None:
            self.grant_cache.forget(grant.route, grant.user)

    def load_session(
        self, tokens: list[str], hostname: str, now: float, codec: HandleCodec | None = None
    ) -> Session | None:
        """The first credential that opens, names this host and has a live stored session (may block).
        Credentials that name different users cancel out: no session (a planted cookie)."""
        handles = self.open_handles(tokens, hostname, now, codec)
        if conflicting(handles):
            return None
        return self.live_session(handles, now)


def conflicting(handles: tuple[SessionHandle, ...]) -> bool:
    """Whether open credentials name more than one user (one of them was planted)."""
    if len(handles) < 2:
        return False
    first = handles[0].user_id
    return any(h.user_id != first for h in handles)
