"""What every host publishes: `/.well-known/pomerium/jwks.json` and the `/.well-known/pomerium` document."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from authz.config import Config
from authz.signing.keys import jwks_document
from authz.web.context import context
from authz.web.responses import respond

_CORS = (("access-control-allow-origin", "*"), ("access-control-allow-methods", "GET, HEAD, OPTIONS"))


@dataclass(frozen=True, slots=True)
class Published:
    """The JWKS body and its ETag."""

    body: bytes
    etag: str

    @classmethod
    def build(cls, config: Config) -> Published:
        body = json.dumps(jwks_document(config.signing_keys), separators=(",", ":")).encode()
        return cls(body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')


class WellKnown:
    """The JWKS and discovery endpoints; the JWKS is built once per config (by identity), not per request."""

    def __init__(self) -> None:
        # One (config, Published) pair, replaced whole: a request reading it sees the old pair or
        # the new one, and one built for a config that is no longer current is simply rebuilt.
        self._jwks: tuple[Config, Published] | None = None

    def published(self, config: Config) -> Published:
        cached = self._jwks
        if cached is not None and cached[0] is config:
            return cached[1]
        built = Published.build(config)
        self._jwks = (config, built)
        return built

    async def jwks(self, request: Request) -> Response:
        """All public signing keys; ETag, `Cache-Control: max-age=60` and CORS `*`."""
        ctx = context(request)
        jwks = self.published(ctx.rt.config)
        headers = [*_CORS, ("cache-control", "max-age=60"), ("etag", jwks.etag), ("content-type", "application/json")]
        if request.method == "OPTIONS":
            return respond(204, b"", headers)
        if jwks.etag in ctx.headers.get("if-none-match", ""):
            return respond(304, b"", headers)
        return respond(200, jwks.body, headers)

    async def discovery(self, request: Request) -> Response:
        """Pomerium's discovery document: issuer, callback and JWKS URLs.

        On a route host the URLs take the route's scheme and configured port (`Context.route_origin`),
        never Host's port: the document is cacheable and readable from any origin. No
        `frontchannel_logout_uri`: authz does not implement OIDC Front-Channel Logout, and its
        sign-out asks before acting (`account`).
        """
        ctx = context(request)
        config = ctx.rt.config
        on_route = ctx.route is not None and ctx.hostname != config.authenticate_host
        base = ctx.route_origin if on_route else config.authenticate_service_url
        body = {
            "issuer": f"{base}/",
            "authentication_callback_endpoint": f"{config.authenticate_service_url}/oauth2/callback",
            "jwks_uri": f"{base}/.well-known/pomerium/jwks.json",
        }
        headers = [*_CORS, ("cache-control", "max-age=60"), ("content-type", "application/json")]
        return respond(200, json.dumps(body), headers)
