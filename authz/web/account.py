"""Signed-in users' pages and sign-out: `/.pomerium/`, `/.pomerium/user`, `/.pomerium/sign_out`.

One login's route-host cookies all name one session, so deleting it ends every host at once;
an old cookie replayed afterwards finds no session.

Sign-out changes state only on a POST from its own form, or through a link authz signed:

  GET, HEAD       either host: the confirmation page, a form that POSTs back with a CSRF token.
                  Nothing is cleared.
  POST            with a session on this host the token must match (else 403, nothing cleared).
                  A route host clears the cookies it was sent and continues, signed, to the
                  authenticate host; the authenticate host ends its own session. Without one
                  (another site's form: SameSite=Lax keeps the cookie out of a cross-site POST)
                  the authenticate host changes nothing: no cookie cleared, no IdP sign-out.
  signed link     the authenticate host ends the session the link names (only a route host's
                  confirmed POST makes one) and its own session when it is that one; another
                  session this browser holds there is asked about first.

The token is an HMAC over a purpose, the host and the session id, keyed from `cookie_secret`: good
only for the browser holding that session, on that host, until the session ends. A
`pomerium_redirect_uri` travels from the page through the form and must name a configured route
(`login.check_target`); it replaces the landing (`signout_redirect_url`, else `/.pomerium/signed_out`).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from urllib.parse import urlencode

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
from authz.web import cookies
from authz.web.context import Context, context
from authz.web.csrf import form_token, token_matches
from authz.web.login import authenticate_session, check_target, query_param, route_session, sign_in_from_route_host
from authz.web.responses import NO_STORE, page, redirect, refusal, respond

log = logging.getLogger("authz.web.account")

_TOKEN_FIELD = "csrf_token"  # noqa: S105 - a form field name, not a secret
_REDIRECT_FIELD = "pomerium_redirect_uri"


def _sign_out_endpoint(rt: Runtime) -> str:
    return f"{rt.config.authenticate_service_url}/.pomerium/sign_out"


def _after_sign_out(rt: Runtime) -> str:
    """Where a finished sign-out lands by default: `signout_redirect_url`, else the signed-out page."""
    return rt.config.signout_redirect_url or f"{rt.config.authenticate_service_url}/.pomerium/signed_out"


def _landing(rt: Runtime, wanted: str | None) -> str:
    """Where this sign-out lands: `wanted` when it is a URL on a configured route (else BadRequest)."""
    if not wanted:
        return _after_sign_out(rt)
    check_target(rt, wanted)
    return wanted


def sign_out_token(rt: Runtime, host: str, session_id: str) -> str:
    """The sign-out form's CSRF token for a session on a host (`authz.web.csrf`)."""
    return form_token(rt.form_key, "sign-out", host, session_id)


def _token_matches(rt: Runtime, host: str, session_id: str, given: str) -> bool:
    return token_matches(rt.form_key, "sign-out", host, session_id, given)


async def _asked(request: Request, ctx: Context) -> tuple[str, str | None]:
    """(CSRF token, pomerium_redirect_uri): from the form on POST, the query otherwise; a
    field that is absent or repeated counts as absent."""
    if request.method != "POST":
        return "", query_param(ctx.query, _REDIRECT_FIELD)
    form = await request.form(max_files=0, max_fields=16)

    def one(name: str) -> str | None:
        values = form.getlist(name)
        return values[0] if len(values) == 1 and isinstance(values[0], str) else None

    return one(_TOKEN_FIELD) or "", one(_REDIRECT_FIELD)


def _confirm(rt: Runtime, host: str, token: str, wanted: str | None) -> Response:
    """The confirmation page: a form POSTing back to this host's sign-out."""
    return page(rt.theme, "sign_out", "Sign out", host=host, token=token, redirect=wanted or "")


def _refused(ctx: Context) -> Response:
    """403: a sign-out POST without this session's token (another site's form, or a stale page)."""
    detail = (
        "This sign-out request did not come from this site's sign-out page, so nothing was changed."
        " To sign out, open /.pomerium/sign_out and confirm there."
    )
    return refusal(ctx.rt.theme, 403, (Reason.BAD_REQUEST,), ctx.headers, detail)


# -- route hosts ----------------------------------------------------------------------------------


async def user_page(request: Request) -> Response:
    """`/.pomerium/`: who is signed in on this host, with a sign-out button; else sign in first."""
    ctx = context(request)
    session = route_session(ctx)
    if session is None:
        return sign_in_from_route_host(ctx, f"{ctx.route_origin}/.pomerium/")
    expires = datetime.fromtimestamp(session.expires_at, UTC).strftime("%Y-%m-%d %H:%M UTC")
    rows = [
        ("Name", session.name),
        ("Email", session.email),
        ("User", session.user_id),
        ("Groups", ", ".join(session.groups) or "none"),
        ("Session expires", expires),
    ]
    return page(ctx.rt.theme, "user", "Signed in", rows=rows, token=sign_out_token(ctx.rt, ctx.hostname, session.id))


async def user_json(request: Request) -> Response:
    """`/.pomerium/user`: the signed-in user's claims as JSON; 401 JSON without a session."""
    session = route_session(context(request))
    if session is None:
        body = {"status": 401, "error": "Unauthenticated", "reasons": [Reason.USER_UNAUTHENTICATED]}
        return respond(401, json.dumps(body), [("content-type", "application/json")])
    return respond(200, json.dumps(session_claims(session)), [("content-type", "application/json"), NO_STORE])


def _carried_cookie_deletions(ctx: Context) -> list[str]:
    """Deletions of the authz cookies this request carried, each matching how it was set: the
    session cookie with the configured attributes (`__Host-`: Secure, Path=/, no Domain; else
    Domain=cookie_domain when set), binding and conflict cookies host-only. A cookie the browser
    did not send (SameSite) is left alone."""
    rt, names = ctx.rt, ctx.rt.cookies
    sent = {name for name, _ in cookies.pairs(ctx.headers.get("cookie", ""))}
    lines = [cookies.clear_cookie(rt.config, names.session)] if names.session in sent else []
    for name in sorted(sent):
        if name.startswith(names.binding_prefix) or name == names.conflict:
            lines.append(cookies.deletion(name, secure=names.secure))
    return lines


async def route_sign_out(request: Request) -> Response:
    """`/.pomerium/sign_out` on a route host: GET asks; POST clears this host's cookies and
    continues, signed, to the authenticate host."""
    ctx = context(request)
    rt = ctx.rt
    session = route_session(ctx)
    token, wanted = await _asked(request, ctx)
    target = _landing(rt, wanted)
    if request.method != "POST":
        return _confirm(rt, ctx.hostname, sign_out_token(rt, ctx.hostname, session.id) if session else "", wanted)
    if session is not None and not _token_matches(rt, ctx.hostname, session.id, token):
        return _refused(ctx)
    # Without a session here there is nothing to protect: the link names none, and the
    # authenticate host asks before ending one of its own.
    extra = {"pomerium_session": rt.signout.seal(SignOutLink(session.id).to_wire())} if session else {}
    extra["pomerium_back"] = f"{ctx.route_origin}/"  # the signed-out page's way back (signed with the rest)
    location = signed_url.sign(rt.url_key, _sign_out_endpoint(rt), target, ctx.now, extra)
    return redirect(location, *_carried_cookie_deletions(ctx))


# -- the authenticate host ------------------------------------------------------------------------


async def sign_out(request: Request) -> Response:
    """`/.pomerium/sign_out` on the authenticate host: a signed link or a confirmed POST ends the
    sessions; GET asks."""
    ctx = context(request)
    rt = ctx.rt
    own = authenticate_session(ctx)
    if "pomerium_signature" in ctx.query:
        return await _signed_sign_out(ctx, own)
    token, wanted = await _asked(request, ctx)
    target = _landing(rt, wanted)
    host = rt.config.authenticate_host
    if request.method != "POST":
        return _confirm(rt, host, sign_out_token(rt, host, own.id) if own else "", wanted)
    if own is None:
        # Nothing of this browser's to end that this request proves: a cross-site form posts
        # without the Lax cookie, and clearing it or visiting the IdP's logout would sign a
        # victim out. Land where a finished sign-out lands.
        return redirect(target)
    if not _token_matches(rt, host, own.id, token):
        return _refused(ctx)
    return await _finish(rt, [own], target)


async def _signed_sign_out(ctx: Context, own: Session | None) -> Response:
    """A link a route host signed after its POST was confirmed: end the session it names."""
    rt = ctx.rt
    signed = signed_url.verify(rt.url_key, _sign_out_endpoint(rt), ctx.query, ctx.now)
    target = signed.target
    if target != _after_sign_out(rt):
        check_target(rt, target)
    named = ""
    if sealed := signed.extra.get("pomerium_session"):
        try:
            named = SignOutLink.from_wire(rt.signout.open(sealed)).session_id
        except ValueError:
            raise BadRequest("the sign-out link is invalid") from None
    found = rt.store.get(named, ctx.now) if named else None
    ending = [found] if found is not None else []
    state = ""
    back = signed.extra.get("pomerium_back")
    if back and target == _after_sign_out(rt) and not rt.config.signout_redirect_url:
        try:
            state = _way_back(rt, back, ctx.now)
        except BadRequest:
            state = ""  # the route left the config since the link was signed: sign out, without a way back
    if own is None and not ending:
        return redirect(_with_state(target, state))  # nothing to end (no session on the route host): no IdP sign-out
    if own is not None and own.id != named:
        # A link proves only the session it names; this browser's other session here ends when
        # its holder confirms (a link someone else obtained must not sign a victim out).
        await _end(rt, ending)
        host = rt.config.authenticate_host
        return _confirm(rt, host, sign_out_token(rt, host, own.id), None if target == _after_sign_out(rt) else target)
    return await _finish(rt, ending, target, state)


def _way_back(rt: Runtime, back: str, now: float) -> str:
    """The signed-out page's `state`: the route origin it may offer as a way back, signed (a route
    the config names: checked here and again when the page is shown). It travels as the OIDC
    logout `state`, which the IdP hands back, since post_logout_redirect_uri must match exactly."""
    check_target(rt, back)
    return signed_url.sign(rt.url_key, _after_sign_out(rt), back, now).partition("?")[2]


def _with_state(url: str, state: str) -> str:
    return f"{url}?{urlencode({'state': state})}" if state else url


async def _finish(rt: Runtime, sessions: list[Session], target: str, state: str = "") -> Response:
    """End the sessions, clear the authenticate cookie and go on through the IdP's logout to
    `target` (with `state`, which the IdP passes back to it)."""
    id_token = await _end(rt, sessions)
    clear = cookies.clear_cookie(rt.config, rt.cookies.authenticate, host_only=True)  # set host-only
    if rt.oidc is not None:
        try:
            meta = await rt.oidc.metadata()
        except IdpError:
            return redirect(_with_state(target, state), clear)
        end = OidcClient.end_session_url(
            meta, id_token=id_token, client_id=rt.oidc.idp.client_id, post_logout_redirect_uri=target, state=state
        )
        if end:
            return redirect(end, clear)
    return redirect(_with_state(target, state), clear)


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
    """`/.pomerium/signed_out`: the page a sign-out ends on, with a way back to the route the user
    signed out from when a link authz signed names it (never a plain query parameter or Referer)."""
    ctx = context(request)
    back = ""
    if state := query_param(ctx.query, "state"):
        try:
            back = signed_url.verify(ctx.rt.url_key, _after_sign_out(ctx.rt), state, ctx.now).target
            check_target(ctx.rt, back)
        except BadRequest:
            back = ""  # an altered, expired or foreign state: the page, without a way back
    return page(ctx.rt.theme, "signed_out", "Signed out", back=back)
