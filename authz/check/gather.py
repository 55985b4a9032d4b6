"""The gather step: route, credentials and session for one request — all the Check's I/O lives here.

The steady-state path is a plain synchronous call: the route is a dict lookup, credentials are
opened in memory, and a store that answers without blocking (`memory:`, and later a cache hit) is
read inline. Only a read that would block (SQLite, a cache miss) comes back as `Pending`, which the
server resolves off its event loop (asyncio) or directly (a thread-pool server). On a route with
just-in-time access the user's active grants are gathered the same way (the grant cache, else the
store). Under `downstream_mtls` the client certificate's verdict is gathered first (a cached
verification, authz/check/clientcert.py); when it refuses the request (default deny) no session is read.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from authz.check import routing
from authz.check.clientcert import CertificateVerdict
from authz.check.credentials import Credentials, find_credentials
from authz.check.facts import Facts
from authz.check.request import RequestContext, path_refusal, trusted_client
from authz.config.model import Route
from authz.runtime.state import Runtime, conflicting
from authz.sessions.cache import MISS
from authz.sessions.session import Session, SessionHandle

log = logging.getLogger("authz")


@dataclass(frozen=True, slots=True)
class Pending:
    """Facts that still need a blocking store read: call `resolve()` where blocking is allowed."""

    rt: Runtime
    request: RequestContext
    route: Route
    credentials: Credentials
    handles: tuple[SessionHandle, ...]
    now: float
    clock: datetime
    session: Session | None = None  # already known: only the user's grants are left to read
    certificate: CertificateVerdict | None = None

    def resolve(self) -> Facts:
        rt, route = self.rt, self.route
        session = self.session or rt.live_session(self.handles, self.now)
        grants = rt.load_grants(route.id, session.user_id, self.now) if session and route.jit else ()
        return Facts(
            self.request, route, self.credentials, session, self.clock, grants=grants, certificate=self.certificate
        )


def gather(rt: Runtime, req: RequestContext, now: float) -> Facts | Pending:
    """The facts for `req` at `now`, or `Pending` when only a blocking read can finish them."""
    if rt.config.xff_num_trusted_hops:  # proxies in front: the client is who they say
        req = trusted_client(req, rt.config.xff_num_trusted_hops)
    credentials = find_credentials(req.headers, rt.cookies)
    clock = datetime.fromtimestamp(now, UTC)
    certs = rt.client_certs
    cert = certs.verify(req.client_certificate, clock) if certs is not None else None
    unnormalised = ""
    if req.route_id or rt.route_table is None:
        # A route id Envoy sent names the route; one it does not know is 404, never matched otherwise.
        route = rt.config.routes_by_id.get(req.route_id)
        if route is not None and req.route_checksum and req.route_checksum != route.checksum:
            # Envoy matched this request with a route of another shape (its routes are older or
            # newer than this config): the policy of this config is not for it. 404 until they agree.
            log.warning(
                "route %s: Envoy's route_checksum %s is not this config's %s; answering 404 until Envoy has"
                " the routes of this config", route.id, req.route_checksum[:16], route.checksum,
                extra={"fields": {"request_id": req.request_id, "route": route.id}},
            )  # fmt: skip
            route = None
    else:
        # route_matching: host_path, and no route id (Istio's CUSTOM action): the route Envoy would pick.
        route = rt.route_table.match(routing.envoy_host(req.host), req.raw_path)
        unnormalised = (routing.path_refusal(req.raw_path) or "") if route is not None else ""
    if certs is not None and cert is not None and not cert.valid and certs.mtls.default_deny:
        # Refused for its certificate whatever else it carries (decide answers 495): no session to read.
        return Facts(req, route, credentials, None, clock, certificate=cert, certificate_refused=True)
    if unnormalised:
        return Facts(req, route, credentials, None, clock, refusal=unnormalised, certificate=cert)
    if route is not None and (req.has_path_parameters or req.has_double_encoding):
        refusal = path_refusal(route, req)
        if refusal:
            return Facts(req, route, credentials, None, clock, refusal=refusal, certificate=cert)
    if route is None or not credentials.tokens:
        return Facts(req, route, credentials, None, clock, certificate=cert)
    handles = rt.open_handles(credentials.tokens, req.hostname, now)
    if not handles:
        return Facts(req, route, credentials, None, clock, certificate=cert)
    if conflicting(handles):
        return Facts(req, route, credentials, None, clock, conflict=True, certificate=cert)
    if rt.cache is not None:
        # Steady state: the cache answers (no I/O); a miss reads the store off the event loop.
        session = rt.cached_session(handles, now)
        rt.metrics.session_cache(session is not MISS)
        if session is MISS:
            return Pending(rt, req, route, credentials, handles, now, clock, certificate=cert)
    elif rt.store.blocking:
        return Pending(rt, req, route, credentials, handles, now, clock, certificate=cert)
    else:
        session = rt.live_session(handles, now)
    if session is None or route.jit is None:
        return Facts(req, route, credentials, session, clock, certificate=cert)
    # A `jit` route: the user's active grants too, from the grant cache when it can answer.
    grants = rt.peek_grants(route.id, session.user_id, now)
    if grants is MISS:
        return Pending(rt, req, route, credentials, handles, now, clock, session, cert)
    return Facts(req, route, credentials, session, clock, grants=grants, certificate=cert)
