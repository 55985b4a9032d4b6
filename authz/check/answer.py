"""The answer step: an outcome becomes what Envoy sends — the signed assertion, claim headers,
header templates and headers to remove on allow; the 302/401/403/404 pages otherwise.

Signing and rendering live here, after the decision, so the decision stays pure and cheap.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass

from authz.check.facts import Action, Facts, Outcome
from authz.check.request import RequestContext, origin
from authz.config.model import Route
from authz.jit.model import JIT_PAGE, format_duration
from authz.policy.certificate import parse_leaf
from authz.policy.reasons import Reason
from authz.runtime.state import Runtime
from authz.signing import assertion, signed_url
from authz.web import binding, cookies, pages
from authz.web.csrf import form_token
from authz.web.negotiate import Format, is_browser, response_format
from authz.web.pages import GRPC_STATUS, HSTS, Theme

_TEMPLATE = re.compile(r"\$\$|\$\{\s*([A-Za-z0-9_.]+)\s*\}|\$([A-Za-z_][A-Za-z0-9_.]*[A-Za-z0-9_])")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_UNAUTHENTICATED = (Reason.USER_UNAUTHENTICATED,)
# Enum members as module globals: reading one through its class costs a metaclass lookup per Check.
_LOGIN, _DENY = Action.LOGIN, Action.DENY


@dataclass(frozen=True, slots=True)
class Answer:
    """What Envoy is told. Allowed: headers to set on / remove from the upstream request.
    Denied: the status, response headers and body sent back to the client."""

    allowed: bool
    status: int
    reasons: tuple[str, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    headers_to_remove: tuple[str, ...] = ()
    body: str = ""
    route_id: str = ""
    user: str = ""
    email: str = ""  # the session's, for the decision log


def route_url(route: Route, req: RequestContext) -> str:
    """The request's URL on the route host: `from`'s scheme and the configured port (`Route.port`),
    never the port the client put in Host: a sign-in must land where the config says."""
    return origin(route.scheme, req.hostname, route.port) + req.raw_path


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
    email: str = "",
    account: str | None = None,
    details: tuple[tuple[str, str], ...] = (),
    access: pages.AccessForm | None = None,
    theme: Theme,
) -> Answer:
    """A denied answer in the format the client asked for, an HTML one in the config's `theme`."""
    fmt = response_format(req.headers)
    content_type, body = theme.error_body(
        status,
        reasons,
        req.request_id,
        fmt,
        sign_in_url=sign_in_url,
        detail=detail,
        account=account,
        details=details,
        access=access,
    )
    headers = [("content-type", content_type), ("cache-control", "no-store")]
    if req.request_id:
        headers.append(("x-request-id", req.request_id))
    if fmt is Format.HTML:
        headers += theme.headers
    if fmt is Format.GRPC:
        headers += [
            ("grpc-status", str(GRPC_STATUS.get(status, 2))),
            ("grpc-message", pages.STATUS_TEXT.get(status, "Error")),
        ]
    return Answer(False, status, reasons, tuple(headers), (), body, route_id, user, email)


def _conflict_deletions(rt: Runtime, req: RequestContext) -> list[str]:
    """Deletions of the session cookie wherever a sibling host could have planted one: this host and
    each parent domain (up to `cookie_domain`), at Path=/ and at each prefix of the request path."""
    labels = req.hostname.split(".")
    stop = rt.config.cookie_domain.lstrip(".").lower()
    domains = [""]
    # Down to cookie_domain when set (it may be one label, as `localhost`), else to two labels.
    for i in range(len(labels) if stop else len(labels) - 1):
        domain = ".".join(labels[i:])
        domains.append(domain)
        if domain == stop:
            break
    paths = ["/"]
    segments = [s for s in req.path.split("/") if s][:8]
    for i in range(1, len(segments) + 1):
        prefix = "/" + "/".join(segments[:i])
        paths += [prefix, prefix + "/"]
    name, secure = rt.cookies.session, rt.cookies.secure
    return [cookies.deletion(name, domain=d, path=p, secure=secure) for d in domains for p in paths]


def _conflict(rt: Runtime, route: Route, facts: Facts) -> Answer:
    """Sessions of two users again after a sign-in meant to clear them: say so, never loop."""
    name = rt.cookies.session
    detail = (
        f"This browser holds several '{name}' cookies that belong to different users; one was probably set"
        f" by another site under the same domain. Clear this site's cookies ({facts.request.hostname} and"
        " its parent domains) and sign in again."
    )
    return error(400, (Reason.BAD_REQUEST,), facts.request, detail=detail, route_id=route.id, theme=rt.theme)


def _login(rt: Runtime, route: Route, facts: Facts, now: float) -> Answer:
    req, creds = facts.request, facts.credentials
    target = route_url(route, req)
    reasons = _UNAUTHENTICATED
    # Programs get a 401 they can act on; only a browser can follow a redirect to a login page.
    if not is_browser(req.headers, session_header=creds.from_header):
        url = signed_url.sign(rt.url_key, rt.sign_in_endpoint, target, now)
        return error(401, reasons, req, sign_in_url=url, route_id=route.id, theme=rt.theme)
    if facts.conflict and creds.conflict_marked:
        return _conflict(rt, route, facts)
    bound, set_cookies = binding.begin(rt.cookies, now, creds.bindings)
    url = signed_url.sign(rt.url_key, rt.sign_in_endpoint, target, now, {"pomerium_binding": bound})
    if facts.conflict:
        set_cookies += _conflict_deletions(rt, req)
        set_cookies.append(cookies.binding_cookie(rt.cookies, rt.cookies.conflict, "1", binding.LIFETIME))
    _, body = rt.theme.error_body(302, (), req.request_id, Format.HTML, sign_in_url=url)
    headers = (
        ("location", url),
        ("content-type", "text/html; charset=utf-8"),
        ("cache-control", "no-store"),
        *rt.theme.headers,
        *(("set-cookie", line) for line in set_cookies),
    )
    return Answer(False, 302, reasons, headers, (), body, route.id)


XFCC = "x-forwarded-client-cert"
_NO_CERTIFICATE = {
    "pomerium.client_cert_fingerprint": "",
    "pomerium.client_cert_san_dns": "",
    "pomerium.client_cert_san_email": "",
}


def _certificate_values(facts: Facts) -> dict[str, str]:
    """The client certificate's header template values: empty without one, or (downstream_mtls)
    when authz found it invalid."""
    pem = facts.request.client_certificate
    leaf = parse_leaf(pem) if pem and (facts.certificate is None or facts.certificate.valid) else None
    if leaf is None:
        return _NO_CERTIFICATE
    return {
        "pomerium.client_cert_fingerprint": leaf.fingerprint,
        "pomerium.client_cert_san_dns": ",".join(leaf.dns),
        "pomerium.client_cert_san_email": ",".join(leaf.emails),
    }


def _allow(rt: Runtime, route: Route, facts: Facts, outcome: Outcome, now: float) -> Answer:
    config, req, session, creds = rt.config, facts.request, facts.session, facts.credentials
    set_headers: list[tuple[str, str]] = []
    token = ""
    if route.id in rt.signing_routes:
        claims = assertion.build_claims(
            hostname=req.hostname,
            session=session,
            now=int(now),
            issuer_format=route.jwt_issuer_format,
            extra=rt.extra_claims,
            groups_filter=rt.groups_filters[route.id],
            group_headers=rt.group_headers,
            not_after=outcome.grant.expires_at if outcome.grant is not None else None,
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
            **_certificate_values(facts),
        }
        set_headers.extend((n, _clean(render_template(v, values))) for n, v in route.set_request_headers)
    set_names = {name.lower() for name, _ in set_headers}
    # What the client sent in authz's name never reaches the upstream: identity headers are
    # authz's to set, and session credentials stay between the browser and authz. Headers that
    # would make the upstream read another path, method, host or client go too. So does any `_`
    # spelling of those, of what authz sets here and of Envoy's own headers: CGI-style servers (WSGI,
    # PHP) read `_` as `-`, and an Envoy left at its default (Contour's) passes such names.
    stripped = rt.stripped[route.id]
    identity = rt.identity_headers
    remove = []
    for h in req.headers:
        if "_" in h:
            name = h.replace("_", "-")
            if name.startswith(_ENVOY_SET) or name in identity or name in stripped or name in set_names:
                remove.append(h)
        elif (h.startswith("x-pomerium-") or h in identity or h in stripped) and h not in set_names:
            remove.append(h)
    if creds.in_authorization:
        remove.append("authorization")
    if facts.certificate is not None and not facts.certificate.valid:
        # enforcement: policy let a certificate authz found invalid through: the upstream must not
        # read Envoy's X-Forwarded-Client-Cert about it as if it had been verified.
        remove.append(XFCC)
    if creds.other_cookies is not None:
        if creds.other_cookies:
            set_headers.append(("cookie", creds.other_cookies))
        else:
            remove.append("cookie")
    user, email = (session.user_id, session.email) if session else ("", "")
    return Answer(True, 200, outcome.reasons, tuple(set_headers), tuple(remove), "", route.id, user, email)


# Prefixes of headers that authz or Envoy sets (x-forwarded-for, x-forwarded-proto, x-envoy-*): a
# client's `_` spelling of one is removed.
_ENVOY_SET = ("x-pomerium-", "x-forwarded-", "x-envoy-", "x-request-id")


def _trace(ok: bool, reasons: frozenset[str]) -> str:
    return f"{'matched' if ok else 'not matched'}: {', '.join(sorted(reasons)) or '-'}"


def error_details(route: Route, facts: Facts, outcome: Outcome) -> tuple[tuple[str, str], ...]:
    """What `show_error_details` adds to a denial (as Pomerium's error page shows its evaluation)."""
    req, session, verdict = facts.request, facts.session, outcome.verdict
    rows = [("route", route.id), ("request", f"{req.method} {req.hostname}{req.path}")]
    if req.source_ip:
        rows.append(("source ip", req.source_ip))
    if session is not None:
        rows.append(("user", f"{session.user_id} <{session.email}>" if session.email else session.user_id))
        if session.groups:
            rows.append(("groups", ", ".join(session.groups)))
    if verdict is not None:
        rows.append(("allow", _trace(verdict.allow, verdict.allow_reasons)))
        rows.append(("deny", _trace(verdict.deny, verdict.deny_reasons)))
    rows.append(("time", facts.now.isoformat()))
    return tuple(rows)


JIT_REQUEST = "jit-request"  # the purpose of the access request form's CSRF token


def access_form(rt: Runtime, route: Route, facts: Facts, outcome: Outcome) -> pages.AccessForm | None:
    """The just-in-time access request the 403 page offers: on a `jit` route, to a signed-in user
    whom no rule allowed and no deny rule refused (a grant would not override a deny rule)."""
    jit, session, verdict = route.jit, facts.session, outcome.verdict
    if jit is None or session is None or verdict is None or verdict.deny or outcome.status != 403:
        return None
    return pages.AccessForm(
        route=route.id,
        token=form_token(rt.form_key, JIT_REQUEST, facts.request.hostname, session.id),
        default_duration=format_duration(jit.default_duration),
        max_duration=format_duration(jit.max_duration),
        reason_required=jit.reason_required,
        requests_page=f"{rt.config.authenticate_service_url}{JIT_PAGE}",
    )


def _deny(rt: Runtime, route: Route | None, facts: Facts, outcome: Outcome) -> Answer:
    session = facts.session
    user = session.user_id if session else ""
    account = (session.email or session.user_id) if session else None
    if route is None:
        reasons, route_id = outcome.reasons, facts.request.route_id
        return error(outcome.status, reasons, facts.request, route_id=route_id, theme=rt.theme)
    details = error_details(route, facts, outcome) if route.show_error_details else ()
    detail = facts.refusal or None
    if outcome.status == 495 and facts.certificate is not None:
        detail = facts.certificate.detail or None
    if session is not None and session.unverified_email and detail is None:
        detail = (
            f"The identity provider has not verified the email address '{session.unverified_email}', so it"
            " does not count as who you are here. Verify it with your identity provider, then sign in again."
        )
    return error(
        outcome.status,
        outcome.reasons,
        facts.request,
        detail=detail,
        route_id=route.id,
        user=user,
        email=session.email if session else "",
        account=account,
        details=details,
        access=access_form(rt, route, facts, outcome),
        theme=rt.theme,
    )


def answer(rt: Runtime, facts: Facts, outcome: Outcome, now: float) -> Answer:
    """The answer for a decided outcome; `now` stamps the assertion and the sign-in link."""
    route = facts.route
    if route is None or outcome.action is _DENY:
        return _own_page(rt, _deny(rt, route, facts, outcome))
    if outcome.action is _LOGIN:
        return _own_page(rt, _login(rt, route, facts, now))
    return _allow(rt, route, facts, outcome, now)


def _own_page(rt: Runtime, page: Answer) -> Answer:
    """A denial is authz's own page: over a TLS listener (the config's, never the request's scheme)
    it asks browsers for HTTPS for a year (HSTS, for this host only)."""
    if rt.config.insecure_server:
        return page
    return dataclasses.replace(page, headers=(*page.headers, HSTS))
