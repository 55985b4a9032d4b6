"""Error answers people and programs can read: HTML pages and JSON bodies, never a traceback.

Every HTML page is a Jinja2 template under `templates/`, autoescaped: a page template renders the
content, and `base.html` (the one layout: product name, a card, inline CSS) frames it.
`error_body` runs on the Check's hot path (every deny and every login redirect), so the
Environment is built and every template compiled once, at import, and the layout is rendered once
per heading and kept as the text before and after the content. An error page without one-off
content is rendered once per status and reasons with slots for the request id, sign-in link and
account, split at the slots once, which a call fills in, escaped as autoescaping would: no template runs per request.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, Template
from markupsafe import Markup

from authz.policy.reasons import explain
from authz.web.negotiate import Format

STATUS_TEXT = {
    302: "Found",
    400: "Bad Request",
    401: "Unauthenticated",
    403: "Forbidden",
    404: "Not Found",
    495: "Client Certificate Required",  # a valid client certificate, as Pomerium answers (nginx's 495)
    503: "Service Unavailable",
}
GRPC_STATUS = {400: 13, 401: 16, 403: 7, 404: 12, 495: 16, 503: 14}
HTML = "text/html; charset=utf-8"

_ENV = Environment(
    loader=PackageLoader("authz.web", "templates"),
    autoescape=True,
    auto_reload=False,  # templates ship with the package: never stat them per render
    undefined=StrictUndefined,  # a misspelt variable is a fault in tests, not an empty string
    trim_blocks=True,
    lstrip_blocks=True,
)
# The templates use none of Jinja's default globals (range, lipsum, cycler...), and merging them
# into every render's context was a third of the cost of a 302 body.
_ENV.globals.clear()
_LAYOUT = _ENV.get_template("base.html")


def _style_source() -> str:
    """The CSP source of the layout's one inline stylesheet: its SHA-256, as rendered (no page has
    any other style, script, image, font or frame)."""
    rendered = _LAYOUT.render(heading="", content="")
    css = rendered.split("<style>", 1)[1].split("</style>", 1)[0]
    return f"'sha256-{base64.b64encode(hashlib.sha256(css.encode()).digest()).decode()}'"


# Nothing but that stylesheet loads on authz's pages: no script at all (inline or not), no plugin,
# no <base>; and no site may frame them (their forms must not be clicked through from under another page).
CONTENT_SECURITY_POLICY = f"default-src 'none'; style-src {_style_source()}; base-uri 'none'; frame-ancestors 'none'"
FRAME_DENIED = (("x-frame-options", "DENY"), ("content-security-policy", CONTENT_SECURITY_POLICY))
# What every page of authz's carries (the sidecar's server adds them to every answer; the Check to
# its HTML ones): the above, no content sniffing, and no Referer from pages whose URLs carry codes.
PAGE_HEADERS = (*FRAME_DENIED, ("x-content-type-options", "nosniff"), ("referrer-policy", "no-referrer"))
# A year, for this host only: includeSubDomains or preload would bind every name under the parent
# domain, which is not authz's to decide. Sent only where the client's connection was TLS.
HSTS = ("strict-transport-security", "max-age=31536000")
_ERROR = _ENV.get_template("error.html")
_PAGES = {
    name: _ENV.get_template(f"{name}.html") for name in ("user", "sign_out", "signed_out", "jit", "jit_requested")
}
# Stands for the content while the layout is rendered once per heading; no page can contain it,
# because autoescaping turns every "<" of a value into "&lt;".
_CONTENT = Markup("<authz-content>")


# The per-request values of an error page. Its shell (everything else) is rendered once per status,
# reasons and which values are present, with these slots standing in; a call then fills the slots
# with the values, escaped exactly as autoescaping would, in one pass (a value is never rescanned).
_SLOTS = {"request-id": Markup("<authz-request-id>"), "sign-in-url": Markup("<authz-sign-in-url>"),
          "account": Markup("<authz-account>")}  # fmt: skip
_SLOT = re.compile(r"<authz-(request-id|sign-in-url|account)>")


def _escape(value: str) -> str:
    """markupsafe's escaping, character for character (a test compares with the rendered template).

    Five str.replace calls scan in C; markupsafe.escape would build a Markup object per value, and
    str.translate with multi-character replacements looks every character up in a dict.
    """
    if not value:
        return value
    value = value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return value.replace("'", "&#39;").replace('"', "&#34;")


def valid_text(value: str) -> str:
    """`value` as UTF-8 can carry it: a lone surrogate (JSON's `"\\ud800"` in an IdP's claim)
    becomes `?` rather than failing the page's encoding."""
    if value.isascii():
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-8", "replace").decode("utf-8")
    return value


def _render(template: Template, values: dict[str, Any]) -> str:
    """`template.render(values)` without merging the environment's globals (there are none)."""
    return "".join(template.root_render_func(_ENV.context_class(_ENV, values, template.name, template.blocks)))


@functools.cache
def _frame(heading: str) -> tuple[str, str]:
    """The layout before and after the content, for one heading (a handful: one per status and page)."""
    before, found, after = _render(_LAYOUT, {"heading": heading, "content": _CONTENT}).partition(_CONTENT)
    assert found, "base.html must show {{ content }}"
    return before, after


def _page(heading: str, template: Template, values: dict[str, Any]) -> str:
    before, after = _frame(heading)
    return before + valid_text(_render(template, values)) + after


@dataclass(frozen=True, slots=True)
class AccessForm:
    """The 403 page's request for just-in-time access (a route with `jit`, a signed-in user)."""

    route: str
    token: str  # the form's CSRF token (`authz.web.csrf`, purpose "jit-request")
    default_duration: str  # Go-style
    max_duration: str
    reason_required: bool
    requests_page: str  # {authenticate_service_url}/.pomerium/jit: the user's requests

    def to_json(self) -> dict[str, object]:
        return {"route": self.route, "api": "/.pomerium/api/v1/grants", "default_duration": self.default_duration,
                "max_duration": self.max_duration, "reason_required": self.reason_required}  # fmt: skip


def error_body(
    status: int,
    reasons: Sequence[str],
    request_id: str,
    fmt: Format,
    *,
    sign_in_url: str | None = None,
    detail: str | None = None,
    account: str | None = None,
    details: Sequence[tuple[str, str]] = (),
    access: AccessForm | None = None,
) -> tuple[str, str]:
    """(content type, body) for a denied request.

    `account` names who is signed in (HTML only); `details` are rows for routes with
    `show_error_details` (HTML, and a "details" object in JSON where a repeated name keeps its last value);
    `access` offers a just-in-time access request (a form in HTML, `request_access` in JSON).
    """
    title = STATUS_TEXT.get(status, "Error")
    if fmt is Format.JSON or fmt is Format.GRPC:
        data: dict[str, object] = {
            "status": status,
            "error": title,
            "reasons": list(reasons),
            "request_id": request_id,
        }
        if sign_in_url:
            data["sign_in_url"] = sign_in_url
        if detail:
            data["detail"] = detail
        if details:
            data["details"] = dict(details)
        if access:
            data["request_access"] = access.to_json()
        return "application/json", json.dumps(data)
    if fmt is Format.TEXT:
        lines = [f"{status} {title}", *(f"reason: {r}" for r in reasons), f"request id: {request_id}"]
        return "text/plain; charset=utf-8", "\n".join(lines) + "\n"
    heading = f"{status} {title}"
    if detail or details or access:  # one-off pages (a refused request's detail, an evaluation trace, a form)
        values = _error_values(reasons, request_id, sign_in_url, account, detail, details, access)
        return HTML, _page(heading, _ERROR, values)
    filled = {"request-id": request_id, "sign-in-url": sign_in_url or "", "account": account or ""}
    pieces = _error_shell(heading, tuple(reasons), bool(sign_in_url), bool(account))
    # Even pieces are the shell's text, odd ones the names of its slots.
    slots = [_escape(valid_text(filled[piece])) for piece in pieces[1::2]]
    return HTML, "".join([piece if i % 2 == 0 else slots[i // 2] for i, piece in enumerate(pieces)])


def _error_values(
    reasons: Sequence[str],
    request_id: str,
    sign_in_url: str | None,
    account: str | None,
    detail: str | None = None,
    details: Sequence[tuple[str, str]] = (),
    access: AccessForm | None = None,
) -> dict[str, Any]:
    return {
        "access": access,
        "detail": detail,
        "reasons": [(r, explain(r)) for r in reasons],
        "sign_in_url": sign_in_url,
        "account": account,
        "details": details,
        "request_id": request_id,
    }


@functools.lru_cache(maxsize=512)
def _error_shell(heading: str, reasons: tuple[str, ...], with_sign_in: bool, with_account: bool) -> tuple[str, ...]:
    """The error page for a heading and reasons, split at its slots: text, slot name, text, ..."""
    sign_in = _SLOTS["sign-in-url"] if with_sign_in else None
    account = _SLOTS["account"] if with_account else None
    page = _page(heading, _ERROR, _error_values(reasons, _SLOTS["request-id"], sign_in, account))
    return tuple(_SLOT.split(page))


def account_page(template: str, heading: str, **values: Any) -> str:
    """An account page (`user`, `sign_out`, `signed_out`) in the layout, as HTML text."""
    return _page(heading, _PAGES[template], values)
