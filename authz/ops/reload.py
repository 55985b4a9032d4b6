"""Reload: a new config read, validated and built off the hot path, then swapped in whole.

Triggers are SIGHUP and a change of the config file or of a file it names (secrets, keys), seen
by `watch` (authz/ops/watch.py: a poll once a second that follows an atomic rename and a symlink
swap, which is how Kubernetes updates a mounted ConfigMap or Secret). The
parent of several workers reloads itself and forwards SIGHUP to each child, which reloads the
same way (`authz_config_hash{worker}` shows each one's config).

    invalid config          every error logged, `authz_config_reloads_total{result="invalid"}`,
                            the old config stays in force
    a restart-only change   `session_store`, a listen address, `workers`, the transport, the
                            metrics listener or `internal_tls_*`: "needs a restart",
                            `result="restart_needed"`, the old config stays in force (nothing
                            of the new one is applied)
    otherwise               the new Runtime is built (the stores are kept: sessions survive as
                            long as `cookie_secret` does), swapped in atomically, and the old one
                            is closed once the requests that started on it are done

A Check or page reads the Runtime once (`RuntimeHolder.current`) and finishes on it, so a reload
never mixes two configs in one answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from enum import StrEnum

from authz.config import Config, Secret
from authz.config.load import load_config
from authz.config.model import RedisSettings
from authz.errors import ConfigError
from authz.ops.logs import configure_logging
from authz.ops.watch import WATCH_INTERVAL, keep, watch_files
from authz.ops.watch import stamp as stamp  # where tests and callers have found it
from authz.runtime.holder import RuntimeHolder
from authz.runtime.state import Runtime

log = logging.getLogger("authz")
RETIRE_AFTER = 15.0  # seconds before an old Runtime's parts are closed (its last requests are done)

# Changes that a running process cannot take: what they configure is bound or opened at start.
RESTART_ONLY = (
    "session_store", "grpc_address", "http_address", "address", "workers", "ext_authz_transport", "metrics",
    "internal_tls", "redis",
)  # fmt: skip


class Result(StrEnum):
    OK = "ok"
    UNCHANGED = "unchanged"
    INVALID = "invalid"
    RESTART_NEEDED = "restart_needed"


def restart_needed(old: Config, new: Config) -> list[str]:
    """The restart-only keys whose values differ between two configs: what is bound at start (an
    address, TLS on a port or not), never the credentials those listeners hold (`kept_credentials`)."""
    changed = []
    for key in RESTART_ONLY:
        before, after = getattr(old, key), getattr(new, key)
        if key == "metrics":  # the listener's address, and whether it speaks TLS
            before, after = (before.address, before.certificate is None), (after.address, after.certificate is None)
        if key == "internal_tls":  # plain or mutual TLS on authz's ports
            before, after = before is None, after is None
        if key == "redis":  # the connection settings, the password's value among them
            before, after = _redis_key(before), _redis_key(after)
        if before != after:
            changed.append(_RESTART_NAMES.get(key, key))
    return changed


_RESTART_NAMES = {"metrics": "metrics_*", "internal_tls": "internal_tls_*", "redis": "session_store_*"}


def _redis_key(settings: RedisSettings | None) -> object:
    if settings is None:
        return None
    return dataclasses.replace(settings, password=None), settings.password.value if settings.password else None


def kept_credentials(old: Config, new: Config) -> tuple[Config, list[str]]:
    """`new`, with the credentials of the listeners bound at start (the metrics listener's, the
    internal mutual TLS's) as `old` has them, and the keys whose new values wait for a restart.
    A renewed certificate must not hold up the rest of a reload, a revocation above all."""
    kept: list[str] = []
    if _credentials(old.internal_tls) != _credentials(new.internal_tls):
        new, kept = dataclasses.replace(new, internal_tls=old.internal_tls), [*kept, "internal_tls_*"]
    if _credentials(old.metrics) != _credentials(new.metrics):
        new, kept = dataclasses.replace(new, metrics=old.metrics), [*kept, "metrics_*"]
    return new, kept


def _credentials(settings: object | None) -> tuple[object, ...] | None:
    """A settings object's fields, with Secrets compared by value."""
    if settings is None:
        return None
    fields = (getattr(settings, field.name) for field in dataclasses.fields(settings))  # type: ignore[arg-type]
    return tuple(value.value if isinstance(value, Secret) else value for value in fields)


class Reloader:
    """Reloads one process's Runtime from its config file."""

    def __init__(
        self,
        holder: RuntimeHolder,
        path: str,
        on_reloaded: Callable[[], None] | None = None,
        workers: int | None = None,
        on_swapped: Callable[[Config], Awaitable[None]] | None = None,
    ) -> None:
        self.holder = holder
        self.path = path
        self.on_reloaded = on_reloaded  # the parent forwards SIGHUP to its workers here
        self.on_swapped = on_swapped  # then writes Envoy's route files (`envoy_config_dir`)
        self.workers = workers  # `--workers`, which stands in for the file's `workers` on reload too
        self._lock = asyncio.Lock()
        self._retiring: set[asyncio.Task[object]] = set()  # reloads running, old Runtimes to close

    def trigger(self, why: str) -> None:
        """Start a reload from a signal handler (the task is kept until it ends)."""
        keep(self._retiring, self.reload(why))

    async def reload(self, why: str) -> Result:
        """Read, validate, build and swap; never raises (a failure keeps the old config)."""
        async with self._lock:
            old = self.holder.current
            metrics = old.metrics
            try:
                config = await asyncio.to_thread(load_config, self.path)
                if self.workers is not None:
                    config = dataclasses.replace(config, workers=self.workers)
            except ConfigError as exc:
                for problem in exc.problems:
                    log.error("reload refused: %s", problem, extra={"fields": {"trigger": why}})
                log.error("config reload failed (%d problems); the previous config stays in force", len(exc.problems))
                metrics.reload(Result.INVALID)
                return Result.INVALID
            if config.digest == old.config.digest:
                return Result.UNCHANGED
            changed = restart_needed(old.config, config)
            if changed:
                log.error(
                    "config reload refused: %s needs a restart; the previous config stays in force",
                    ", ".join(changed),
                    extra={"fields": {"trigger": why, "keys": changed}},
                )
                metrics.reload(Result.RESTART_NEEDED)
                return Result.RESTART_NEEDED
            config, kept = kept_credentials(old.config, config)
            if kept:
                log.warning(
                    "%s changed: the running listeners keep their certificates and credentials until a"
                    " restart; the rest of the config is applied", ", ".join(kept),
                    extra={"fields": {"trigger": why, "keys": kept}},
                )  # fmt: skip
            try:
                new = await asyncio.to_thread(_build, config, old)
            except Exception:  # a part that validates but cannot be built: keep the old config
                log.exception("config reload failed while building; the previous config stays in force")
                metrics.reload(Result.INVALID)
                return Result.INVALID
            self.holder.swap(new)
            configure_logging(config.log_level, config.logs.format)
            metrics.config_loaded(config.digest, time.time())
            metrics.reload(Result.OK)
            for warning in config.warnings:
                log.warning(warning)
            log.info(
                "config reloaded",
                extra={"fields": {"trigger": why, "digest": config.digest[:12], "routes": len(config.routes)}},
            )
            self._retire(old, new)
        if self.on_reloaded is not None:
            self.on_reloaded()
        if self.on_swapped is not None:
            await self.on_swapped(config)
        return Result.OK

    def _retire(self, old: Runtime, new: Runtime) -> None:
        """Close what the old Runtime owns and the new one does not use, once its requests are done."""

        async def later() -> None:
            await asyncio.sleep(RETIRE_AFTER)
            await old.close_unshared(new)

        keep(self._retiring, later())

    async def close(self) -> None:
        for task in list(self._retiring):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _build(config: Config, old: Runtime) -> Runtime:
    """The new Runtime, on the old one's stores (the same `session_store`) and metrics."""
    return Runtime.build(config, store=old.raw_store, grants=old.grants, metrics=old.metrics)


async def watch(reloader: Reloader, stop: asyncio.Event, interval: float = WATCH_INTERVAL) -> None:
    """Reload when the config file or a file it names changes (rename, symlink swap or in place)."""
    await watch_files(
        lambda: [reloader.path, *reloader.holder.current.config.files],
        lambda: reloader.reload("file change"),
        stop,
        interval,
    )
