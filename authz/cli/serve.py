"""`authz serve`: the ext_authz gRPC server and the HTTP sidecar on one asyncio loop, one live Runtime.

With `workers: N` (or `--workers N`), N processes answer Check, each on its own port: worker 0 is
this process, on grpc_address, and also runs the HTTP sidecar and the token refresher; workers 1 to
N-1 are child processes on the next ports up, serving Check and grpc.health.v1 only. Each binds its
port alone (no SO_REUSEPORT), so a stale or foreign server never shares one, and
`authz envoy-config` lists every port as an endpoint of the authz cluster, health-checked. The
parent waits for each child to serve before it reports healthy; a child that cannot start stops
everything (exit 1); one that dies later is started again (1 s, doubling to 30 s between tries);
a child ends with its parent (PR_SET_PDEATHSIG); SIGTERM or SIGINT drains them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import shutil
import signal
import ssl
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import grpc
from starlette.types import ASGIApp

from authz._proto.envoy.service.auth.v3 import external_auth_pb2_grpc as pb_grpc
from authz._proto.grpc.health.v1 import health_pb2_grpc
from authz.config import Config
from authz.config.model import InternalTls
from authz.envoy.files import ConfigDirWriter
from authz.envoy.http_check import HttpCheckServer
from authz.envoy.service import Authorization, Health, ThreadedAuthorization, ThreadedHealth
from authz.identity.refresher import refresh_loop
from authz.jit.notify import jit_loop
from authz.ops import metrics as ops_metrics
from authz.ops.health import probe_loop
from authz.ops.logs import configure_logging
from authz.ops.metrics import NO_METRICS, Metrics, Recorder
from authz.ops.reload import Reloader, watch
from authz.ops.server import start_metrics_server
from authz.ops.tls import pem_files
from authz.runtime.holder import RuntimeHolder
from authz.runtime.state import Runtime
from authz.web.pages import HSTS
from authz.web.server import HttpServer
from authz.web.sidecar import create_app

log = logging.getLogger("authz")
SHUTDOWN_GRACE = 5.0


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
        # Over the internal mutual TLS, only Envoy's certificate may call Check (authz/envoy/peer.py).
        tls = holder.current.config.internal_tls
        core.pin = tls.client_san if tls is not None and tls.client_san else None
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

    async def start(self, address: str, tls: InternalTls | None = None) -> None:
        """Listen on `address`: plain text, or with `tls` mutual TLS (a client certificate required)."""
        try:
            if tls is None:
                self.server.add_insecure_port(address)
            else:
                self.server.add_secure_port(address, grpc_credentials(tls))
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


def grpc_credentials(tls: InternalTls) -> grpc.ServerCredentials:
    """authz's certificate, and a client certificate that chains to the internal CA required of
    every caller: whoever reaches the Check port without one cannot have assertions signed."""
    return grpc.ssl_server_credentials(
        [(tls.key.value, tls.certificate)], root_certificates=tls.client_ca, require_client_auth=True
    )


async def start_sidecar(app: ASGIApp, config: Config) -> HttpServer:
    """The web layer on http_address, over mutual TLS with `internal_tls_*` (OSError if it cannot listen)."""
    address, tls = config.http_address, config.internal_tls
    # Browsers reach these pages through Envoy's listener: HSTS when that listener is TLS.
    extra = () if config.insecure_server else (HSTS,)
    try:
        if tls is None:
            return await HttpServer.start(app, address.host, address.port, extra_headers=extra)
        with pem_files(tls.certificate, tls.key.value, tls.client_ca, "authz-sidecar-tls-") as files:
            return await HttpServer.start(
                app, address.host, address.port, extra_headers=extra,
                ssl_certfile=files.certificate, ssl_keyfile=files.key, ssl_ca_certs=files.client_ca,
            )  # fmt: skip
    except (OSError, ssl.SSLError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise OSError(f"cannot listen on http_address {address}: {reason}") from None


def check_server(holder: RuntimeHolder, transport: str) -> GrpcServer | HttpCheckServer:
    """What answers Envoy's ext_authz calls: Envoy's HTTP service when the config says so
    (`ext_authz_transport: http`), else gRPC on `transport`."""
    if holder.current.config.ext_authz_transport == "http":
        return HttpCheckServer(holder)
    return GrpcServer(holder, transport)


async def run(
    holder: RuntimeHolder, stop: asyncio.Event, transport: str = "threads", children: Workers | None = None
) -> None:
    """Serve until `stop` is set, then drain in-flight checks and close; `children` are the other
    workers, started once this process serves and stopped with it."""
    config = holder.current.config
    grpc_server = check_server(holder, transport)
    health = grpc_server.health
    await grpc_server.start(str(config.grpc_address), config.internal_tls)
    sidecar = create_app(holder, ready=lambda: health.serving)
    try:
        http = await start_sidecar(sidecar, config)
    except OSError:
        await grpc_server.stop(None)
        raise
    servers = [http]
    metrics = holder.current.metrics
    if isinstance(metrics, Metrics):
        try:
            servers.append(await start_metrics_server(metrics, config.metrics))
        except OSError:
            http.close()
            await grpc_server.stop(None)
            raise
    if children is not None:
        try:
            await children.start()
        except OSError:
            for server in servers:
                server.close()
            await asyncio.gather(grpc_server.stop(None), children.stop())
            raise
    # Everything built at start (config, compiled policies, modules) lives as long as the process:
    # out of the collector's sight, a garbage-collection pass no longer walks it during Checks.
    gc.collect()
    gc.freeze()
    health.set(True)
    log.info(
        "authz serving",
        extra={"fields": {"grpc_address": str(config.grpc_address), "http_address": str(config.http_address),
                          "routes": len(config.routes), "transport": transport, "workers": config.workers}},
    )  # fmt: skip
    background = [
        asyncio.create_task(refresh_loop(holder, stop)),
        asyncio.create_task(jit_loop(holder, stop)),
        asyncio.create_task(probe_loop(holder, stop)),
    ]
    await stop.wait()
    log.info("shutting down: draining in-flight checks")
    health.set(False)
    for server in servers:
        server.close()
    await asyncio.gather(grpc_server.stop(SHUTDOWN_GRACE), children.stop() if children else asyncio.sleep(0))
    await asyncio.gather(*background)
    with contextlib.suppress(Exception):
        await asyncio.wait_for(asyncio.gather(*(server.wait_closed() for server in servers)), SHUTDOWN_GRACE)
    await holder.current.close()


async def run_worker(holder: RuntimeHolder, stop: asyncio.Event, transport: str, index: int, ready_fd: int) -> None:
    """A child worker: Check and health on its own port until `stop`; tells the parent once serving."""
    config = holder.current.config
    address = str(config.grpc_addresses[index])
    grpc_server = check_server(holder, transport)
    await grpc_server.start(address, config.internal_tls)
    gc.collect()
    gc.freeze()
    grpc_server.health.set(True)
    os.write(ready_fd, b"1")
    os.close(ready_fd)
    log.info("authz worker serving", extra={"fields": {"worker": index, "grpc_address": address}})
    sweeper = asyncio.create_task(jit_loop(holder, stop))  # every worker may hold the lease
    await stop.wait()
    await sweeper
    grpc_server.health.set(False)
    await grpc_server.stop(SHUTDOWN_GRACE)
    await holder.current.close()


FIRST_RESTART, MAX_RESTART, START_TIMEOUT = 1.0, 30.0, 30.0


class Workers:
    """The child workers 1..N-1 of `authz serve`, each started with `command` plus its index."""

    def __init__(self, command: Sequence[str], count: int) -> None:
        self.command = list(command)
        self.indexes = range(1, count)
        self.procs: dict[int, asyncio.subprocess.Process] = {}
        self.watchers: list[asyncio.Task[None]] = []
        self.stopping = False

    async def _spawn(self, index: int) -> asyncio.subprocess.Process:
        """Start worker `index` and wait until it serves; OSError if it exits or hangs first."""
        read_end, write_end = os.pipe()
        try:
            command = [*self.command, "--worker-index", str(index), "--ready-fd", str(write_end)]
            env = {**os.environ, "AUTHZ_PARENT_PID": str(os.getpid())}
            proc = await asyncio.create_subprocess_exec(*command, pass_fds=(write_end,), env=env)
        finally:
            os.close(write_end)
        # The read returns b"1" once the child serves, or b"" once its end closes (it exited).
        reading = asyncio.ensure_future(asyncio.to_thread(os.read, read_end, 1))
        try:
            ready = await asyncio.wait_for(asyncio.shield(reading), START_TIMEOUT)
        except TimeoutError:
            ready = b""
        if ready != b"1":
            if proc.returncode is None:
                proc.kill()
            code = await proc.wait()
            await reading  # the killed child's end is closed: the thread's read has returned
            os.close(read_end)
            raise OSError(f"worker {index} did not start (exit status {code}); its log says why")
        os.close(read_end)
        self.procs[index] = proc
        return proc

    async def start(self) -> None:
        for index in self.indexes:
            await self._spawn(index)
        self.watchers = [asyncio.create_task(self._watch(index)) for index in self.indexes]

    async def _watch(self, index: int) -> None:
        """Start a worker again whenever it dies, with back-off between failed starts, until stopping."""
        while not self.stopping:
            proc = self.procs[index]
            code = await proc.wait()
            ops_metrics.forget_process(proc.pid)  # its per-worker gauges go; its counts stay
            delay = FIRST_RESTART
            if not self.stopping:
                log.error(
                    "worker %d exited with status %d; starting it again in %.0fs", index, code, delay,
                    extra={"fields": {"worker": index, "status": code, "retry_in": delay}},
                )  # fmt: skip
            while not self.stopping:
                await asyncio.sleep(delay)
                if self.stopping:
                    return
                try:
                    await self._spawn(index)
                    break
                except OSError as exc:
                    delay = min(delay * 2, MAX_RESTART)
                    log.error("%s; trying again in %.0fs", exc, delay, extra={"fields": {"worker": index}})

    def signal_all(self, sig: int = signal.SIGHUP) -> None:
        """Send `sig` to every running worker (a reload is passed on with SIGHUP)."""
        for proc in self.procs.values():
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(sig)

    async def stop(self) -> None:
        """SIGTERM every worker (they drain), and kill any still running after the grace."""
        self.stopping = True
        for task in self.watchers:
            task.cancel()
        running = [proc for proc in self.procs.values() if proc.returncode is None]
        for proc in running:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
        for proc in running:
            try:
                await asyncio.wait_for(proc.wait(), SHUTDOWN_GRACE + 2)
            except TimeoutError:
                proc.kill()
                await proc.wait()


def _die_with_parent() -> None:
    """Have the kernel SIGTERM this child when its parent dies (Linux), and exit if it already has."""
    parent = int(os.environ.get("AUTHZ_PARENT_PID", "0"))
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if parent and os.getppid() != parent:
        sys.exit(1)


def serve(
    config_path: str,
    config: Config,
    transport: str = "threads",
    *,
    worker_index: int | None = None,
    ready_fd: int | None = None,
) -> int:
    """Run until SIGTERM or SIGINT; exit 0 after a clean shutdown, 1 if a port cannot be bound or a
    worker cannot start. `worker_index` (with `ready_fd`) runs one child worker: the parent's job."""
    configure_logging(config.log_level, config.logs.format)
    child = worker_index is not None and ready_fd is not None
    if child:
        _die_with_parent()
    else:
        for warning in config.warnings:
            log.warning(warning)

    async def main() -> int:
        envoy_files = ConfigDirWriter()  # `envoy_config_dir`: the parent writes, workers never
        if not child:
            try:
                await envoy_files.publish(config)
            except OSError as exc:
                log.error("cannot write Envoy's files to envoy_config_dir: %s", exc)
                return 1
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        metrics = process_metrics(config, worker_index, metrics_dir)
        holder = RuntimeHolder(Runtime.build(config, metrics=metrics))
        metrics.config_loaded(config.digest, time.time())
        children = None
        if not child:
            command = [sys.executable, "-m", "authz", "serve", "-c", config_path, "--transport", transport,
                       "--workers", str(config.workers)]  # fmt: skip
            children = Workers(command, config.workers) if config.workers > 1 else None
        # The parent reloads on SIGHUP and on a change of the files, then passes SIGHUP on to its
        # workers; a worker reloads on the SIGHUP it gets.
        forward = children.signal_all if children is not None else None
        reloader = Reloader(
            holder, config_path, on_reloaded=forward, workers=config.workers,
            on_swapped=None if child else envoy_files.on_swapped,
        )  # fmt: skip
        loop.add_signal_handler(signal.SIGHUP, reloader.trigger, "SIGHUP")
        watcher = loop.create_task(watch(reloader, stop)) if not child else None
        # Each of several workers writes the Checks' counts to its file once a second.
        flusher = loop.create_task(metrics.flush_loop(stop)) if config.workers > 1 else None
        try:
            if worker_index is not None and ready_fd is not None:
                await run_worker(holder, stop, transport, worker_index, ready_fd)
            else:
                await run(holder, stop, transport, children)
        except OSError as exc:
            log.error(str(exc))
            return 1
        finally:
            stop.set()
            if watcher is not None:
                await watcher
            if flusher is not None:
                await flusher
                metrics.flush()  # the Checks answered while the server drained
            await reloader.close()
        return 0

    # Until the loop's handler is in place, a SIGHUP (a reload forwarded early) must not end the process.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    metrics_dir = None
    if config.metrics.address is not None and not child and config.workers > 1:
        metrics_dir = tempfile.mkdtemp(prefix="authz-metrics-")
    try:
        return asyncio.run(main())
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def process_metrics(config: Config, worker_index: int | None, directory: str | None) -> Recorder:
    """This process's metrics: none without metrics_address; with several workers, in the
    directory the parent made for them (`directory` in the parent, inherited by its children)."""
    if config.metrics.address is None:
        return NO_METRICS
    if worker_index is not None:
        directory = os.environ.get(ops_metrics.MULTIPROCESS_ENV)
    ops_metrics.use_multiprocess(directory)
    return Metrics(worker=worker_index or 0)
