"""What one sidecar request works with, fixed when it arrives: the Runtime, the time, and which host it is for.

The app reads `holder.current` and the clock once per request and keeps them here, in the
request's own ASGI scope, so a reload in the middle of a request never mixes two configs and
nothing per request is stored on a shared object. No URL is built from the request's Host or any
X-Forwarded-*/Forwarded header: the Host's name only selects a configured host (the authenticate
host or a route's `from`); the scheme and the port come from the config (`Route.port`), exactly as
the Check builds its sign-in redirects (`authz.check.answer.route_url`). A port in Host is ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from starlette.requests import HTTPConnection
from starlette.types import Scope

from authz.check.request import origin, split_authority
from authz.config import Route
from authz.runtime.state import Runtime

_KEY = "authz.context"


def header_map(scope: Scope) -> dict[str, str]:
    """Lower-case header names; repeated headers joined with ", " (RFC 9110 §5.3)."""
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope["headers"]:
        name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers


@dataclass(frozen=True, slots=True)
class Context:
    """One request's Runtime, time and host, as read when it arrived."""

    rt: Runtime
    now: float
    hostname: str  # from Host, lower case, no port: selects a configured host, never builds a URL alone
    port: int | None  # the port Host named: never used to build a URL
    route: Route | None  # the first route whose `from` names this host
    headers: Mapping[str, str]
    query: str  # the raw query string

    @classmethod
    def arrive(cls, scope: Scope, rt: Runtime, now: float) -> Context:
        """Read the request once and keep the result in its scope (see `context`)."""
        headers = header_map(scope)
        hostname, port = split_authority(headers.get("host", ""))
        query = scope.get("query_string", b"").decode("latin-1")
        ctx = cls(rt, now, hostname, port, rt.route_for_host(hostname), headers, query)
        scope[_KEY] = ctx
        return ctx

    @property
    def route_origin(self) -> str:
        """`scheme://host[:port]` of this route host: the route's scheme and port, Host's name."""
        assert self.route is not None, "only route hosts have a route origin"
        return origin(self.route.scheme, self.hostname, self.route.port)


def context_if_any(request: HTTPConnection) -> Context | None:
    """The Context of `request`, or None when it failed before one was made."""
    ctx = request.scope.get(_KEY)
    return ctx if isinstance(ctx, Context) else None


def context(request: HTTPConnection) -> Context:
    """The Context that the app made when `request` arrived."""
    ctx = request.scope[_KEY]
    assert isinstance(ctx, Context)
    return ctx
