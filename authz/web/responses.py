"""Building the sidecar's answers: Starlette responses with exactly the headers given, in order."""

from __future__ import annotations

from collections.abc import Iterable

from starlette.responses import Response

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
