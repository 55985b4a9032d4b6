"""Envoy's files in a directory (`authz envoy-config --out DIR`, `envoy_config_dir`), written so that
Envoy changes routes without a restart and without a request meeting a route whose cluster is gone.

Envoy reloads routes.yaml (RDS) and clusters.yaml (CDS) when a file is renamed into DIR, so each
file is written under a temporary name in DIR and renamed over the old one: Envoy never reads half a
file. A change goes in three steps:

    1. clusters.yaml: the old clusters and the new ones    a new route's cluster exists first
    2. routes.yaml: the new routes
    3. clusters.yaml: the new clusters only                a removed route is gone before its cluster

A file whose content would not change is not written (a rewrite would make Envoy rebuild for
nothing), and a step with nothing to order is not waited for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from authz.config import Config
from authz.envoy.bootstrap import (
    BOOTSTRAP_FILE,
    CLUSTERS_FILE,
    ROUTES_FILE,
    clusters_in,
    render_clusters,
    render_dynamic_bootstrap,
    render_routes,
    upstream_clusters,
)

log = logging.getLogger("authz")
# How long Envoy is given to apply one file before the next step relies on it. Envoy hears of the
# rename at once (inotify) and applies it within milliseconds; a cluster on a DNS name becomes
# usable once its first lookup answers. The writer cannot see Envoy, so it waits, with a margin.
APPLY_PAUSE = 1.0


def prepare(directory: str | Path) -> Path:
    """`directory` as an absolute path (Envoy resolves none of it), created owner-only if missing."""
    path = Path(directory).absolute()
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{path} is not a directory")
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def write_file(path: Path, text: str) -> bool:
    """Put `text` in `path`, owner-only, by a rename from a temporary file beside it; False (and
    nothing written) when the file already holds exactly that."""
    with contextlib.suppress(OSError, UnicodeDecodeError):
        if path.read_text(encoding="utf-8") == text:
            os.chmod(path, 0o600)
            return False
    # mkstemp makes the file 0600; its creation is not a rename, so Envoy does not read it.
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return True


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return ""


def publish(
    config: Config,
    directory: str | Path,
    *,
    admin_address: str | None = None,
    bootstrap: bool = True,
    pause: float = APPLY_PAUSE,
    sleep: Callable[[float], None] = time.sleep,
) -> list[str]:
    """Write the config's routes and clusters to `directory` in the safe order (and the bootstrap,
    last, when `bootstrap`); the names of the files written, in the order written."""
    folder = prepare(directory)
    written: list[str] = []

    def put(name: str, text: str) -> bool:
        if write_file(folder / name, text):
            written.append(name)
            return True
        return False

    # With no routes file yet, no Envoy reads this directory: nothing to wait for.
    live = (folder / ROUTES_FILE).exists()
    old = clusters_in(_read(folder / CLUSTERS_FILE))
    new = {str(cluster["name"]): cluster for cluster in upstream_clusters(config)}
    added, removed = new.keys() - old.keys(), old.keys() - new.keys()
    if put(CLUSTERS_FILE, render_clusters({**old, **new}.values())) and added and live:
        sleep(pause)
    if put(ROUTES_FILE, render_routes(config)) and removed and live:
        sleep(pause)
    if removed:
        put(CLUSTERS_FILE, render_clusters(new.values()))
    if bootstrap:
        put(BOOTSTRAP_FILE, render_dynamic_bootstrap(config, str(folder), admin_address))
    return written


class Publisher:
    """Publishes configs to one directory, one at a time (two writers would undo each other's order)."""

    def __init__(
        self, directory: str | Path, *, admin_address: str | None = None, bootstrap: bool = True,
        pause: float = APPLY_PAUSE,
    ) -> None:  # fmt: skip
        self.directory = directory
        self.admin_address = admin_address
        self.bootstrap = bootstrap
        self.pause = pause
        self._lock = asyncio.Lock()

    async def publish(self, config: Config) -> list[str]:
        """Write `config`'s files (in a thread: the steps wait); log what changed."""
        async with self._lock:
            written = await asyncio.to_thread(
                publish, config, self.directory, admin_address=self.admin_address, bootstrap=self.bootstrap,
                pause=self.pause,
            )  # fmt: skip
        if written:
            log.info("envoy files written", extra={"fields": {"directory": str(self.directory), "files": written}})
        return written


class ConfigDirWriter:
    """`envoy_config_dir`: `authz serve` writes routes.yaml and clusters.yaml there at start and
    after each reload (the bootstrap is `authz envoy-config --out`'s, which knows Envoy's admin)."""

    def __init__(self) -> None:
        self.publishers: dict[str, Publisher] = {}

    async def publish(self, config: Config) -> None:
        """Write `config`'s files to its `envoy_config_dir` (without one, nothing); OSError if it cannot."""
        directory = config.envoy_config_dir
        if directory is None:
            return
        publisher = self.publishers.setdefault(directory, Publisher(directory, bootstrap=False))
        await publisher.publish(config)

    async def on_swapped(self, config: Config) -> None:
        """After a reload: a directory that cannot be written is logged, and authz serves on."""
        try:
            await self.publish(config)
        except OSError as exc:
            log.error("cannot write Envoy's files to envoy_config_dir: %s", exc)
