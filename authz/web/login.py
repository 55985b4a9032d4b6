"""Sign-in: the signed entry link, the IdP round trip, and the one-time handoff to a route host.

route host ──302──► authenticate /.pomerium/sign_in (signed, 5 min)
           ──302──► IdP (state, nonce, PKCE S256; CSRF cookie per attempt)
           ──302──► authenticate /oauth2/callback (state + CSRF cookie + age, code exchange,
                    ID token, userinfo, session stored, `_pomerium_authenticate` set)
           ──302──► route host /.pomerium/callback/?pomerium_handoff=… (one-time, 60 s)
           ──302──► the original URL, with `_pomerium` set for that host

The endpoints take a Starlette request and work with its `Context` (the Runtime and time read
when it arrived); the helpers take the Runtime explicitly and are shared with `account`.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from collections.abc import Mapping
from urllib.parse import parse_qs, urlencode, urlsplit

from starlette.requests import Request
from starlette.responses import Response

from authz.check.credentials import find_credentials
from authz.check.request import origin
from authz.config import Route
from authz.errors import BadRequest, IdpRefused, InvalidIdToken
from authz.identity.claims import merge_identity, new_session
from authz.runtime.state import Runtime
from authz.sessions.payloads import CsrfCookie, Handoff, LoginState
from authz.sessions.session import Session, SessionHandle
from authz.signing import signed_url
from authz.web import cookies
from authz.web.context import Context, context
from authz.web.responses import NO_STORE, TEXT, redirect, respond

log = logging.getLogger("authz.web.login")

STATE_MAX_AGE = 600
HANDOFF_LIFETIME = 60
_UNSAFE = re.compile(r"[\x00-\x20\x7f\\]")


def query_param(query: str, name: str) -> str | None:
    """The one value of `name` in a raw query string; None when absent or repeated."""
    values = parse_qs(query, keep_blank_values=True).get(name)
    return values[0] if values and len(values) == 1 else None


def check_target(rt: Runtime, target: str) -> tuple[Route, str]:
    """The route a redirect target belongs to, and its origin; BadRequest for anything off-site."""
    if _UNSAFE.search(target):
        raise BadRequest("the redirect target contains characters that are not allowed")
    try:
        url = urlsplit(target)
        port = url.port
    except ValueError:
        raise BadRequest("the redirect target is not a valid URL") from None
    if url.scheme not in ("http", "https") or not url.hostname or "@" in url.netloc:
        raise BadRequest("the redirect target must be an http(s) URL on a configured route")
    route = rt.route_for_host(url.hostname)
    if route is None or route.host == rt.config.authenticate_host:
        raise BadRequest("the redirect target is not on a configured route")
    if url.scheme != route.scheme:
        raise BadRequest("the redirect target's scheme does not match its route")
    if url.path and not url.path.startswith("/"):
        raise BadRequest("the redirect target's path is not absolute")
    return route, origin(url.scheme, url.hostname, port)


def _programmatic_target(rt: Runtime, target: str) -> str:
    """A programmatic client's local redirect (`programmatic_redirect_domain_whitelist`)."""
    if _UNSAFE.search(target):
        raise BadRequest("the redirect target contains characters that are not allowed")
    try:
        url = urlsplit(target)
        url.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise BadRequest("the redirect target is not a valid URL") from None
    host = url.hostname or ""
    allowed = rt.config.programmatic_redirect_domain_whitelist
    if (
        url.scheme not in ("http", "https")
        or "@" in url.netloc
        or not any(host == d or host.endswith("." + d) for d in allowed)
    ):
        raise BadRequest("the programmatic redirect target is not in programmatic_redirect_domain_whitelist")
    return target


# -- shared with sign-out and the user pages ------------------------------------------------------


def sign_in_url(rt: Runtime, target: str, now: float, extra: Mapping[str, str] | None = None) -> str:
    """A signed link to the authenticate host's sign-in for `target`."""
    return signed_url.sign(rt.url_key, rt.sign_in_endpoint, target, now, extra)


def auth_cookie(rt: Runtime) -> str:
    """The authenticate host's own session cookie: `<cookie_name>_authenticate`."""
    return f"{rt.config.cookie_name}_authenticate"


def authenticate_session(ctx: Context) -> Session | None:
    """The authenticate host's session from its cookie, if live."""
    token = cookies.parse(ctx.headers.get("cookie", "")).get(auth_cookie(ctx.rt))
    if not token:
        return None
    return ctx.rt.load_session([token], ctx.rt.config.authenticate_host, ctx.now)


def route_session(ctx: Context) -> Session | None:
    """The route host's session, found and opened by the same code as Check."""
    tokens = find_credentials(ctx.headers, ctx.rt.config.cookie_name).tokens
    return ctx.rt.load_session(tokens, ctx.hostname, ctx.now) if tokens else None


def handle_for(rt: Runtime, session: Session, hostname: str, now: float) -> str:
    """A sealed session handle for `hostname` (or for `cookie_domain` when it covers the host)."""
    domain = rt.config.cookie_domain
    host = f".{domain.lstrip('.')}" if domain and hostname.endswith(domain.lstrip(".")) else hostname
    return rt.codec.seal(SessionHandle(session.id, session.user_id, host, int(now), session.expires_at))


def _csrf_cookie_name(rt: Runtime, state_digest: str) -> str:
    return f"{rt.config.cookie_name}_csrf_{state_digest[:8]}"


def _handoff(rt: Runtime, session: Session, target: str, callback_host: str, now: float) -> Response:
    """Send the browser to the route host's callback with a sealed, one-time handoff."""
    _, target_origin = check_target(rt, callback_host or target)
    hostname = urlsplit(target_origin).hostname or ""
    handoff = Handoff(
        session_id=session.id,
        user_id=session.user_id,
        host=hostname,
        target=target,
        programmatic=bool(callback_host),
        expires_at=int(now) + HANDOFF_LIFETIME,
        jti=secrets.token_urlsafe(12),
    )
    token = rt.handoff.seal(handoff.to_wire())
    return redirect(f"{target_origin}/.pomerium/callback/?{urlencode({'pomerium_handoff': token})}")


# -- the authenticate host ------------------------------------------------------------------------


async def sign_in(request: Request) -> Response:
    """`/.pomerium/sign_in`: check the signed link, then hand off a live session or go to the IdP."""
    ctx = context(request)
    rt, now = ctx.rt, ctx.now
    signed = signed_url.verify(rt.url_key, rt.sign_in_endpoint, ctx.query, now)
    callback_host = signed.extra.get("pomerium_callback_host", "")
    if callback_host:
        _programmatic_target(rt, signed.target)
        check_target(rt, callback_host)
    else:
        check_target(rt, signed.target)
    session = authenticate_session(ctx)
    if session is not None:
        return _handoff(rt, session, signed.target, callback_host, now)
    if rt.oidc is None:
        raise BadRequest("sign-in is not configured: set idp_provider_url and idp_client_id")
    meta = await rt.oidc.metadata()
    csrf, nonce = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    verifier = secrets.token_urlsafe(48)
    state = rt.state.seal(LoginState(signed.target, csrf, int(now), callback_host).to_wire())
    digest = hashlib.sha256(state.encode()).hexdigest()
    pinned = rt.csrf.seal(CsrfCookie(csrf, verifier, nonce, digest).to_wire())
    location = rt.oidc.authorization_url(meta, state=state, nonce=nonce, verifier=verifier)
    return redirect(location, cookies.set_cookie(rt.config, _csrf_cookie_name(rt, digest), pinned, STATE_MAX_AGE))


async def oauth_callback(request: Request) -> Response:
    """`/oauth2/callback`: the IdP's answer; check state, CSRF cookie and age, then create the session."""
    ctx = context(request)
    rt, now = ctx.rt, ctx.now
    error = query_param(ctx.query, "error")
    if error is not None:
        description = (query_param(ctx.query, "error_description") or "")[:200]
        raise IdpRefused(error[:64], f"the identity provider refused the sign-in: {error[:64]} {description}".strip())
    sealed_state, code = query_param(ctx.query, "state"), query_param(ctx.query, "code")
    if not sealed_state or not code:
        raise BadRequest("the sign-in callback lacks its code or state")
    try:
        state = LoginState.from_wire(rt.state.open(sealed_state))
    except ValueError:
        raise BadRequest("the sign-in state is invalid") from None
    if not state.issued_at <= now + 60 or now - state.issued_at > STATE_MAX_AGE:
        raise BadRequest("the sign-in took too long; please start again")
    digest = hashlib.sha256(sealed_state.encode()).hexdigest()
    name = _csrf_cookie_name(rt, digest)
    try:
        pinned = CsrfCookie.from_wire(rt.csrf.open(cookies.parse(ctx.headers.get("cookie", "")).get(name) or ""))
    except ValueError:
        pinned = None
    if (
        pinned is None
        or not secrets.compare_digest(pinned.csrf.encode(), state.csrf.encode())
        or not secrets.compare_digest(pinned.state_digest.encode(), digest.encode())
    ):
        raise BadRequest("this sign-in was not started in this browser (missing or wrong CSRF cookie)")
    if not rt.store.claim_once(f"state:{digest}", state.issued_at + STATE_MAX_AGE + 60, now):
        raise BadRequest("this sign-in link was already used")
    if rt.oidc is None:
        raise BadRequest("sign-in is not configured")
    meta = await rt.oidc.metadata()
    tokens = await rt.oidc.exchange(meta, code, pinned.verifier)
    if not tokens.id_token:
        raise InvalidIdToken("the identity provider returned no ID token")
    claims = await rt.oidc.verify(meta, tokens.id_token, pinned.nonce, now)
    info = await rt.oidc.userinfo(meta, tokens.access_token)
    identity = merge_identity(claims, info)  # the rule every refresh uses too; checks userinfo's sub
    session = new_session(secrets.token_urlsafe(18), identity, tokens, now, rt.config.cookie_expire)
    rt.store.put(session)
    log.info("signed in", extra={"fields": {"user": session.user_id, "session": session.id[:8]}})
    response = _handoff(rt, session, state.target, state.callback_host, now)
    own = handle_for(rt, session, rt.config.authenticate_host, now)
    lifetime = int(rt.config.cookie_expire)
    response.headers.append("set-cookie", cookies.set_cookie(rt.config, auth_cookie(rt), own, lifetime))
    response.headers.append("set-cookie", cookies.clear_cookie(rt.config, name))
    return response


# -- route hosts ----------------------------------------------------------------------------------


async def route_callback(request: Request) -> Response:
    """`/.pomerium/callback/`: redeem a handoff once and set this host's session cookie."""
    ctx = context(request)
    rt, now = ctx.rt, ctx.now
    try:
        handoff = Handoff.from_wire(rt.handoff.open(query_param(ctx.query, "pomerium_handoff") or ""))
    except ValueError:
        raise BadRequest("the sign-in handoff is invalid") from None
    if handoff.expires_at < now:
        raise BadRequest("the sign-in handoff has expired; please sign in again")
    if handoff.host != ctx.hostname:
        raise BadRequest("the sign-in handoff was issued for another host")
    if not rt.store.claim_once(f"handoff:{handoff.jti}", handoff.expires_at + 60, now):
        raise BadRequest("this sign-in handoff was already used")
    session = rt.store.get(handoff.session_id, now)
    if session is None or session.user_id != handoff.user_id:
        raise BadRequest("the session of this sign-in no longer exists; please sign in again")
    token = handle_for(rt, session, ctx.hostname, now)
    if handoff.programmatic:
        target = _programmatic_target(rt, handoff.target)
        separator = "&" if urlsplit(target).query else "?"
        return redirect(f"{target}{separator}{urlencode({'pomerium_jwt': token})}")
    check_target(rt, handoff.target)
    cookie = cookies.set_cookie(rt.config, rt.config.cookie_name, token, int(rt.config.cookie_expire))
    return redirect(handoff.target, cookie)


async def programmatic_login(request: Request) -> Response:
    """`/.pomerium/api/v1/login`: a signed sign-in URL (text/plain) for a CLI's local redirect."""
    ctx = context(request)
    target = query_param(ctx.query, "pomerium_redirect_uri")
    if not target:
        raise BadRequest("pomerium_redirect_uri is required")
    _programmatic_target(ctx.rt, target)
    url = sign_in_url(ctx.rt, target, ctx.now, {"pomerium_callback_host": ctx.route_origin + "/"})
    return respond(200, url, [("content-type", TEXT), NO_STORE])
