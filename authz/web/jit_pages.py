"""The just-in-time access pages: the 403 page's request form, and the authenticate host's page.

  route host          POST /.pomerium/jit/request   the 403 page's form (CSRF token bound to the
                                                    session and host): creates a pending request
  authenticate host   GET  /.pomerium/jit           the user's requests; for approvers, requests
                                                    waiting (approve for a duration, or reject),
                                                    active grants (revoke) and their routes' audit trail
                      POST /.pomerium/jit           approve / reject / revoke from that page

Decisions are taken only on the authenticate host (see `grants_api`), from its own session, with
a CSRF token bound to that session; a POST a browser marks as cross-origin is refused as well.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response

from authz.check.answer import JIT_REQUEST
from authz.errors import GrantError, GrantInvalid, GrantNotFound
from authz.jit import service
from authz.jit.model import JIT_PAGE, Grant, Status, format_duration
from authz.runtime.state import host_matches
from authz.web.context import Context, context
from authz.web.csrf import form_token, token_matches
from authz.web.grants_api import call_request, host_origin
from authz.web.login import authenticate_session, route_session, sign_in_url
from authz.web.responses import NO_STORE, page, redirect, refusal, respond

JIT_DECIDE = "jit-decide"  # the purpose of the approval forms' CSRF token
_DONE = {"approve": "Approved.", "reject": "Rejected.", "revoke": "Revoked.", "request": "Request sent."}


def _refusal(ctx: Context, status: int, message: str) -> Response:
    return refusal(ctx.rt.theme, status, (), ctx.headers, message)


def _cross_origin(ctx: Context) -> bool:
    """A browser marked this POST as coming from another origin. Fetch Metadata decides when sent;
    else an Origin naming another origin. `Origin: null` and absent headers prove nothing (the
    pages' `Referrer-Policy: no-referrer` makes browsers send `null` on their own form posts):
    the form's CSRF token is the defence then."""
    site = ctx.headers.get("sec-fetch-site")
    if site is not None:
        return site not in ("same-origin", "none")
    sent = ctx.headers.get("origin")
    return sent is not None and sent != "null" and sent != host_origin(ctx)


async def _fields(request: Request, names: tuple[str, ...]) -> dict[str, str]:
    """Each named form field that was sent exactly once, as text."""
    form = await request.form(max_files=0, max_fields=16)
    out = {}
    for name in names:
        values = form.getlist(name)
        if len(values) == 1 and isinstance(values[0], str):
            out[name] = values[0]
    return out


async def request_form(request: Request) -> Response:
    """`POST /.pomerium/jit/request` on a route host: the 403 page's request for access."""
    ctx = context(request)
    rt, now = ctx.rt, ctx.now
    session = route_session(ctx)
    if session is None:
        return _refusal(ctx, 401, "Sign in first, then ask for access from the page you could not open.")
    form = await _fields(request, ("csrf_token", "route", "reason", "duration"))
    if _cross_origin(ctx) or not token_matches(
        rt.form_key, JIT_REQUEST, ctx.hostname, session.id, form.get("csrf_token", "")
    ):
        return _refusal(ctx, 403, "This request did not come from this site's access page, so nothing was sent.")
    route = rt.config.routes_by_id.get(form.get("route", ""))
    if route is None or route.jit is None or not host_matches(route.host, ctx.hostname):
        return _refusal(ctx, 404, "This site has no route with just-in-time access by that name.")
    if rt.grants is None:
        return _refusal(ctx, 404, "No route has just-in-time access.")
    actor = service.Actor(session.user_id, session.email, session, None)
    try:
        grant = await asyncio.to_thread(
            service.request_access, rt.config, rt.grants, actor, route.id, form.get("duration") or None,
            form.get("reason", ""), now,
        )  # fmt: skip
    except GrantError as exc:
        return _refusal(ctx, exc.status, exc.message)
    rt.grant_changed(grant)
    return page(
        rt.theme,
        "jit_requested",
        "Access requested",
        route=grant.route,
        duration=format_duration(grant.duration),
        requests_page=f"{rt.config.authenticate_service_url}{JIT_PAGE}",
    )


def _view(grants: list[Grant], now: float) -> list[dict[str, Any]]:
    return [g.to_json(now) for g in grants]


async def jit_page(request: Request) -> Response:
    """`/.pomerium/jit` on the authenticate host: GET shows it, POST decides from it."""
    ctx = context(request)
    rt, now = ctx.rt, ctx.now
    page_url = f"{rt.config.authenticate_service_url}{JIT_PAGE}"
    session = authenticate_session(ctx)
    if session is None:
        if request.method == "POST":
            return _refusal(ctx, 401, "Your session ended: open this page again to sign in.")
        return redirect(sign_in_url(rt, page_url, now))
    actor = service.Actor(session.user_id, session.email, session, call_request(ctx, request))
    store = rt.grants
    if request.method == "POST":
        return await _decide(request, ctx, actor, page_url)
    routes = service.approved_routes(rt.config, actor, now)
    mine: list[Grant] = []
    pending: list[Grant] = []
    active: list[Grant] = []
    trail: list[dict[str, Any]] = []
    if store is not None:
        mine = await asyncio.to_thread(store.grants, user=session.user_id)
        if routes:
            pending = await asyncio.to_thread(store.grants, routes=routes, status=Status.PENDING, now=now)
            active = await asyncio.to_thread(store.grants, routes=routes, status=Status.ACTIVE, now=now)
            trail = [r.to_json() for r in await asyncio.to_thread(store.trail, routes)]
    notice = _DONE.get(request.query_params.get("done", ""), "")
    return page(
        rt.theme,
        "jit",
        "Just-in-time access",
        notice=notice,
        account=session.email or session.user_id,
        user=session.user_id,
        mine=_view(mine, now),
        approver=bool(routes),
        pending=_view(pending, now),
        active=_view(active, now),
        trail=trail,
        action=JIT_PAGE,
        token=form_token(rt.form_key, JIT_DECIDE, ctx.hostname, session.id),
    )


async def _decide(request: Request, ctx: Context, actor: service.Actor, page_url: str) -> Response:
    rt, now = ctx.rt, ctx.now
    assert actor.session is not None
    form = await _fields(request, ("csrf_token", "grant", "action", "duration"))
    if _cross_origin(ctx) or not token_matches(
        rt.form_key, JIT_DECIDE, ctx.hostname, actor.session.id, form.get("csrf_token", "")
    ):
        return _refusal(ctx, 403, "This decision did not come from this site's page, so nothing was changed.")
    action, grant_id, duration = form.get("action", ""), form.get("grant", ""), form.get("duration") or None
    store = rt.grants

    def run() -> Grant:
        if store is None:
            raise GrantNotFound("no route has just-in-time access")
        if action == "approve":
            return service.approve(rt.config, store, actor, grant_id, duration, now)
        if action == "reject":
            return service.reject(rt.config, store, actor, grant_id, now)
        if action == "revoke":
            return service.revoke(rt.config, store, actor, grant_id, now)
        raise GrantInvalid("choose approve, reject or revoke")

    try:
        grant = await asyncio.to_thread(run)
    except GrantError as exc:
        return _refusal(ctx, exc.status, exc.message)
    rt.grant_changed(grant)
    return respond(303, b"", [("location", f"{page_url}?{urlencode({'done': action})}"), NO_STORE])
