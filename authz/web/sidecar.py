"""The HTTP sidecar: everything a browser sees of authz, served through Envoy with ext_authz off.

On every host: the JWKS and the discovery document. On the authenticate host: sign-in, the OIDC
callback, sign-out. On route hosts: the session handoff, sign-out, the user page and JSON, and
the programmatic login. Directly on `http_address`: /healthz. URLs are built from the config:
the Host header only selects which configured host is meant, and client X-Pomerium-* headers
are never read.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass

from authz.check.request import origin, split_authority
from authz.config import Config
from authz.errors import RequestError
from authz.runtime.holder import RuntimeHolder
from authz.runtime.state import Runtime
from authz.signing.keys import jwks_document
from authz.web import pages
from authz.web.account import Account
from authz.web.http11 import Request, Response, text_response
from authz.web.login import Login
from authz.web.negotiate import response_format

_CORS = [("access-control-allow-origin", "*"), ("access-control-allow-methods", "GET, HEAD, OPTIONS")]
_READ = ("GET", "HEAD")


@dataclass(frozen=True, slots=True)
class Published:
    """The JWKS body and its ETag, computed once per config."""

    body: bytes
    etag: str

    @classmethod
    def build(cls, config: Config) -> Published:
        body = json.dumps(jwks_document(config.signing_keys), separators=(",", ":")).encode()
        return cls(body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')


def _method_not_allowed() -> Response:
    return text_response(405, "method not allowed\n")


class Sidecar:
    """Answers the sidecar's paths for the current runtime; `ready` says whether /healthz is 200."""

    def __init__(self, holder: RuntimeHolder, ready: Callable[[], bool]) -> None:
        self._ready = ready
        self.holder = holder
        self._jwks: tuple[Config, Published] | None = None

    def _published(self, config: Config) -> Published:
        if self._jwks is None or self._jwks[0] is not config:
            self._jwks = (config, Published.build(config))
        return self._jwks[1]

    async def __call__(self, request: Request) -> Response:
        try:
            return await self._dispatch(request)
        except RequestError as exc:
            fmt = response_format(request.headers)
            request_id = request.headers.get("x-request-id", "")
            content_type, body = pages.error_body(exc.status, (exc.reason,), request_id, fmt, detail=exc.detail)
            return Response(exc.status, body.encode(), [("content-type", content_type), ("cache-control", "no-store")])

    async def _dispatch(self, request: Request) -> Response:
        path, method = request.path, request.method
        rt = self.holder.current
        login = Login(rt, rt.oidc)
        account = Account(rt, login, rt.oidc)
        if path == "/.well-known/pomerium/jwks.json":
            return self._jwks_response(rt, request) if method in (*_READ, "OPTIONS") else _method_not_allowed()
        if path in ("/.well-known/pomerium", "/.well-known/pomerium/"):
            return self._discovery(rt, request) if method in (*_READ, "OPTIONS") else _method_not_allowed()
        if path == "/healthz":
            ready = self._ready()
            return text_response(200 if ready else 503, "ok\n" if ready else "starting\n")
        hostname, port = split_authority(request.headers.get("host", ""))
        config = rt.config
        if hostname == config.authenticate_host:
            if path == "/.pomerium/sign_in":
                return await login.sign_in(request) if method in _READ else _method_not_allowed()
            if path == "/oauth2/callback":
                return await login.oauth_callback(request) if method in _READ else _method_not_allowed()
            if path == "/.pomerium/sign_out":
                return await account.sign_out(request)
            if path == "/.pomerium/signed_out":
                return account.signed_out()
            return text_response(404, "not found\n")
        route = rt.route_for_host(hostname)
        if route is None:
            return text_response(404, "not found\n")
        here = origin(route.scheme, hostname, port)
        if path in ("/.pomerium/callback/", "/.pomerium/callback"):
            return await login.route_callback(request, hostname) if method in _READ else _method_not_allowed()
        if path == "/.pomerium/sign_out":
            return account.route_sign_out(request, hostname)
        if path in ("/.pomerium", "/.pomerium/"):
            return account.user_page(request, hostname, here)
        if path == "/.pomerium/user":
            return account.user_json(request, hostname)
        if path == "/.pomerium/api/v1/login":
            return login.programmatic_login(request, hostname, port) if method in _READ else _method_not_allowed()
        return text_response(404, "not found\n")

    def _jwks_response(self, rt: Runtime, request: Request) -> Response:
        jwks = self._published(rt.config)
        headers = [
            *_CORS,
            ("cache-control", "max-age=60"),
            ("etag", jwks.etag),
            ("content-type", "application/json"),
        ]
        if request.method == "OPTIONS":
            return Response(204, b"", headers)
        if jwks.etag in request.headers.get("if-none-match", ""):
            return Response(304, b"", headers)
        return Response(200, jwks.body, headers)

    def _discovery(self, rt: Runtime, request: Request) -> Response:
        config = rt.config
        hostname, port = split_authority(request.headers.get("host", ""))
        route = rt.route_for_host(hostname)
        base = origin(route.scheme, hostname, port) if route is not None else config.authenticate_service_url
        body = {
            "issuer": f"{base}/",
            "authentication_callback_endpoint": f"{config.authenticate_service_url}/oauth2/callback",
            "jwks_uri": f"{base}/.well-known/pomerium/jwks.json",
            "frontchannel_logout_uri": f"{base}/.pomerium/sign_out",
        }
        headers = [*_CORS, ("cache-control", "max-age=60"), ("content-type", "application/json")]
        return Response(200, json.dumps(body).encode(), headers)
