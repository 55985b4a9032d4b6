"""Sign-in: the signed entry link, the IdP round trip, and the one-time handoff to a route host.

route host ──302──► authenticate /.pomerium/sign_in (signed, 5 min; binding cookie set on the
                    route host, its digest in the signed link)
           ──302──► IdP (state, nonce, PKCE S256; CSRF cookie per attempt)
           ──302──► authenticate /oauth2/callback (state + CSRF cookie + age, code exchange,
                    ID token, userinfo, session stored, `_pomerium_authenticate` set)
           ──302──► route host /.pomerium/callback/?pomerium_handoff=… (one-time, 60 s, redeemed
                    only with the binding cookie: the browser that started the sign-in)
           ──302──► the original URL, with `_pomerium` set for that host

Cookie names (and their `__Host-` prefix) come from `authz.web.cookies.CookieNames`. Every URL
back to a route host uses the route's scheme and configured port, never the request's.

The endpoints take a Starlette request and work with its `Context` (the Runtime and time read
when it arrived); the helpers take the Runtime explicitly and are shared with `account`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import json
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
from authz.errors import BadRequest, Busy, IdpRefused, InvalidIdToken, RequestError
from authz.identity.claims import merge_identity, new_session
from authz.jit.model import JIT_PAGE
from authz.runtime.state import Runtime
from authz.sessions.codec import HandleCodec
from authz.sessions.payloads import CsrfCookie, Handoff, LoginAttempt, LoginState
from authz.sessions.session import Session, SessionHandle
from authz.sessions.stores import MAX_STASH_VALUE
from authz.signing import signed_url
from authz.web import binding, cookies
from authz.web.context import Context, context
from authz.web.responses import NO_STORE, TEXT, redirect, respond

log = logging.getLogger("authz.web.login")

STATE_MAX_AGE = 600
HANDOFF_LIFETIME = 60
# A return URL up to this long travels sealed with the sign-in (CSRF cookie, handoff); a longer one
# waits in the store (`SessionStore.stash`, bounded).
INLINE_TARGET = 1024
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
    # Origins are compared normalised (default ports omitted): a target on any other port than
    # the configured one is refused, so a sign-in never lands on a port someone else listens on.
    if (None if port == _DEFAULT_PORT[url.scheme] else port) != route.port:
        raise BadRequest("the redirect target's port is not its route's")
    if url.path and not url.path.startswith("/"):
        raise BadRequest("the redirect target's path is not absolute")
    return route, origin(url.scheme, url.hostname, route.port)


_DEFAULT_PORT = {"http": 80, "https": 443}


def is_own_page(rt: Runtime, target: str) -> bool:
    """Whether a sign-in returns to the authenticate host's own page (`/.pomerium/jit`), which
    needs no handoff: the authenticate host's cookie is its session. Only that exact URL."""
    return target == f"{rt.config.authenticate_service_url}{JIT_PAGE}"


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def programmatic_allowed(allowed: tuple[str, ...], host: str) -> bool:
    """`programmatic_redirect_domain_whitelist`: exact host names, `*.example.com` for subdomains
    only when written so, and `localhost` also admits loopback IP literals (127.0.0.0/8, ::1)."""
    for entry in allowed:
        if entry.startswith("*."):
            if host.endswith(entry[1:]) and len(host) > len(entry) - 1:
                return True
        elif host == entry or (entry == "localhost" and _loopback(host)):
            return True
    return False


def _programmatic_target(rt: Runtime, target: str) -> str:
    """A programmatic client's local redirect: an allowed host, never a route or the authenticate host
    (a session token must not land in an upstream's query string). It keeps its port."""
    if _UNSAFE.search(target):
        raise BadRequest("the redirect target contains characters that are not allowed")
    try:
        url = urlsplit(target)
        url.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise BadRequest("the redirect target is not a valid URL") from None
    host = (url.hostname or "").rstrip(".")
    if (
        url.scheme not in ("http", "https")
        or "@" in url.netloc
        or not programmatic_allowed(rt.config.programmatic_redirect_domain_whitelist, host)
    ):
        raise BadRequest("the programmatic redirect target is not in programmatic_redirect_domain_whitelist")
    if host == rt.config.authenticate_host or rt.route_for_host(host) is not None:
        raise BadRequest("a programmatic redirect target must not be a route or the authenticate host")
    return target


# -- shared with sign-out and the user pages ------------------------------------------------------


def sign_in_url(rt: Runtime, target: str, now: float, extra: Mapping[str, str] | None = None) -> str:
    """A signed link to the authenticate host's sign-in for `target`."""
    return signed_url.sign(rt.url_key, rt.sign_in_endpoint, target, now, extra)


def sign_in_from_route_host(ctx: Context, target: str) -> Response:
    """302 to sign in for `target`, bound to this browser by a binding cookie on this route host."""
    rt = ctx.rt
    bound, lines = binding.begin(rt.cookies, ctx.now, find_credentials(ctx.headers, rt.cookies).bindings)
    return redirect(sign_in_url(rt, target, ctx.now, {"pomerium_binding": bound}), *lines)


def auth_cookie(rt: Runtime) -> str:
    """The authenticate host's own session cookie: `<cookie_name>_authenticate` (`__Host-` when secure)."""
    return rt.cookies.authenticate


def authenticate_session(ctx: Context) -> Session | None:
    """The authenticate host's session from its cookie, if live. Only the authenticate host's own
    codec opens it, and a route cookie never opens here (nor this one on a route host)."""
    rt = ctx.rt
    name = auth_cookie(rt)
    # Every one the browser sent: a planted one naming another user cancels out (no session), as
    # on route hosts, rather than the first one deciding whose session every sign-in hands off.
    tokens = [value for key, value in cookies.pairs(ctx.headers.get("cookie", "")) if key == name]
    if not tokens:
        return None
    return rt.load_session(tokens, rt.config.authenticate_host, ctx.now, rt.auth_codec)


def route_session(ctx: Context) -> Session | None:
    """The route host's session, found and opened by the same code as Check."""
    tokens = find_credentials(ctx.headers, ctx.rt.cookies).tokens
    return ctx.rt.load_session(tokens, ctx.hostname, ctx.now) if tokens else None


def handle_for(rt: Runtime, session: Session, hostname: str, now: float, codec: HandleCodec | None = None) -> str:
    """A sealed route-session handle for `hostname` (or for `cookie_domain` when it covers the host):
    the route cookie's, or with `codec` a programmatic token's."""
    domain = rt.config.cookie_domain
    host = f".{domain.lstrip('.')}" if domain and hostname.endswith(domain.lstrip(".")) else hostname
    return (codec or rt.codec).seal(SessionHandle(session.id, session.user_id, host, int(now), session.expires_at))


def authenticate_handle(rt: Runtime, session: Session, now: float) -> str:
    """The authenticate host's handle: host-only even with cookie_domain, sealed for its own purpose."""
    handle = SessionHandle(session.id, session.user_id, rt.config.authenticate_host, int(now), session.expires_at)
    return rt.auth_codec.seal(handle)


def _csrf_cookie_name(rt: Runtime, state_digest: str) -> str:
    return f"{rt.cookies.csrf_prefix}{state_digest[:8]}"


def _handoff(rt: Runtime, session: Session, target: str, callback_host: str, bound: str, now: float) -> Response:
    """Send the browser to the route host's callback with a sealed, one-time handoff."""
    _, target_origin = check_target(rt, callback_host or target)
    hostname = urlsplit(target_origin).hostname or ""
    if not callback_host and not bound:
        raise BadRequest("this sign-in was not started from a route host; open the page you want and sign in there")
    handoff = Handoff(
        session_id=session.id,
        user_id=session.user_id,
        host=hostname,
        programmatic=bool(callback_host),
        expires_at=int(now) + HANDOFF_LIFETIME,
        jti=secrets.token_urlsafe(12),
        binding=bound,
    )
    # A target short enough rides in the handoff; a longer one (up to the sidecar's request limits)
    # waits in the store. Either way the handoff is redeemed once.
    if len(target) <= INLINE_TARGET:
        handoff = dataclasses.replace(handoff, target=target)
    elif len(target) > MAX_STASH_VALUE:
        raise BadRequest("the address to return to after sign-in is over 16 KiB long; open a shorter one")
    elif not rt.store.stash(f"handoff:{handoff.jti}", target, handoff.expires_at + 60):
        raise _too_many_long_targets()
    token = rt.handoff.seal(handoff.to_wire())
    return redirect(f"{target_origin}/.pomerium/callback/?{urlencode({'pomerium_handoff': token})}")


# -- the authenticate host ------------------------------------------------------------------------


async def sign_in(request: Request) -> Response:
    """`/.pomerium/sign_in`: check the signed link, then hand off a live session or go to the IdP."""
    ctx = context(request)
    rt, now = ctx.rt, ctx.now
    signed = signed_url.verify(rt.url_key, rt.sign_in_endpoint, ctx.query, now)
    callback_host = signed.extra.get("pomerium_callback_host", "")
    bound = signed.extra.get("pomerium_binding", "")
    own_page = not callback_host and is_own_page(rt, signed.target)
    if callback_host:
        _programmatic_target(rt, signed.target)
        check_target(rt, callback_host)
    elif not own_page:
        check_target(rt, signed.target)
    session = authenticate_session(ctx)
    if session is not None:
        if own_page:
            return redirect(signed.target)
        return _handoff(rt, session, signed.target, callback_host, bound, now)
    if rt.oidc is None:
        raise BadRequest("sign-in is not configured: set idp_provider_url and idp_client_id")
    meta = await rt.oidc.metadata()
    csrf, nonce = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    verifier = secrets.token_urlsafe(48)
    attempt = secrets.token_urlsafe(16)
    remember = LoginAttempt(signed.target, callback_host, bound)
    # What to remember rides in the browser's sealed CSRF cookie when short (nothing stored for
    # an anonymous request); a long return URL waits in the store, which bounds what it keeps.
    carried = len(signed.target) + len(callback_host) <= INLINE_TARGET
    if not carried:
        remembered = json.dumps(remember.to_wire())
        if len(remembered) > MAX_STASH_VALUE:
            raise BadRequest("the address to return to after sign-in is over 16 KiB long; open a shorter one")
        if not rt.store.stash(f"login:{attempt}", remembered, now + STATE_MAX_AGE + 60):
            raise _too_many_long_targets()
    state = rt.state.seal(LoginState(attempt, csrf, int(now)).to_wire())
    digest = hashlib.sha256(state.encode()).hexdigest()
    pinned = rt.csrf.seal(CsrfCookie(csrf, verifier, nonce, digest, remember if carried else None).to_wire())
    location = rt.oidc.authorization_url(meta, state=state, nonce=nonce, verifier=verifier)
    csrf_cookie = cookies.set_cookie(rt.config, _csrf_cookie_name(rt, digest), pinned, STATE_MAX_AGE, host_only=True)
    return redirect(location, csrf_cookie)


def _too_many_long_targets() -> Busy:
    return Busy(
        "too many sign-ins with very long return URLs are in progress; please try again in a few minutes,"
        " or open a shorter address"
    )


def _login_attempt(rt: Runtime, state: LoginState, pinned: CsrfCookie, now: float) -> LoginAttempt:
    """What this sign-in remembered, once: from the CSRF cookie (the state is then claimed as used)
    or taken from the store."""
    key = f"login:{state.attempt}"
    if pinned.attempt is not None:
        if not rt.store.claim_once(key, state.issued_at + STATE_MAX_AGE + 60, now):
            raise BadRequest("this sign-in link was already used")
        return pinned.attempt
    remembered = rt.store.take(key, now)
    if remembered is None:
        raise BadRequest("this sign-in link was already used")
    try:
        return LoginAttempt.from_wire(json.loads(remembered))
    except ValueError:
        raise BadRequest("the sign-in state is invalid") from None


async def oauth_callback(request: Request) -> Response:
    """`/oauth2/callback`: the IdP's answer; check state, CSRF cookie and age, then create the session."""
    ctx = context(request)
    try:
        response = await _callback(ctx)
    except RequestError as exc:
        ctx.rt.metrics.sign_in(str(exc.reason))
        raise
    except Exception:
        ctx.rt.metrics.sign_in("error")
        raise
    ctx.rt.metrics.sign_in("ok")
    return response


async def _callback(ctx: Context) -> Response:
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
    attempt = _login_attempt(rt, state, pinned, now)
    if rt.oidc is None:
        raise BadRequest("sign-in is not configured")
    meta = await rt.oidc.metadata()
    tokens = await rt.oidc.exchange(meta, code, pinned.verifier)
    if not tokens.id_token:
        raise InvalidIdToken("the identity provider returned no ID token")
    claims = await rt.oidc.verify(meta, tokens.id_token, pinned.nonce, now)
    info = await rt.oidc.userinfo(meta, tokens.access_token)
    # The rule every refresh uses too: checks userinfo's sub, and which email the IdP vouches for.
    identity = merge_identity(claims, info, allow_unverified_email=rt.config.allow_unverified_email)
    session = new_session(secrets.token_urlsafe(18), identity, tokens, now, rt.config.cookie_expire)
    rt.store.put(session)
    log.info("signed in", extra={"fields": {"user": session.user_id, "session": session.id[:8]}})
    if not attempt.callback_host and is_own_page(rt, attempt.target):
        response = redirect(attempt.target)  # the authenticate host's own page: its cookie is the session
    else:
        response = _handoff(rt, session, attempt.target, attempt.callback_host, attempt.binding, now)
    own = authenticate_handle(rt, session, now)
    lifetime = int(rt.config.cookie_expire)
    response.headers.append("set-cookie", cookies.set_cookie(rt.config, auth_cookie(rt), own, lifetime, host_only=True))
    response.headers.append("set-cookie", cookies.clear_cookie(rt.config, name, host_only=True))
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
    bound = None
    if not handoff.programmatic:
        # Login CSRF: only the browser that began this sign-in holds the binding cookie.
        bound = binding.find(find_credentials(ctx.headers, rt.cookies).bindings, handoff.binding, now)
        if bound is None:
            raise BadRequest(
                "this sign-in was not started in this browser (or took longer than 10 minutes);"
                " open the page you want and sign in again"
            )
    key = f"handoff:{handoff.jti}"
    if handoff.target:
        target = handoff.target if rt.store.claim_once(key, handoff.expires_at + 60, now) else None
    else:
        target = rt.store.take(key, now)
    if target is None:
        raise BadRequest("this sign-in handoff was already used")
    session = rt.store.get(handoff.session_id, now)
    if session is None or session.user_id != handoff.user_id:
        raise BadRequest("the session of this sign-in no longer exists; please sign in again")
    if handoff.programmatic:
        _programmatic_target(rt, target)
        token = handle_for(rt, session, ctx.hostname, now, rt.api_codec)
        separator = "&" if urlsplit(target).query else "?"
        return redirect(f"{target}{separator}{urlencode({'pomerium_jwt': token})}")
    token = handle_for(rt, session, ctx.hostname, now)
    check_target(rt, target)
    cookie = cookies.set_cookie(rt.config, rt.cookies.session, token, int(rt.config.cookie_expire))
    assert bound is not None
    return redirect(target, cookie, cookies.deletion(bound, secure=rt.cookies.secure))


async def programmatic_login(request: Request) -> Response:
    """`/.pomerium/api/v1/login`: a signed sign-in URL (text/plain) for a CLI's local redirect."""
    ctx = context(request)
    target = query_param(ctx.query, "pomerium_redirect_uri")
    if not target:
        raise BadRequest("pomerium_redirect_uri is required")
    _programmatic_target(ctx.rt, target)
    url = sign_in_url(ctx.rt, target, ctx.now, {"pomerium_callback_host": ctx.route_origin + "/"})
    return respond(200, url, [("content-type", TEXT), NO_STORE])
