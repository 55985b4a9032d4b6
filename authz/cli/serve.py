"""`authz serve`: the ext_authz gRPC server and the HTTP sidecar on one asyncio loop, one live Runtime."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import signal
import sys

import grpc

from authz._proto.envoy.service.auth.v3 import external_auth_pb2_grpc as pb_grpc
from authz._proto.grpc.health.v1 import health_pb2_grpc
from authz.config import Config
from authz.envoy.service import Authorization, Health
from authz.identity.refresher import refresh_loop
from authz.runtime.holder import RuntimeHolder
from authz.runtime.state import Runtime
from authz.web.server import HttpServer
from authz.web.sidecar import create_app

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
    sidecar = create_app(holder, ready=lambda: health.serving)
    try:
        http = await HttpServer.start(sidecar, config.http_address.host, config.http_address.port)
    except OSError as exc:
        await server.stop(None)
        raise OSError(f"cannot listen on http_address {config.http_address}: {exc.strerror}") from None
    # Everything built at start (config, compiled policies, modules) lives as long as the process:
    # out of the collector's sight, a garbage-collection pass no longer walks it during Checks.
    gc.collect()
    gc.freeze()
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
    for warning in config.warnings:
        log.warning(warning)

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
