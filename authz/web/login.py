"""Sign-in: the signed entry link, the IdP round trip, and the one-time handoff to a route host.

route host ──302──► authenticate /.pomerium/sign_in (signed, 5 min)
           ──302──► IdP (state, nonce, PKCE S256; CSRF cookie per attempt)
           ──302──► authenticate /oauth2/callback (state + CSRF cookie + age, code exchange,
                    ID token, userinfo, session stored, `_pomerium_authenticate` set)
           ──302──► route host /.pomerium/callback/?pomerium_handoff=… (one-time, 60 s)
           ──302──► the original URL, with `_pomerium` set for that host
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import time
from collections.abc import Mapping
from urllib.parse import parse_qs, urlencode, urlsplit

from authz.check.credentials import find_credentials
from authz.check.request import origin
from authz.config import Route
from authz.errors import BadRequest, IdpRefused, InvalidIdToken
from authz.identity.claims import merge_groups, session_from_claims
from authz.identity.oidc import OidcClient
from authz.runtime.state import Runtime
from authz.sessions.session import Session, SessionHandle
from authz.signing import signed_url
from authz.web import cookies
from authz.web.http11 import Request, Response

log = logging.getLogger("authz.web.login")

STATE_MAX_AGE = 600
HANDOFF_LIFETIME = 60
_UNSAFE = re.compile(r"[\x00-\x20\x7f\\]")


def query_param(request: Request, name: str) -> str | None:
    values = parse_qs(request.query, keep_blank_values=True).get(name)
    return values[0] if values and len(values) == 1 else None


def redirect(location: str, *set_cookies: str) -> Response:
    headers = [("location", location), ("cache-control", "no-store")]
    headers += [("set-cookie", c) for c in set_cookies]
    return Response(302, b"", headers)


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


class Login:
    """The sign-in endpoints, for one runtime and identity provider."""

    def __init__(self, rt: Runtime, oidc: OidcClient | None) -> None:
        self.rt = rt
        self.oidc = oidc
        self.sign_in_endpoint = f"{rt.config.authenticate_service_url}/.pomerium/sign_in"
        self.callback_url = f"{rt.config.authenticate_service_url}/oauth2/callback"
        self.auth_cookie = f"{rt.config.cookie_name}_authenticate"

    # -- shared with sign-out and the user pages ------------------------------------------------

    def sign_in_url(self, target: str, now: float, extra: Mapping[str, str] | None = None) -> str:
        return signed_url.sign(self.rt.url_key, self.sign_in_endpoint, target, now, extra)

    def authenticate_session(self, request: Request, now: float) -> Session | None:
        token = cookies.parse(request.headers.get("cookie", "")).get(self.auth_cookie)
        if not token:
            return None
        return self.rt.load_session([token], self.rt.config.authenticate_host, now)

    def route_session(self, request: Request, hostname: str, now: float) -> Session | None:
        """The route host's session, found and opened by the same code as Check."""
        tokens = find_credentials(request.headers, self.rt.config.cookie_name).tokens
        return self.rt.load_session(tokens, hostname, now) if tokens else None

    def handle_for(self, session: Session, hostname: str, now: float) -> str:
        domain = self.rt.config.cookie_domain
        host = f".{domain.lstrip('.')}" if domain and hostname.endswith(domain.lstrip(".")) else hostname
        return self.rt.codec.seal(SessionHandle(session.id, session.user_id, host, int(now), session.expires_at))

    # -- the authenticate host -------------------------------------------------------------------

    async def sign_in(self, request: Request) -> Response:
        now = time.time()
        signed = signed_url.verify(self.rt.url_key, self.sign_in_endpoint, request.query, now)
        callback_host = signed.extra.get("pomerium_callback_host", "")
        if callback_host:
            _programmatic_target(self.rt, signed.target)
            check_target(self.rt, callback_host)
        else:
            check_target(self.rt, signed.target)
        session = self.authenticate_session(request, now)
        if session is not None:
            return self._handoff(session, signed.target, callback_host, now)
        if self.oidc is None:
            raise BadRequest("sign-in is not configured: set idp_provider_url and idp_client_id")
        meta = await self.oidc.metadata()
        csrf, nonce = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        verifier = secrets.token_urlsafe(48)
        state = self.rt.state.seal({"t": signed.target, "c": csrf, "i": int(now), "p": callback_host})
        digest = hashlib.sha256(state.encode()).hexdigest()
        csrf_cookie = self.rt.csrf.seal({"c": csrf, "v": verifier, "n": nonce, "s": digest})
        name = f"{self.rt.config.cookie_name}_csrf_{digest[:8]}"
        location = self.oidc.authorization_url(meta, state=state, nonce=nonce, verifier=verifier)
        return redirect(location, cookies.set_cookie(self.rt.config, name, csrf_cookie, STATE_MAX_AGE))

    async def oauth_callback(self, request: Request) -> Response:
        now = time.time()
        error = query_param(request, "error")
        if error is not None:
            description = (query_param(request, "error_description") or "")[:200]
            raise IdpRefused(
                error[:64], f"the identity provider refused the sign-in: {error[:64]} {description}".strip()
            )
        state, code = query_param(request, "state"), query_param(request, "code")
        if not state or not code:
            raise BadRequest("the sign-in callback lacks its code or state")
        try:
            opened = self.rt.state.open(state)
            target, csrf, issued, callback_host = opened["t"], opened["c"], int(opened["i"]), str(opened["p"])
        except (ValueError, KeyError, TypeError):
            raise BadRequest("the sign-in state is invalid") from None
        if not issued <= now + 60 or now - issued > STATE_MAX_AGE:
            raise BadRequest("the sign-in took too long; please start again")
        digest = hashlib.sha256(state.encode()).hexdigest()
        name = f"{self.rt.config.cookie_name}_csrf_{digest[:8]}"
        raw_cookie = cookies.parse(request.headers.get("cookie", "")).get(name)
        try:
            pinned = self.rt.csrf.open(raw_cookie or "")
            ok = secrets.compare_digest(pinned["c"], csrf) and secrets.compare_digest(pinned["s"], digest)
            verifier, nonce = str(pinned["v"]), str(pinned["n"])
        except (ValueError, KeyError, TypeError):
            ok = False
        if not ok:
            raise BadRequest("this sign-in was not started in this browser (missing or wrong CSRF cookie)")
        if not self.rt.store.claim_once(f"state:{digest}", issued + STATE_MAX_AGE + 60, now):
            raise BadRequest("this sign-in link was already used")
        if self.oidc is None:
            raise BadRequest("sign-in is not configured")
        meta = await self.oidc.metadata()
        tokens = await self.oidc.exchange(meta, code, verifier)
        if not tokens.id_token:
            raise InvalidIdToken("the identity provider returned no ID token")
        claims = await self.oidc.verify(meta, tokens.id_token, nonce, now)
        info = await self.oidc.userinfo(meta, tokens.access_token)
        if info and info.get("sub") != claims["sub"]:
            raise InvalidIdToken("the identity provider's userinfo names another subject")
        groups = merge_groups(claims.get("groups"), info.get("groups"))
        session = session_from_claims(
            secrets.token_urlsafe(18), {**claims, **info}, tokens, now, self.rt.config.cookie_expire, groups
        )
        self.rt.store.put(session)
        log.info("signed in", extra={"fields": {"user": session.user_id, "session": session.id[:8]}})
        response = self._handoff(session, target, callback_host, now)
        response.headers.append(
            ("set-cookie", cookies.set_cookie(self.rt.config, self.auth_cookie,
                                              self.handle_for(session, self.rt.config.authenticate_host, now),
                                              int(self.rt.config.cookie_expire)))
        )  # fmt: skip
        response.headers.append(("set-cookie", cookies.clear_cookie(self.rt.config, name)))
        return response

    def _handoff(self, session: Session, target: str, callback_host: str, now: float) -> Response:
        """Send the browser to the route host's callback with a sealed, one-time handoff."""
        origin_url = callback_host or target
        _, target_origin = check_target(self.rt, origin_url)
        hostname = urlsplit(target_origin).hostname or ""
        token = self.rt.handoff.seal(
            {"s": session.id, "u": session.user_id, "h": hostname, "t": target, "p": bool(callback_host),
             "e": int(now) + HANDOFF_LIFETIME, "j": secrets.token_urlsafe(12)}
        )  # fmt: skip
        return redirect(f"{target_origin}/.pomerium/callback/?{urlencode({'pomerium_handoff': token})}")

    # -- route hosts -------------------------------------------------------------------------------

    async def route_callback(self, request: Request, hostname: str) -> Response:
        now = time.time()
        try:
            data = self.rt.handoff.open(query_param(request, "pomerium_handoff") or "")
            sid, uid, host, target = str(data["s"]), str(data["u"]), str(data["h"]), str(data["t"])
            expires, jti, programmatic = int(data["e"]), str(data["j"]), bool(data["p"])
        except (ValueError, KeyError, TypeError):
            raise BadRequest("the sign-in handoff is invalid") from None
        if expires < now:
            raise BadRequest("the sign-in handoff has expired; please sign in again")
        if host != hostname:
            raise BadRequest("the sign-in handoff was issued for another host")
        if not self.rt.store.claim_once(f"handoff:{jti}", expires + 60, now):
            raise BadRequest("this sign-in handoff was already used")
        session = self.rt.store.get(sid, now)
        if session is None or session.user_id != uid:
            raise BadRequest("the session of this sign-in no longer exists; please sign in again")
        token = self.handle_for(session, hostname, now)
        if programmatic:
            target = _programmatic_target(self.rt, target)
            separator = "&" if urlsplit(target).query else "?"
            return redirect(f"{target}{separator}{urlencode({'pomerium_jwt': token})}")
        check_target(self.rt, target)
        name = self.rt.config.cookie_name
        return redirect(target, cookies.set_cookie(self.rt.config, name, token, int(self.rt.config.cookie_expire)))

    def programmatic_login(self, request: Request, hostname: str, port: int | None) -> Response:
        """`/.pomerium/api/v1/login`: a signed sign-in URL (text/plain) for a CLI's local redirect."""
        target = query_param(request, "pomerium_redirect_uri")
        if not target:
            raise BadRequest("pomerium_redirect_uri is required")
        _programmatic_target(self.rt, target)
        route = self.rt.route_for_host(hostname)
        if route is None:
            raise BadRequest("not a route host")
        callback_host = origin(route.scheme, hostname, port) + "/"
        url = self.sign_in_url(target, time.time(), {"pomerium_callback_host": callback_host})
        return Response(
            200, url.encode(), [("content-type", "text/plain; charset=utf-8"), ("cache-control", "no-store")]
        )
