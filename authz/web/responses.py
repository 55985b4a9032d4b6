"""Building the sidecar's answers: Starlette responses with exactly the headers given, in order."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from starlette.responses import Response

from authz.web.negotiate import response_format
from authz.web.pages import HTML, Theme

TEXT = "text/plain; charset=utf-8"
NO_STORE = ("cache-control", "no-store")


def respond(status: int, body: bytes | str = b"", headers: Iterable[tuple[str, str]] = ()) -> Response:
    """An answer with `headers` as given (repeatable, e.g. set-cookie) and a Content-Length."""
    response = Response(body, status_code=status)
    response.raw_headers.extend((name.encode("latin-1"), value.encode("latin-1")) for name, value in headers)
    return response


def text(status: int, body: str) -> Response:
    """A plain-text answer (the 404/405/413/500 bodies and /healthz)."""
    return respond(status, body, [("content-type", TEXT)])


def redirect(location: str, *set_cookies: str) -> Response:
    """302 to `location`, never cached, setting or clearing cookies on the way."""
    return respond(302, b"", [("location", location), NO_STORE, *(("set-cookie", c) for c in set_cookies)])


def page(theme: Theme, template: str, heading: str, **values: object) -> Response:
    """200: one of authz's pages in the config's look, with the CSP of that look (not of a config
    a reload may have put in force meanwhile)."""
    body = theme.account_page(template, heading, **values)
    return respond(200, body, [("content-type", HTML), NO_STORE, theme.csp_header])


def refusal(
    theme: Theme,
    status: int,
    reasons: Sequence[str],
    headers: Mapping[str, str],
    detail: str | None = None,
    sign_in_url: str | None = None,
) -> Response:
    """A refused request: its status, reasons and detail in the format Accept prefers."""
    fmt = response_format(headers)
    content_type, body = theme.error_body(
        status, reasons, headers.get("x-request-id", ""), fmt, detail=detail, sign_in_url=sign_in_url
    )
    return respond(status, body, [("content-type", content_type), NO_STORE, theme.csp_header])
