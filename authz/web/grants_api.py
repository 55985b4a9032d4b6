"""The grants JSON API, `/.pomerium/api/v1/grants…`, on the authenticate host and on route hosts.

    POST   /.pomerium/api/v1/grants                 {"route", "duration"?, "reason"?} → 201 the grant
    GET    /.pomerium/api/v1/grants[?status=…]      → 200 {"grants": [...]}
    GET    /.pomerium/api/v1/grants/{id}            → 200 the grant with its "history"
    POST   /.pomerium/api/v1/grants/{id}/approve    {"duration"?} → 200 "status": "active", "expires_at"
    POST   /.pomerium/api/v1/grants/{id}/reject     → 200 "status": "rejected"
    DELETE /.pomerium/api/v1/grants/{id}            → 200 "status": "revoked"

Identity is `Authorization: Pomerium <token>` (a programmatic login's token, on any host), else
the session cookie of the host called. A route host is the same origin as the app behind it, so a
script in that app could make any cookie-authenticated call in a signed-in approver's browser:
there, cookie-authenticated approve, reject and revoke are 403, and approvals happen on the
authenticate host, an origin no upstream shares. Every state-changing call needs
`Content-Type: application/json` (415 otherwise: an HTML form cannot send it, and a cross-origin
script cannot without a CORS preflight, which is never granted), and a cookie-authenticated one
also `Sec-Fetch-Site: same-origin` or an `Origin` naming the host called (403 otherwise). On a
route host a cookie acts for its user alone: it lists and shows only the user's own grants, and
asks only for routes of that host. Only a programmatic login's token is a bearer here, never a
route cookie's value. Errors are `{"error": "…"}` with 400, 401, 403, 404, 409 or 415.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from authz.check.credentials import find_credentials
from authz.check.request import RequestContext, origin
from authz.errors import (
    BadRequest,
    GrantError,
    GrantForbidden,
    GrantInvalid,
    GrantNotFound,
    GrantNotJson,
    GrantUnauthenticated,
    InvalidSession,
)
from authz.jit import service
from authz.jit.model import JIT_PAGE, Grant
from authz.jit.service import Actor
from authz.jit.store import GrantStore
from authz.runtime.state import Runtime, host_matches
from authz.sessions.session import Session
from authz.web.context import Context, context
from authz.web.login import authenticate_session
from authz.web.responses import NO_STORE, respond

API = "/.pomerium/api/v1/grants"
_JSON = "application/json"
_CHANGES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass(frozen=True, slots=True)
class Caller:
    """Who called, and how: a bearer token may act on any host, a cookie only where item 5 allows."""

    actor: Actor
    by_cookie: bool


def _json(status: int, data: object) -> Response:
    return respond(status, json.dumps(data), [("content-type", _JSON), NO_STORE])


def on_authenticate_host(ctx: Context) -> bool:
    return ctx.hostname == ctx.rt.config.authenticate_host


def host_origin(ctx: Context) -> str:
    """The origin of the host called, from the config (never from Host's port)."""
    config = ctx.rt.config
    if on_authenticate_host(ctx):
        return origin(config.authenticate_scheme, config.authenticate_host, config.authenticate_port)
    return ctx.route_origin


def same_origin(ctx: Context) -> bool:
    """A browser says the call came from this very origin (Fetch Metadata, else Origin)."""
    site = ctx.headers.get("sec-fetch-site")
    if site is not None:
        return site == "same-origin"
    return ctx.headers.get("origin") == host_origin(ctx)


def call_request(ctx: Context, request: Request) -> RequestContext | None:
    """The call as a request a policy can judge (`approvers` may look at method, path, headers);
    None when it cannot be read (then no one approves through it)."""
    scheme = ctx.rt.config.authenticate_scheme if on_authenticate_host(ctx) else (ctx.route.scheme if ctx.route else "")
    target = request.scope.get("raw_path", b"").decode("latin-1") or request.url.path
    if ctx.query:
        target = f"{target}?{ctx.query}"
    try:
        return RequestContext.build(
            method=request.method,
            host=ctx.headers.get("host", ""),
            target=target,
            scheme=scheme,
            headers=ctx.headers,
            request_id=ctx.headers.get("x-request-id", ""),
        )
    except BadRequest:
        return None


def _bearer_session(ctx: Context) -> Session | bool | None:
    """The session an `Authorization: Pomerium` token names, on any host; False when the call
    carries none. Only a programmatic login's token counts (`codec.PROGRAMMATIC`), never the value
    of a route cookie: a script that can read one must not become an approver with it."""
    rt = ctx.rt
    headers = {k: v for k, v in ctx.headers.items() if k != "cookie"}
    tokens = find_credentials(headers, rt.cookies).tokens
    if not tokens:
        return False
    handles = []
    for token in tokens:
        try:
            handles.append(rt.api_codec.open_anywhere(token, ctx.now))
        except InvalidSession:
            continue
    if len({h.user_id for h in handles}) > 1:
        return None
    return rt.live_session(tuple(handles), ctx.now)


def _cookie_session(ctx: Context) -> Session | None:
    rt = ctx.rt
    if on_authenticate_host(ctx):
        return authenticate_session(ctx)
    headers = {k: v for k, v in ctx.headers.items() if k in ("cookie", "host")}
    tokens = find_credentials(headers, rt.cookies).tokens
    return rt.load_session(tokens, ctx.hostname, ctx.now) if tokens else None


def caller(ctx: Context, request: Request) -> Caller:
    """Who is calling (GrantUnauthenticated when no one): a bearer token first, else the host's cookie."""
    session = _bearer_session(ctx)
    by_cookie = session is False
    if by_cookie:
        session = _cookie_session(ctx)
    if not isinstance(session, Session):
        raise GrantUnauthenticated("sign in first: no session (cookie or Authorization: Pomerium <token>)")
    # A route host's cookie acts for the user alone, never as an approver: a script in the app
    # there could otherwise read every request the approver may decide on (emails, reasons, ids).
    as_approver = not by_cookie or on_authenticate_host(ctx)
    call = call_request(ctx, request) if as_approver else None
    return Caller(Actor(session.user_id, session.email, session, call), by_cookie)


def _check_change(ctx: Context, request: Request, who: Caller, approval: bool) -> None:
    """The defences of a cookie-authenticated change (see the module docstring)."""
    if not who.by_cookie:
        return
    if approval and not on_authenticate_host(ctx):
        raise GrantForbidden(
            f"approve, reject and revoke with your browser session at {ctx.rt.config.authenticate_service_url}"
            f"{JIT_PAGE}, not on an application's host"
        )
    if not same_origin(ctx):
        raise GrantForbidden("cross-origin request refused")


def _require_json(request: Request) -> None:
    if request.method in _CHANGES:
        kind = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if kind != _JSON:
            raise GrantNotJson("send the body as Content-Type: application/json")


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise GrantInvalid("the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise GrantInvalid("the body must be a JSON object")
    return data


def _store(rt: Runtime) -> GrantStore:
    if rt.grants is None:
        raise GrantNotFound("no route has just-in-time access")
    return rt.grants


def _changed(rt: Runtime, grant: Grant) -> Grant:
    rt.grant_changed(grant)
    return grant


Handler = Callable[[Request, Context], Awaitable[Response]]


def api(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """An API endpoint: the content type checked first, every refusal as `{"error": …}`."""

    async def endpoint(request: Request) -> Response:
        try:
            _require_json(request)
            return await handler(request, context(request))
        except GrantError as exc:
            return _json(exc.status, {"error": exc.message})

    return endpoint


@api
async def collection(request: Request, ctx: Context) -> Response:
    """GET lists what the caller may see; POST requests access."""
    rt, now = ctx.rt, ctx.now
    who = caller(ctx, request)
    store = _store(rt)
    if request.method == "POST":
        _check_change(ctx, request, who, approval=False)
        body = await _body(request)
        if who.by_cookie and not on_authenticate_host(ctx):
            # As the 403 page's form: a route host's cookie asks for that host's routes only.
            route = rt.config.routes_by_id.get(str(body.get("route")))
            if route is None or not host_matches(route.host, ctx.hostname):
                raise GrantNotFound("no route by that id with just-in-time access on this host")
        grant = await asyncio.to_thread(
            service.request_access, rt.config, store, who.actor, body.get("route"), body.get("duration"),
            body.get("reason"), now,
        )  # fmt: skip
        return _json(201, _changed(rt, grant).to_json(now))
    status = request.query_params.getlist("status")
    if len(status) > 1:
        raise GrantInvalid("give status at most once")
    found = await asyncio.to_thread(service.listing, rt.config, store, who.actor, status[0] if status else None, now)
    return _json(200, {"grants": [g.to_json(now) for g in found]})


@api
async def item(request: Request, ctx: Context) -> Response:
    """GET shows a grant with its history; DELETE revokes it."""
    rt, now = ctx.rt, ctx.now
    grant_id = request.path_params["grant"]
    who = caller(ctx, request)
    store = _store(rt)
    if request.method == "DELETE":
        _check_change(ctx, request, who, approval=True)
        grant = await asyncio.to_thread(service.revoke, rt.config, store, who.actor, grant_id, now)
        return _json(200, _changed(rt, grant).to_json(now))
    grant, history = await asyncio.to_thread(service.one, rt.config, store, who.actor, grant_id, now)
    return _json(200, {**grant.to_json(now), "history": [r.to_json() for r in history]})


@api
async def approve(request: Request, ctx: Context) -> Response:
    """POST …/{id}/approve with an optional duration."""
    rt, now = ctx.rt, ctx.now
    who = caller(ctx, request)
    _check_change(ctx, request, who, approval=True)
    body = await _body(request)
    store = _store(rt)
    grant_id = request.path_params["grant"]
    grant = await asyncio.to_thread(service.approve, rt.config, store, who.actor, grant_id, body.get("duration"), now)
    return _json(200, _changed(rt, grant).to_json(now))


@api
async def reject(request: Request, ctx: Context) -> Response:
    """POST …/{id}/reject."""
    rt, now = ctx.rt, ctx.now
    who = caller(ctx, request)
    _check_change(ctx, request, who, approval=True)
    await _body(request)
    store = _store(rt)
    grant = await asyncio.to_thread(service.reject, rt.config, store, who.actor, request.path_params["grant"], now)
    return _json(200, _changed(rt, grant).to_json(now))
