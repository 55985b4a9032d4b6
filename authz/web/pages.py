"""Error answers people and programs can read: HTML pages and JSON bodies, never a traceback.

Every HTML page is a Jinja2 template under `templates/`, autoescaped: a page template renders the
content, and `base.html` (the one layout: the brand, a card, inline CSS) frames it. A `Theme` is
the layout in one config's `branding`, with the Content-Security-Policy that admits exactly its
stylesheet (by hash) and its logo and favicon; the Runtime holds it, and `DEFAULT` is the plain look.
`error_body` runs on the Check's hot path (every deny and every login redirect), so the
Environment is built and every template compiled once, at import; a Theme renders the layout once
per heading and keeps the text before and after the content. An error page without one-off
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
from urllib.parse import urlsplit

from jinja2 import Environment, PackageLoader, StrictUndefined, Template
from markupsafe import Markup

from authz.config.model import Branding
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


# What every answer of authz's sidecar carries, whatever the config (its server sends them on
# each), and what the Check adds to its HTML pages: no framing, no content sniffing, and no Referer
# from pages whose URLs carry codes. The Content-Security-Policy comes with them from the `Theme`.
STATIC_HEADERS = (
    ("x-frame-options", "DENY"), ("x-content-type-options", "nosniff"), ("referrer-policy", "no-referrer"),
)  # fmt: skip
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


def _luminance(color: str) -> float:
    """WCAG 2's relative luminance of "#rrggbb"."""
    channels = [int(color[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    r, g, b = (c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


_DARK_INK = "#1f2328"  # the layout's text colour


def ink_on(color: str) -> str:
    """White or the layout's dark text on a `color` background, whichever contrasts more (WCAG 2)."""
    light = 1.05 / (_luminance(color) + 0.05)
    dark = (_luminance(color) + 0.05) / (_luminance(_DARK_INK) + 0.05)
    return "#fff" if light >= dark else _DARK_INK


def branded_css(branding: Branding) -> str:
    """The rules a branding adds after the layout's stylesheet ("" for the plain look). Colours are
    validated "#rrggbb" (authz/config/branding.py), so nothing here can carry CSS of its own."""
    if branding == _PLAIN:
        return ""
    rules = [".brand{overflow-wrap:anywhere}"]  # a long name wraps rather than widening a phone's page
    if branding.logo_url:
        rules.append(".brand{display:flex;flex-wrap:wrap;align-items:center;gap:.5rem}"
                     ".brand img{display:block;max-width:10rem;max-height:2.5rem;width:auto;height:auto}")  # fmt: skip
    if color := branding.primary_color:
        rules.append(f".card{{border-top:4px solid {color}}}"
                     f"button{{border-color:{color};background:{color};color:{ink_on(color)}}}")  # fmt: skip
    if branding.secondary_color:
        rules.append(f"a{{color:{branding.secondary_color}}}")
    return "".join(rules)


def image_source(url: str) -> str:
    """A CSP source for exactly this image: scheme, host, port and path (CSP matches no query)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


_PLAIN = Branding()


class Theme:
    """The look of one config's pages: the layout rendered with its branding, and the
    Content-Security-Policy that lets exactly that layout's stylesheet and images load.

    The Runtime holds one (`theme(config.branding)`); the plain look is `DEFAULT`. The layout is
    rendered once per heading, and an error page without one-off content once per status and
    reasons, and kept on the theme: a reload with another branding gets a fresh one.
    """

    __slots__ = ("_frames", "_layout_values", "_shell", "branding", "csp", "csp_header", "frame_denied", "headers")

    def __init__(self, branding: Branding = _PLAIN) -> None:
        self.branding = branding
        self._layout_values: dict[str, Any] = {
            "brand_name": branding.name, "logo_url": branding.logo_url, "favicon_url": branding.favicon_url,
            "branded_css": branded_css(branding),  # no character autoescaping would change: see branded_css
        }  # fmt: skip
        self._frames: dict[str, tuple[str, str]] = {}
        rendered = self._render_layout("", "")
        css = rendered.split("<style>", 1)[1].split("</style>", 1)[0]
        style = f"'sha256-{base64.b64encode(hashlib.sha256(css.encode()).digest()).decode()}'"
        images = dict.fromkeys(image_source(u) for u in (branding.logo_url, branding.favicon_url) if u)
        img = f"; img-src {' '.join(images)}" if images else ""
        # Nothing but that stylesheet (and the brand's images) loads: no script at all, inline or
        # not, no plugin, no <base>; and no site may frame the pages (their forms must not be
        # clicked through from under another page).
        self.csp = f"default-src 'none'; style-src {style}{img}; base-uri 'none'; frame-ancestors 'none'"
        self.csp_header = ("content-security-policy", self.csp)
        self.frame_denied = (("x-frame-options", "DENY"), self.csp_header)
        self.headers = (*self.frame_denied, *STATIC_HEADERS[1:])  # what an HTML answer of the Check carries
        self._shell = functools.lru_cache(maxsize=512)(self._error_shell)

    def _render_layout(self, heading: str, content: str) -> str:
        return _render(_LAYOUT, {**self._layout_values, "heading": heading, "content": content})

    def _frame(self, heading: str) -> tuple[str, str]:
        """The layout before and after the content, for one heading (a handful: one per status and page)."""
        frame = self._frames.get(heading)
        if frame is None:
            before, found, after = self._render_layout(heading, _CONTENT).partition(_CONTENT)
            assert found, "base.html must show {{ content }}"
            frame = self._frames[heading] = (before, after)
        return frame

    def _page(self, heading: str, template: Template, values: dict[str, Any]) -> str:
        before, after = self._frame(heading)
        return before + valid_text(_render(template, values)) + after

    def error_body(
        self,
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
        intro = self.branding.error_message_first_paragraph if status >= 400 else ""
        if detail or details or access:  # one-off pages (a refused request's detail, an evaluation trace, a form)
            values = _error_values(reasons, request_id, sign_in_url, account, intro, detail, details, access)
            return HTML, self._page(heading, _ERROR, values)
        filled = {"request-id": request_id, "sign-in-url": sign_in_url or "", "account": account or ""}
        pieces = self._shell(heading, tuple(reasons), bool(sign_in_url), bool(account), intro)
        # Even pieces are the shell's text, odd ones the names of its slots.
        slots = [_escape(valid_text(filled[piece])) for piece in pieces[1::2]]
        return HTML, "".join([piece if i % 2 == 0 else slots[i // 2] for i, piece in enumerate(pieces)])

    def _error_shell(
        self, heading: str, reasons: tuple[str, ...], with_sign_in: bool, with_account: bool, intro: str
    ) -> tuple[str, ...]:
        """The error page for a heading and reasons, split at its slots: text, slot name, text, ..."""
        sign_in = _SLOTS["sign-in-url"] if with_sign_in else None
        account = _SLOTS["account"] if with_account else None
        page = self._page(heading, _ERROR, _error_values(reasons, _SLOTS["request-id"], sign_in, account, intro))
        return tuple(_SLOT.split(page))

    def account_page(self, template: str, heading: str, **values: Any) -> str:
        """An account page (`user`, `sign_out`, `signed_out`, `jit`, `jit_requested`) in the layout, as HTML text."""
        return self._page(heading, _PAGES[template], values)


def _error_values(
    reasons: Sequence[str],
    request_id: str,
    sign_in_url: str | None,
    account: str | None,
    intro: str,
    detail: str | None = None,
    details: Sequence[tuple[str, str]] = (),
    access: AccessForm | None = None,
) -> dict[str, Any]:
    return {
        "access": access,
        "detail": detail,
        "intro": intro,
        "reasons": [(r, explain(r)) for r in reasons],
        "sign_in_url": sign_in_url,
        "account": account,
        "details": details,
        "request_id": request_id,
    }


@functools.lru_cache(maxsize=8)
def theme(branding: Branding) -> Theme:
    """The Theme of a branding, shared by the Runtimes of configs that have the same one."""
    return Theme(branding)


DEFAULT = theme(_PLAIN)  # authz's plain look: what a config without branding shows
CONTENT_SECURITY_POLICY = DEFAULT.csp  # the plain look's policy
