"""Signed-in users' pages and sign-out: `/.pomerium/`, `/.pomerium/user`, `/.pomerium/sign_out`.

One login's route-host cookies all name one session, so deleting it ends every host at once;
an old cookie replayed afterwards finds no session.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import Response

from authz.errors import BadRequest, IdpError
from authz.identity.claims import session_claims
from authz.identity.oidc import OidcClient
from authz.policy.reasons import Reason
from authz.runtime.state import Runtime
from authz.sessions.payloads import SignOutLink
from authz.sessions.session import Session
from authz.signing import signed_url
from authz.web import cookies, pages
from authz.web.context import context
from authz.web.login import auth_cookie, authenticate_session, route_session, sign_in_url
from authz.web.responses import NO_STORE, redirect, respond

log = logging.getLogger("authz.web.account")


def _page(template: str, heading: str, **values: object) -> Response:
    return respond(200, pages.account_page(template, heading, **values), [("content-type", pages.HTML), NO_STORE])


def _sign_out_endpoint(rt: Runtime) -> str:
    return f"{rt.config.authenticate_service_url}/.pomerium/sign_out"


def _after_sign_out(rt: Runtime) -> str:
    """Where a finished sign-out lands: `signout_redirect_url`, else the signed-out page."""
    return rt.config.signout_redirect_url or f"{rt.config.authenticate_service_url}/.pomerium/signed_out"


# -- route hosts ----------------------------------------------------------------------------------


async def user_page(request: Request) -> Response:
    """`/.pomerium/`: who is signed in on this host, with a sign-out button; else sign in first."""
    ctx = context(request)
    session = route_session(ctx)
    if session is None:
        return redirect(sign_in_url(ctx.rt, f"{ctx.route_origin}/.pomerium/", ctx.now))
    expires = datetime.fromtimestamp(session.expires_at, UTC).strftime("%Y-%m-%d %H:%M UTC")
    rows = [
        ("Name", session.name),
        ("Email", session.email),
        ("User", session.user_id),
        ("Groups", ", ".join(session.groups) or "none"),
        ("Session expires", expires),
    ]
    return _page("user", "Signed in", rows=rows)


async def user_json(request: Request) -> Response:
    """`/.pomerium/user`: the signed-in user's claims as JSON; 401 JSON without a session."""
    session = route_session(context(request))
    if session is None:
        body = {"status": 401, "error": "Unauthenticated", "reasons": [Reason.USER_UNAUTHENTICATED]}
        return respond(401, json.dumps(body), [("content-type", "application/json")])
    return respond(200, json.dumps(session_claims(session)), [("content-type", "application/json"), NO_STORE])


async def route_sign_out(request: Request) -> Response:
    """Clear this host's cookie and continue, signed, to the authenticate host."""
    ctx = context(request)
    rt = ctx.rt
    session = route_session(ctx)
    extra = {"pomerium_session": rt.signout.seal(SignOutLink(session.id).to_wire())} if session else {}
    location = signed_url.sign(rt.url_key, _sign_out_endpoint(rt), _after_sign_out(rt), ctx.now, extra)
    return redirect(location, cookies.clear_cookie(rt.config, rt.config.cookie_name))


# -- the authenticate host ------------------------------------------------------------------------


async def sign_out(request: Request) -> Response:
    """`/.pomerium/sign_out` on the authenticate host: a signed link or a POST ends the sessions;
    a bare GET asks first (or, with no session, goes straight on)."""
    ctx = context(request)
    rt = ctx.rt
    sessions: list[Session] = []
    target = _after_sign_out(rt)
    if "pomerium_signature" in ctx.query:
        signed = signed_url.verify(rt.url_key, _sign_out_endpoint(rt), ctx.query, ctx.now)
        sealed = signed.extra.get("pomerium_session")
        if sealed:
            try:
                link = SignOutLink.from_wire(rt.signout.open(sealed))
            except ValueError:
                raise BadRequest("the sign-out link is invalid") from None
            if (found := rt.store.get(link.session_id, ctx.now)) is not None:
                sessions.append(found)
    elif request.method != "POST":
        if authenticate_session(ctx) is None:
            return redirect(target)
        return _page("sign_out", "Sign out")
    own = authenticate_session(ctx)
    if own is not None and all(own.id != s.id for s in sessions):
        sessions.append(own)
    id_token = await _end(rt, sessions)
    clear = cookies.clear_cookie(rt.config, auth_cookie(rt))
    if rt.oidc is not None:
        try:
            meta = await rt.oidc.metadata()
        except IdpError:
            return redirect(target, clear)
        end = OidcClient.end_session_url(
            meta, id_token=id_token, client_id=rt.oidc.idp.client_id, post_logout_redirect_uri=target
        )
        if end:
            return redirect(end, clear)
    return redirect(target, clear)


async def _end(rt: Runtime, sessions: list[Session]) -> str:
    """Delete the sessions everywhere and revoke their tokens at the IdP; the last ID token."""
    id_token = ""
    for session in sessions:
        rt.store.delete(session.id)
        log.info("signed out", extra={"fields": {"user": session.user_id, "session": session.id[:8]}})
        id_token = session.id_token or id_token
        if rt.oidc is None:
            continue
        try:
            meta = await rt.oidc.metadata()
            await rt.oidc.revoke(meta, session.refresh_token, "refresh_token")
            await rt.oidc.revoke(meta, session.access_token, "access_token")
        except IdpError as exc:
            log.warning("token revocation failed", extra={"fields": {"error": str(exc)}})
    return id_token


async def signed_out(request: Request) -> Response:
    """`/.pomerium/signed_out`: the page a sign-out ends on."""
    return _page("signed_out", "Signed out")
