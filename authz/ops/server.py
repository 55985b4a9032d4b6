"""The metrics listener on `metrics_address`: `GET /metrics`, nothing else, never through Envoy.

Basic auth (`metrics_basic_auth`) is compared in constant time; TLS (`metrics_certificate`,
`metrics_key`) and client certificates (`metrics_client_ca`) are the listener's. The PEMs are
handed to the server through owner-only temporary files that are gone once it listens.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import ssl
from collections.abc import Iterator

from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from authz.config.model import MetricsSettings
from authz.ops.metrics import Metrics
from authz.ops.tls import TlsFiles, pem_files
from authz.web.server import HttpServer

_CHALLENGE = {"www-authenticate": 'Basic realm="authz metrics", charset="UTF-8"', "cache-control": "no-store"}


def authorized(header: str, expected: bytes) -> bool:
    """Whether an Authorization header carries the configured `user:password` (constant time)."""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        given = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    return hmac.compare_digest(given, expected)


def metrics_app(metrics: Metrics, settings: MetricsSettings) -> Starlette:
    """The app: /metrics for GET and HEAD, 401 without the credentials when they are configured."""

    async def scrape(request: Request) -> Response:
        if settings.basic_auth is not None and not authorized(
            request.headers.get("authorization", ""), settings.basic_auth.value
        ):
            return PlainTextResponse("authentication required\n", 401, headers=_CHALLENGE)
        body = await run_in_threadpool(metrics.exposition)  # reads every worker's files
        return Response(body, headers={"content-type": CONTENT_TYPE_LATEST, "cache-control": "no-store"})

    return Starlette(routes=[Route("/metrics", scrape, methods=["GET"])])


@contextlib.contextmanager
def _pem_files(settings: MetricsSettings) -> Iterator[TlsFiles | None]:
    """The TLS PEMs as owner-only files (uvicorn reads paths), removed on exit; None without TLS."""
    if settings.certificate is None or settings.key is None:
        yield None
        return
    with pem_files(settings.certificate, settings.key.value, settings.client_ca, "authz-metrics-tls-") as files:
        yield files


async def start_metrics_server(metrics: Metrics, settings: MetricsSettings) -> HttpServer:
    """Listen on metrics_address (OSError naming it if that fails)."""
    assert settings.address is not None
    address = settings.address
    app = metrics_app(metrics, settings)
    try:
        with _pem_files(settings) as tls:
            if tls is None:
                return await HttpServer.start(app, address.host, address.port)
            return await HttpServer.start(
                app, address.host, address.port,
                ssl_certfile=tls.certificate, ssl_keyfile=tls.key, ssl_ca_certs=tls.client_ca,
            )  # fmt: skip
    except (OSError, ssl.SSLError) as exc:
        raise OSError(f"cannot listen on metrics_address {address}: {exc}") from None
