"""The Check decision: route, session, policy, answer. No protobuf, socket or clock in here."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from authz.check.request import RequestContext, origin
from authz.config import Route
from authz.policy.ast import PolicyInput
from authz.policy.reasons import Reason
from authz.runtime.state import Runtime
from authz.sessions.session import Session
from authz.signing import assertion, signed_url
from authz.web import pages
from authz.web.negotiate import Format, is_browser, response_format
from authz.web.pages import GRPC_STATUS

_TEMPLATE = re.compile(r"\$\$|\$\{\s*([A-Za-z0-9_.]+)\s*\}|\$([A-Za-z_][A-Za-z0-9_.]*[A-Za-z0-9_])")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class Decision:
    """What to answer. Allowed: headers to set on / remove from the upstream request.
    Denied: the status, response headers and body sent back to the client."""

    allowed: bool
    status: int
    reasons: tuple[str, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    headers_to_remove: tuple[str, ...] = ()
    body: str = ""
    route_id: str = ""
    user: str = ""


@dataclass(frozen=True, slots=True)
class Credentials:
    """Session tokens found on the request, and where."""

    tokens: list[str]
    from_header: bool
    in_authorization: bool
    other_cookies: str | None  # the Cookie header without the session cookie; None if untouched


def find_credentials(headers: Mapping[str, str], cookie_name: str) -> Credentials:
    """Session tokens from `X-Pomerium-Authorization`, `Authorization` and the session cookie."""
    tokens: list[str] = []
    from_header = in_authorization = False
    if value := headers.get("x-pomerium-authorization", "").strip():
        tokens.append(value.removeprefix("Pomerium ").strip())
        from_header = True
    auth = headers.get("authorization", "").strip()
    if auth.startswith("Pomerium "):
        tokens.append(auth[len("Pomerium ") :].strip())
        from_header = in_authorization = True
    elif auth.startswith("Bearer Pomerium-"):
        tokens.append(auth[len("Bearer Pomerium-") :].strip())
        from_header = in_authorization = True
    other_cookies = None
    if cookie := headers.get("cookie"):
        kept, found = [], False
        for part in cookie.split(";"):
            name, eq, value = part.strip().partition("=")
            if eq and name == cookie_name:
                tokens.append(value.strip().strip('"'))
                found = True
            elif part.strip():
                kept.append(part.strip())
        if found:
            other_cookies = "; ".join(kept)
    return Credentials(tokens, from_header, in_authorization, other_cookies)


def route_url(route: Route, req: RequestContext) -> str:
    """The request's URL on the route host: `from`'s scheme, the request's host and port."""
    return origin(route.scheme, req.hostname, req.port) + req.raw_path


def render_template(template: str, values: Mapping[str, str]) -> str:
    """`${pomerium.jwt}` and `$pomerium.jwt` references; `$$` is a literal `$`; unknown refs ''."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return values.get(match.group(1) or match.group(2), "")

    return _TEMPLATE.sub(one, template)


def _clean(value: str) -> str:
    """Header values built from IdP data must not carry control characters."""
    return _CONTROL.sub("", value)


def error(
    status: int,
    reasons: tuple[str, ...],
    req: RequestContext,
    *,
    sign_in_url: str | None = None,
    detail: str | None = None,
    route_id: str = "",
    user: str = "",
    account: str | None = None,
) -> Decision:
    """A denied answer in the format the client asked for."""
    fmt = response_format(req.headers)
    content_type, body = pages.error_body(
        status, reasons, req.request_id, fmt, sign_in_url=sign_in_url, detail=detail, account=account
    )
    headers = [("content-type", content_type), ("cache-control", "no-store")]
    if req.request_id:
        headers.append(("x-request-id", req.request_id))
    if fmt is Format.GRPC:
        headers += [
            ("grpc-status", str(GRPC_STATUS.get(status, 2))),
            ("grpc-message", pages.STATUS_TEXT.get(status, "Error")),
        ]
    return Decision(False, status, reasons, tuple(headers), (), body, route_id, user)


def _login(rt: Runtime, route: Route, req: RequestContext, creds: Credentials, now: float) -> Decision:
    url = signed_url.sign(
        rt.url_key,
        f"{rt.config.authenticate_service_url}/.pomerium/sign_in",
        route_url(route, req),
        now,
    )
    reasons = (Reason.USER_UNAUTHENTICATED,)
    if not is_browser(req.headers, session_header=creds.from_header):
        return error(401, reasons, req, sign_in_url=url, route_id=route.id)
    _, body = pages.error_body(302, (), req.request_id, Format.HTML, sign_in_url=url)
    headers = (
        ("location", url),
        ("content-type", "text/html; charset=utf-8"),
        ("cache-control", "no-store"),
    )
    return Decision(False, 302, reasons, headers, (), body, route.id)


def _allow(
    rt: Runtime,
    route: Route,
    req: RequestContext,
    session: Session | None,
    creds: Credentials,
    reasons: tuple[str, ...],
    now: float,
) -> Decision:
    config = rt.config
    set_headers: list[tuple[str, str]] = []
    token = ""
    if route.id in rt.signing_routes:
        claims = assertion.build_claims(
            hostname=req.hostname,
            session=session,
            now=int(now),
            issuer_format=route.jwt_issuer_format,
            extra=tuple(claim for _, claim in config.jwt_claims_headers),
        )
        token = assertion.sign(config.signing_keys[0], claims)
        if route.pass_identity_headers:
            set_headers.append(("x-pomerium-jwt-assertion", token))
            set_headers.extend((h, _clean(v)) for h, v in assertion.claim_headers(config.jwt_claims_headers, claims))
    if route.set_request_headers:
        values = {
            "pomerium.jwt": token,
            "pomerium.id_token": session.id_token if session else "",
            "pomerium.access_token": session.access_token if session else "",
        }
        set_headers.extend((n, _clean(render_template(v, values))) for n, v in route.set_request_headers)
    set_names = {name.lower() for name, _ in set_headers}
    remove = [
        h for h in req.headers if (h.startswith("x-pomerium-") or h in rt.identity_headers) and h not in set_names
    ]
    if creds.in_authorization:
        remove.append("authorization")
    if creds.other_cookies is not None:
        if creds.other_cookies:
            set_headers.append(("cookie", creds.other_cookies))
        else:
            remove.append("cookie")
    user = session.user_id if session else ""
    return Decision(True, 200, reasons, tuple(set_headers), tuple(remove), "", route.id, user)


def decide(rt: Runtime, req: RequestContext, now: float) -> Decision:
    """Route → session → policy → answer, for one request at time `now`."""
    route = rt.config.routes_by_id.get(req.route_id)
    if route is None:
        return error(404, (Reason.ROUTE_NOT_FOUND,), req, route_id=req.route_id)
    creds = find_credentials(req.headers, rt.config.cookie_name)
    session = rt.load_session(creds.tokens, req.hostname, now) if creds.tokens else None
    verdict = route.policy.evaluate(PolicyInput(req, session, datetime.fromtimestamp(now, UTC)))
    if verdict.login:
        return _login(rt, route, req, creds, now)
    if not verdict.allowed:
        user = session.user_id if session else ""
        account = (session.email or session.user_id) if session else None
        return error(403, verdict.reasons, req, route_id=route.id, user=user, account=account)
    return _allow(rt, route, req, session, creds, verdict.reasons, now)
