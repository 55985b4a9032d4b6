"""The HTTP sidecar: the JWKS, the discovery document and /healthz (login pages come later)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass

from authz.config import Config
from authz.http11 import Request, Response, text_response
from authz.keys import jwks_document
from authz.request import split_authority

_CORS = [("access-control-allow-origin", "*"), ("access-control-allow-methods", "GET, HEAD, OPTIONS")]


@dataclass(frozen=True, slots=True)
class Published:
    """The JWKS body and its ETag, computed once per config."""

    body: bytes
    etag: str

    @classmethod
    def build(cls, config: Config) -> Published:
        body = json.dumps(jwks_document(config.signing_keys), separators=(",", ":")).encode()
        return cls(body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')


class Sidecar:
    """Answers the sidecar's paths for the current config; `ready` says whether /healthz is 200."""

    def __init__(self, config: Config, ready: Callable[[], bool]) -> None:
        self.reload(config)
        self._ready = ready

    def reload(self, config: Config) -> None:
        self._config = config
        self._jwks = Published.build(config)
        self._hosts = {r.host: r.scheme for r in config.routes}
        self._hosts[config.authenticate_host] = config.authenticate_scheme

    async def __call__(self, request: Request) -> Response:
        path = request.path
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            return text_response(405, "method not allowed\n")
        if path == "/.well-known/pomerium/jwks.json":
            return self._jwks_response(request)
        if path in ("/.well-known/pomerium", "/.well-known/pomerium/"):
            return self._discovery(request)
        if path == "/healthz":
            ready = self._ready()
            return text_response(200 if ready else 503, "ok\n" if ready else "starting\n")
        return text_response(404, "not found\n")

    def _jwks_response(self, request: Request) -> Response:
        headers = [
            *_CORS,
            ("cache-control", "max-age=60"),
            ("etag", self._jwks.etag),
            ("content-type", "application/json"),
        ]
        if request.method == "OPTIONS":
            return Response(204, b"", headers)
        if self._jwks.etag in request.headers.get("if-none-match", ""):
            return Response(304, b"", headers)
        return Response(200, self._jwks.body, headers)

    def _origin(self, request: Request) -> str:
        """The origin to name in documents: the request's host only if the config knows it."""
        hostname, port = split_authority(request.headers.get("host", ""))
        scheme = self._hosts.get(hostname)
        if scheme is None:
            return self._config.authenticate_service_url
        return f"{scheme}://{hostname}{f':{port}' if port else ''}"

    def _discovery(self, request: Request) -> Response:
        origin = self._origin(request)
        body = {
            "issuer": f"{origin}/",
            "authentication_callback_endpoint": f"{self._config.authenticate_service_url}/oauth2/callback",
            "jwks_uri": f"{origin}/.well-known/pomerium/jwks.json",
            "frontchannel_logout_uri": f"{origin}/.pomerium/sign_out",
        }
        headers = [*_CORS, ("cache-control", "max-age=60"), ("content-type", "application/json")]
        return Response(200, json.dumps(body).encode(), headers)
