"""`authz serve`: the ext_authz gRPC server and the HTTP sidecar on one asyncio loop, one live Runtime."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import signal
import sys
from concurrent.futures import ThreadPoolExecutor

import grpc

from authz._proto.envoy.service.auth.v3 import external_auth_pb2_grpc as pb_grpc
from authz._proto.grpc.health.v1 import health_pb2_grpc
from authz.config import Config
from authz.envoy.service import Authorization, Health, ThreadedAuthorization, ThreadedHealth
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


_OPTIONS = [
    ("grpc.so_reuseport", 0),  # a stale or foreign server never silently shares the port
    ("grpc.max_concurrent_streams", 1000),
    ("grpc.max_receive_message_length", 4 * 1024 * 1024),
]
# Checks in flight at once on the thread-pool transport. They take turns on the GIL, so more
# threads add no throughput; enough of them keep a slow store read from holding up the rest.
CHECK_THREADS = 16


class GrpcServer:
    """The ext_authz and health services on one of two transports (README, Performance):
    `threads`, grpcio's thread-pool server (the default: a Check runs whole in a worker thread), or
    `aio`, grpc.aio on this event loop."""

    def __init__(self, holder: RuntimeHolder, transport: str) -> None:
        self.transport = transport
        core = Authorization(holder)
        if transport == "aio":
            self.health: Health | ThreadedHealth = Health()
            self.aio = grpc.aio.server(options=_OPTIONS)
            pb_grpc.add_AuthorizationServicer_to_server(core, self.aio)
            health_pb2_grpc.add_HealthServicer_to_server(self.health, self.aio)
            self.server: grpc.Server | grpc.aio.Server = self.aio
        else:
            self.health = ThreadedHealth()
            pool = ThreadPoolExecutor(max_workers=CHECK_THREADS, thread_name_prefix="check")
            self.threaded = grpc.server(pool, options=_OPTIONS)
            pb_grpc.add_AuthorizationServicer_to_server(ThreadedAuthorization(core), self.threaded)
            health_pb2_grpc.add_HealthServicer_to_server(self.health, self.threaded)
            self.server = self.threaded

    async def start(self, address: str) -> None:
        try:
            self.server.add_insecure_port(address)
        except RuntimeError as exc:
            raise OSError(f"cannot listen on grpc_address {address}: {exc}") from None
        if self.transport == "aio":
            await self.aio.start()
        else:
            self.threaded.start()

    async def stop(self, grace: float | None) -> None:
        """Refuse new calls, let those in flight finish for up to `grace` seconds."""
        if self.transport == "aio":
            await self.aio.stop(grace)
        else:
            await asyncio.to_thread(self.threaded.stop(grace).wait)


async def run(holder: RuntimeHolder, stop: asyncio.Event, transport: str = "threads") -> None:
    """Serve until `stop` is set, then drain in-flight checks and close."""
    config = holder.current.config
    grpc_server = GrpcServer(holder, transport)
    health = grpc_server.health
    await grpc_server.start(str(config.grpc_address))
    sidecar = create_app(holder, ready=lambda: health.serving)
    try:
        http = await HttpServer.start(sidecar, config.http_address.host, config.http_address.port)
    except OSError as exc:
        await grpc_server.stop(None)
        raise OSError(f"cannot listen on http_address {config.http_address}: {exc.strerror}") from None
    # Everything built at start (config, compiled policies, modules) lives as long as the process:
    # out of the collector's sight, a garbage-collection pass no longer walks it during Checks.
    gc.collect()
    gc.freeze()
    health.set(True)
    log.info(
        "authz serving",
        extra={"fields": {"grpc_address": str(config.grpc_address), "http_address": str(config.http_address),
                          "routes": len(config.routes), "transport": transport}},
    )  # fmt: skip
    refresher = asyncio.create_task(refresh_loop(holder, stop))
    await stop.wait()
    log.info("shutting down: draining in-flight checks")
    health.set(False)
    http.close()
    await grpc_server.stop(SHUTDOWN_GRACE)
    await refresher
    with contextlib.suppress(Exception):
        await asyncio.wait_for(http.wait_closed(), SHUTDOWN_GRACE)
    await holder.current.close()


def serve(config_path: str, config: Config, transport: str = "threads") -> int:
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
            await run(RuntimeHolder(Runtime.build(config)), stop, transport)
        except OSError as exc:
            log.error(str(exc))
            return 1
        return 0

    return asyncio.run(main())
