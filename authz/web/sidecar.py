"""The HTTP sidecar: everything a browser sees of authz, served through Envoy with ext_authz off.

A Starlette app whose route tables are chosen by host, from the Runtime read when the request
arrives (the hosts come from the config, which a reload may change):

  every host         /.well-known/pomerium/jwks.json, /.well-known/pomerium(/)
  any other host     /healthz, /readyz (probes of http_address name the pod or loopback)
  authenticate host  /.pomerium/sign_in, /oauth2/callback, /.pomerium/sign_out, /.pomerium/signed_out,
                     /.pomerium/jit (just-in-time access: requests, approvals, audit trail)
  route hosts        /.pomerium/callback(/), /.pomerium/sign_out, /.pomerium(/), /.pomerium/user,
                     /.pomerium/api/v1/login, /.pomerium/jit/request (the 403 page's access form)
  both               /.pomerium/api/v1/grants… (the grants API: `grants_api`)

Anything else is 404. Sign-in, the callbacks and the programmatic login take GET (and HEAD), the
published documents GET and OPTIONS, sign-out GET (its confirmation page) and POST (the confirmed
sign-out); another method is 405 with `Allow`. Signed-out, the user pages and the health paths
answer every method, as they always have. /healthz and /readyz never answer for the authenticate
host or a route's host, so an Envoy that routes those hosts here wholesale never exposes them.
Errors: a `RequestError` is its status with a JSON, HTML or text body chosen by Accept; anything
else is a plain 500 and a log line (`middleware.Faults`). URLs are built from the config as
`context` describes, and client X-Pomerium-* headers are never read.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from starlette.applications import Starlette
from starlette.datastructures import URLPath
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, NoMatchFound, Route, Router
from starlette.types import Receive, Scope, Send

from authz.errors import RequestError
from authz.ops.health import probe_stores
from authz.runtime.holder import RuntimeHolder
from authz.web import account, grants_api, jit_pages, login, pages
from authz.web.context import Context, context_if_any, header_map
from authz.web.middleware import BodyLimit, ContentSecurity, Faults
from authz.web.responses import refusal, text
from authz.web.wellknown import WellKnown

log = logging.getLogger(__name__)
MAX_BODY = 64 * 1024  # as before; only the sign-out form is read, and it is a few hundred bytes
_READ = ["GET"]  # HEAD is added by Starlette wherever GET is
_PUBLISHED = ["GET", "OPTIONS"]  # OPTIONS: CORS preflight for the JWKS and discovery
_FORM = ["GET", "POST"]  # GET shows the form, only its POST changes anything
_ALLOW_ORDER = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")

Endpoint = Callable[[Request], Awaitable[Response]]


def any_method(path: str, endpoint: Endpoint) -> Route:
    """A route that answers every method, as these paths always have (Starlette's default is GET only)."""
    route = Route(path, endpoint)
    route.methods = None
    return route


def _table(*routes: BaseRoute) -> Router:
    # No trailing-slash redirects: they would be built from the request's Host, and each path
    # that takes both spellings lists both.
    return Router(list(routes), redirect_slashes=False)


class Hosts(BaseRoute):
    """Reads the Runtime and the clock once, then answers from the table of the host the request names."""

    def __init__(self, holder: RuntimeHolder, clock: Callable[[], float], ready: Callable[[], bool]) -> None:
        self.holder = holder
        self.clock = clock
        well_known = WellKnown()

        async def healthz(request: Request) -> Response:
            """200 once both servers serve, 503 while starting or draining."""
            return text(200, "ok\n") if ready() else text(503, "starting\n")

        async def readyz(request: Request) -> Response:
            """As /healthz, and 503 while a store (sessions, grants) does not answer a read within
            READY_TIMEOUT (ops/health.py): for a balancer or an orchestrator, not for Envoy's health checks of the
            Check port (a store outage must not eject every replica at once)."""
            if not ready():
                return text(503, "starting\n")
            failed = await probe_stores(self.holder.current)
            if failed is not None:
                return text(503, f"{failed} store unreachable\n")
            return text(200, "ready\n")

        every_host = (
            Route("/.well-known/pomerium/jwks.json", well_known.jwks, methods=_PUBLISHED),
            Route("/.well-known/pomerium", well_known.discovery, methods=_PUBLISHED),
            Route("/.well-known/pomerium/", well_known.discovery, methods=_PUBLISHED),
        )
        # Only for a Host that is neither the authenticate host nor a route's (a probe names the
        # pod or loopback): a platform that routes those hosts here wholesale never exposes them.
        health = (any_method("/healthz", healthz), any_method("/readyz", readyz))
        grants = (
            Route(grants_api.API, grants_api.collection, methods=["GET", "POST"]),
            Route(f"{grants_api.API}/{{grant}}", grants_api.item, methods=["GET", "DELETE"]),
            Route(f"{grants_api.API}/{{grant}}/approve", grants_api.approve, methods=["POST"]),
            Route(f"{grants_api.API}/{{grant}}/reject", grants_api.reject, methods=["POST"]),
        )
        self.authenticate_host = _table(
            *every_host,
            Route("/.pomerium/sign_in", login.sign_in, methods=_READ),
            Route("/oauth2/callback", login.oauth_callback, methods=_READ),
            Route("/.pomerium/sign_out", account.sign_out, methods=_FORM),
            any_method("/.pomerium/signed_out", account.signed_out),
            Route("/.pomerium/jit", jit_pages.jit_page, methods=_FORM),
            *grants,
        )
        self.route_host = _table(
            *every_host,
            Route("/.pomerium/callback/", login.route_callback, methods=_READ),
            Route("/.pomerium/callback", login.route_callback, methods=_READ),
            Route("/.pomerium/sign_out", account.route_sign_out, methods=_FORM),
            any_method("/.pomerium", account.user_page),
            any_method("/.pomerium/", account.user_page),
            any_method("/.pomerium/user", account.user_json),
            Route("/.pomerium/api/v1/login", login.programmatic_login, methods=_READ),
            Route("/.pomerium/jit/request", jit_pages.request_form, methods=["POST"]),
            *grants,
        )
        self.other_host = _table(*every_host, *health)

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        return (Match.FULL, {}) if scope["type"] == "http" else (Match.NONE, {})

    def url_path_for(self, name: str, /, **path_params: object) -> URLPath:
        raise NoMatchFound(name, path_params)  # URLs are never built from routes (see `context`)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        rt = self.holder.current  # once per request: a reload mid-request never mixes configs
        ctx = Context.arrive(scope, rt, self.clock())
        if ctx.hostname == rt.config.authenticate_host:
            table = self.authenticate_host
        elif ctx.route is not None:
            table = self.route_host
        else:
            table = self.other_host
        await table(scope, receive, send)


async def _request_error(request: Request, exc: Exception) -> Response:
    """A refused request: its status, reason and detail, in the format Accept prefers."""
    assert isinstance(exc, RequestError)
    ctx = context_if_any(request)
    theme = ctx.rt.theme if ctx is not None else pages.DEFAULT  # a Context is made before any handler runs
    headers = header_map(request.scope)
    return refusal(theme, exc.status, (exc.reason,), headers, exc.detail, _way_back(request))


def _way_back(request: Request) -> str | None:
    """On a route host, a bad link's page leads back to the route (its origin, from config): going
    there signs the user in again if need be. Elsewhere there is no route to name; never a query
    parameter or Referer."""
    ctx = context_if_any(request)
    if ctx is not None and ctx.route is not None and ctx.hostname != ctx.rt.config.authenticate_host:
        return f"{ctx.route_origin}/"
    return None


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's routing answers: 404 for an unknown path, 405 (with Allow) for a wrong method."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return text(404, "not found\n")
    if exc.status_code == 405:
        allowed = {m.strip() for m in (exc.headers or {}).get("Allow", "").split(",")}
        allow = ", ".join(m for m in _ALLOW_ORDER if m in allowed)
        response = text(405, "method not allowed\n")
        response.headers["allow"] = allow
        return response
    return text(exc.status_code, f"{exc.detail.lower()}\n")


def create_app(
    holder: RuntimeHolder, ready: Callable[[], bool], *, clock: Callable[[], float] = time.time
) -> Starlette:
    """The sidecar app over the live Runtime; `ready` says whether /healthz is 200, `clock` is the time."""
    return Starlette(
        routes=[Hosts(holder, clock, ready)],
        middleware=[
            Middleware(ContentSecurity, holder=holder),
            Middleware(BodyLimit, limit=MAX_BODY),
            Middleware(Faults),
        ],
        exception_handlers={RequestError: _request_error, HTTPException: _http_error},
    )
