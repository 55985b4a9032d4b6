"""`authz serve`: the ext_authz gRPC server and the HTTP sidecar on one asyncio loop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sys
import time
from collections.abc import AsyncIterator

import grpc

from authz._proto.envoy.service.auth.v3 import external_auth_pb2 as pb
from authz._proto.envoy.service.auth.v3 import external_auth_pb2_grpc as pb_grpc
from authz._proto.grpc.health.v1 import health_pb2, health_pb2_grpc
from authz.check.decide import Decision, decide, error
from authz.config import Config
from authz.envoy import adapter as ext_authz
from authz.errors import RequestError
from authz.identity.refresher import refresh_loop
from authz.policy.reasons import Reason
from authz.runtime.holder import RuntimeHolder
from authz.runtime.state import Runtime
from authz.web import http11
from authz.web.sidecar import Sidecar

log = logging.getLogger("authz")
SHUTDOWN_GRACE = 5.0


class JsonFormatter(logging.Formatter):
    """One JSON object per line on stderr."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info).splitlines()[-1]
        return json.dumps(entry)


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel({"warn": "WARNING"}.get(level, level.upper()))
    # HTTP client request lines carry URLs (authorization codes, tokens in queries): never log them.
    for noisy in ("httpx2", "httpcore2", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


class Authorization(pb_grpc.AuthorizationServicer):
    """envoy.service.auth.v3.Authorization: every fault becomes a denial, never an allow."""

    def __init__(self, holder: RuntimeHolder) -> None:
        self.holder = holder

    def check(self, request: pb.CheckRequest, now: float) -> Decision:
        try:
            req = ext_authz.to_request(request)
        except RequestError as exc:
            return error(exc.status, (exc.reason,), ext_authz.fallback_request(request), detail=exc.detail)
        except Exception:
            log.exception("could not read the check request; answering 503")
            return error(503, (Reason.INTERNAL_ERROR,), ext_authz.fallback_request(request))
        try:
            return decide(self.holder.current, req, now)
        except Exception:
            log.exception("check failed; answering 503", extra={"fields": {"request_id": req.request_id}})
            return error(503, (Reason.INTERNAL_ERROR,), req)

    async def Check(self, request: pb.CheckRequest, context: grpc.aio.ServicerContext) -> pb.CheckResponse:
        return ext_authz.to_response(self.check(request, time.time()))


class Health(health_pb2_grpc.HealthServicer):
    """grpc.health.v1: SERVING once both servers listen, NOT_SERVING while shutting down."""

    def __init__(self) -> None:
        self.serving = False
        self._changed = asyncio.Event()

    def set(self, serving: bool) -> None:
        self.serving = serving
        self._changed.set()
        self._changed = asyncio.Event()

    def _status(self, service: str) -> health_pb2.HealthCheckResponse:
        if service not in ("", "envoy.service.auth.v3.Authorization"):
            return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVICE_UNKNOWN)
        status = health_pb2.HealthCheckResponse.SERVING if self.serving else health_pb2.HealthCheckResponse.NOT_SERVING
        return health_pb2.HealthCheckResponse(status=status)

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthCheckResponse:
        return self._status(request.service)

    async def Watch(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[health_pb2.HealthCheckResponse]:
        while True:
            yield self._status(request.service)
            await self._changed.wait()


async def run(holder: RuntimeHolder, stop: asyncio.Event) -> None:
    """Serve until `stop` is set, then drain in-flight checks and close."""
    config = holder.current.config
    health = Health()
    server = grpc.aio.server(
        options=[
            ("grpc.so_reuseport", 0),
            ("grpc.max_concurrent_streams", 1000),
            ("grpc.max_receive_message_length", 4 * 1024 * 1024),
        ]
    )
    pb_grpc.add_AuthorizationServicer_to_server(Authorization(holder), server)
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    try:
        server.add_insecure_port(str(config.grpc_address))
    except RuntimeError as exc:
        raise OSError(f"cannot listen on grpc_address {config.grpc_address}: {exc}") from None
    await server.start()
    sidecar = Sidecar(holder, ready=lambda: health.serving)
    try:
        http = await http11.start(sidecar, config.http_address.host, config.http_address.port)
    except OSError as exc:
        await server.stop(None)
        raise OSError(f"cannot listen on http_address {config.http_address}: {exc.strerror}") from None
    health.set(True)
    log.info(
        "authz serving",
        extra={"fields": {"grpc_address": str(config.grpc_address), "http_address": str(config.http_address),
                          "routes": len(config.routes)}},
    )  # fmt: skip
    refresher = asyncio.create_task(refresh_loop(holder, stop))
    await stop.wait()
    log.info("shutting down: draining in-flight checks")
    health.set(False)
    http.close()
    await server.stop(SHUTDOWN_GRACE)
    await refresher
    with contextlib.suppress(Exception):
        await asyncio.wait_for(http.wait_closed(), SHUTDOWN_GRACE)
    await holder.current.close()


def serve(config_path: str, config: Config) -> int:
    """Run until SIGTERM or SIGINT; exit 0 after a clean shutdown, 1 if a port cannot be bound."""
    configure_logging(config.log_level)

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await run(RuntimeHolder(Runtime.build(config)), stop)
        except OSError as exc:
            log.error(str(exc))
            return 1
        return 0

    return asyncio.run(main())
