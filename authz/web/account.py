"""Signed-in users' pages and sign-out: `/.pomerium/`, `/.pomerium/user`, `/.pomerium/sign_out`.

One login's route-host cookies all name one session, so deleting it ends every host at once;
an old cookie replayed afterwards finds no session.
"""

from __future__ import annotations

import html
import json
import logging
import time
from datetime import UTC, datetime

from authz.errors import BadRequest, IdpError
from authz.identity.claims import session_claims
from authz.identity.oidc import OidcClient
from authz.policy.reasons import Reason
from authz.runtime.state import Runtime
from authz.sessions.session import Session
from authz.signing import signed_url
from authz.web import cookies
from authz.web.http11 import Request, Response
from authz.web.login import Login, redirect
from authz.web.pages import html_page

log = logging.getLogger("authz.web.account")


def _page(status: int, title: str, body: str) -> Response:
    content_type, text = html_page(status, title, body)
    return Response(status, text.encode(), [("content-type", content_type), ("cache-control", "no-store")])


class Account:
    """User info and sign-out, on route hosts and on the authenticate host."""

    def __init__(self, rt: Runtime, login: Login, oidc: OidcClient | None) -> None:
        self.rt = rt
        self.login = login
        self.oidc = oidc
        base = rt.config.authenticate_service_url
        self.sign_out_endpoint = f"{base}/.pomerium/sign_out"
        self.signed_out_url = f"{base}/.pomerium/signed_out"

    # -- route hosts -------------------------------------------------------------------------------

    def user_page(self, request: Request, hostname: str, origin: str) -> Response:
        now = time.time()
        session = self.login.route_session(request, hostname, now)
        if session is None:
            return redirect(self.login.sign_in_url(f"{origin}/.pomerium/", now))
        expires = datetime.fromtimestamp(session.expires_at, UTC).strftime("%Y-%m-%d %H:%M UTC")
        rows = [
            ("Name", session.name),
            ("Email", session.email),
            ("User", session.user_id),
            ("Groups", ", ".join(session.groups) or "none"),
            ("Session expires", expires),
        ]
        table = "".join(f"<tr><th>{k}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
        body = (
            f"<table>{table}</table>"
            "<form method=post action='/.pomerium/sign_out'><p><button type=submit>Sign out</button></p></form>"
        )
        return _page(200, "Signed in", body)

    def user_json(self, request: Request, hostname: str) -> Response:
        session = self.login.route_session(request, hostname, time.time())
        if session is None:
            body = {"status": 401, "error": "Unauthenticated", "reasons": [Reason.USER_UNAUTHENTICATED]}
            return Response(401, json.dumps(body).encode(), [("content-type", "application/json")])
        headers = [("content-type", "application/json"), ("cache-control", "no-store")]
        return Response(200, json.dumps(session_claims(session)).encode(), headers)

    def route_sign_out(self, request: Request, hostname: str) -> Response:
        """Clear this host's cookie and continue, signed, to the authenticate host."""
        now = time.time()
        session = self.login.route_session(request, hostname, now)
        extra = {"pomerium_session": self.rt.signout.seal(session.id)} if session else {}
        target = self.rt.config.signout_redirect_url or self.signed_out_url
        location = signed_url.sign(self.rt.url_key, self.sign_out_endpoint, target, now, extra)
        return redirect(location, cookies.clear_cookie(self.rt.config, self.rt.config.cookie_name))

    # -- the authenticate host ---------------------------------------------------------------------

    async def sign_out(self, request: Request) -> Response:
        now = time.time()
        sessions: list[Session] = []
        target = self.rt.config.signout_redirect_url or self.signed_out_url
        if "pomerium_signature" in request.query:
            signed = signed_url.verify(self.rt.url_key, self.sign_out_endpoint, request.query, now)
            sealed = signed.extra.get("pomerium_session")
            if sealed:
                try:
                    sid = str(self.rt.signout.open(sealed))
                except ValueError:
                    raise BadRequest("the sign-out link is invalid") from None
                if (found := self.rt.store.get(sid, now)) is not None:
                    sessions.append(found)
        elif request.method != "POST":
            if self.login.authenticate_session(request, now) is None:
                return redirect(target)
            form = "<form method=post><p>Sign out of every site behind this gate?</p>"
            form += "<p><button type=submit>Sign out</button></p></form>"
            return _page(200, "Sign out", form)
        own = self.login.authenticate_session(request, now)
        if own is not None and all(own.id != s.id for s in sessions):
            sessions.append(own)
        id_token = await self._end(sessions)
        clear = cookies.clear_cookie(self.rt.config, self.login.auth_cookie)
        if self.oidc is not None:
            try:
                meta = await self.oidc.metadata()
            except IdpError:
                return redirect(target, clear)
            end = OidcClient.end_session_url(
                meta, id_token=id_token, client_id=self.oidc.idp.client_id, post_logout_redirect_uri=target
            )
            if end:
                return redirect(end, clear)
        return redirect(target, clear)

    async def _end(self, sessions: list[Session]) -> str:
        """Delete the sessions everywhere and revoke their tokens at the IdP; the last ID token."""
        id_token = ""
        for session in sessions:
            self.rt.store.delete(session.id)
            log.info("signed out", extra={"fields": {"user": session.user_id, "session": session.id[:8]}})
            id_token = session.id_token or id_token
            if self.oidc is None:
                continue
            try:
                meta = await self.oidc.metadata()
                await self.oidc.revoke(meta, session.refresh_token, "refresh_token")
                await self.oidc.revoke(meta, session.access_token, "access_token")
            except IdpError as exc:
                log.warning("token revocation failed", extra={"fields": {"error": str(exc)}})
        return id_token

    def signed_out(self) -> Response:
        return _page(200, "Signed out", "<p>You are signed out. You can close this window.</p>")
