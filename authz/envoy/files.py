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
import fcntl
import json
import logging
import os
import stat
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

from authz.config import Config
from authz.envoy.bootstrap import (
    BOOTSTRAP_FILE,
    CLUSTERS_FILE,
    ROUTES_FILE,
    clusters_in,
    clusters_routed,
    listener_secrets,
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
READY_TIMEOUT = 30.0  # seconds to wait for Envoy to show a new cluster active (a DNS name answering)
LOCK_FILE = ".authz-envoy.lock"


def prepare(directory: str | Path) -> Path:
    """`directory` as an absolute path (Envoy resolves none of it), created owner-only if missing."""
    path = Path(directory).absolute()
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{path} is not a directory")
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def write_file(path: Path, text: str) -> bool:
    """Put `text` in `path` by a rename from a temporary file beside it; False (and nothing
    written) when the file already holds exactly that. A new file is owner-only; a file replaced
    keeps its mode (an operator who made the files group-readable for Envoy's user keeps that)."""
    with contextlib.suppress(OSError, UnicodeDecodeError):
        if path.read_text(encoding="utf-8") == text:
            return False
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode) & 0o640
    except OSError:
        mode = 0o600
    # mkstemp makes the file 0600; its creation is not a rename, so Envoy does not read it.
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(handle, mode | 0o600)
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


def _wait_for_envoy(pause: float, since: float, sleep: Callable[[float], None]) -> None:
    """Give Envoy `pause` from `since` (when the file it must apply was written): a writer that
    restarts, or a second one, waits out what is left of a pause that another began."""
    left = pause - (time.time() - since)
    if left > 0:
        sleep(left)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def publish(
    config: Config,
    directory: str | Path,
    *,
    admin_address: str | None = None,
    bootstrap: bool = True,
    pause: float = APPLY_PAUSE,
    sleep: Callable[[float], None] = time.sleep,
    ready: Callable[[set[str]], bool] | None = None,
    ready_timeout: float = READY_TIMEOUT,
) -> list[str]:
    """Write the config's routes and clusters to `directory` in the safe order (and the bootstrap,
    last, when `bootstrap`); the names of the files written, in the order written.

    Between steps the writer waits until Envoy can have applied the last one: `ready(names)`,
    when given, says whether Envoy has every cluster of `names` active (asked of its admin API,
    so a cluster on a DNS name is waited for until its first lookup answers, up to
    `ready_timeout`); without it, a fixed `pause` from when the file was written. A lock on
    DIR/.authz-envoy.lock keeps a second writer (another process) from interleaving its steps."""
    folder = prepare(directory)
    written: list[str] = []

    def put(name: str, text: str) -> bool:
        if write_file(folder / name, text):
            written.append(name)
            return True
        return False

    with _locked(folder):
        # With no routes file yet, no Envoy reads this directory: nothing to wait for.
        live = (folder / ROUTES_FILE).exists()
        old = clusters_in(_read(folder / CLUSTERS_FILE))
        new = {str(cluster["name"]): cluster for cluster in upstream_clusters(config)}
        removed = old.keys() - new.keys()
        put(CLUSTERS_FILE, render_clusters({**old, **new}.values()))
        routes, served = render_routes(config), _read(folder / ROUTES_FILE)
        # The clusters the new routes send to and the served ones do not: Envoy must have them
        # before the routes. They were written just now, or by a writer that stopped half-way (a
        # restart) or by another one: clusters.yaml's age says how much of the pause is left.
        coming = set(new) - clusters_routed(served)
        if live and routes != served and coming:
            if ready is not None:
                _until_ready(ready, coming, ready_timeout, sleep)
            else:
                _wait_for_envoy(pause, _mtime(folder / CLUSTERS_FILE), sleep)
        put(ROUTES_FILE, routes)
        if removed:
            if live:
                _wait_for_envoy(pause, _mtime(folder / ROUTES_FILE), sleep)
            put(CLUSTERS_FILE, render_clusters(new.values()))
        # The listener's certificates (SDS): Envoy follows their files; these say which files.
        for name, text in listener_secrets(config).items():
            put(name, text)
        if bootstrap:
            put(BOOTSTRAP_FILE, render_dynamic_bootstrap(config, str(folder), admin_address))
    return written


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """An exclusive lock on DIR/.authz-envoy.lock (its name has no rename into DIR: Envoy ignores it)."""
    handle = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        os.close(handle)


def _until_ready(
    ready: Callable[[set[str]], bool], names: set[str], timeout: float, sleep: Callable[[float], None]
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if ready(names):
                return
        except OSError:
            pass
        sleep(0.1)
    log.warning(
        "Envoy did not show every new cluster active in time; writing the routes anyway",
        extra={"fields": {"clusters": sorted(names), "timeout_s": timeout}},
    )


def admin_ready(admin_address: str) -> Callable[[set[str]], bool]:
    """`ready` for `publish`: whether Envoy's admin lists every cluster of `names` with a host
    (a warming cluster, one whose DNS name has not answered yet, is not listed)."""

    def ready(names: set[str]) -> bool:
        url = f"http://{admin_address}/clusters?format=json"
        with urllib.request.urlopen(url, timeout=2) as answer:
            statuses = json.load(answer).get("cluster_statuses", [])
        active = {status.get("name") for status in statuses if status.get("host_statuses")}
        return names <= active

    return ready


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
        # With Envoy's admin known, a new cluster is waited for until Envoy shows it active.
        self.ready = admin_ready(admin_address) if admin_address else None
        self._lock = asyncio.Lock()

    async def publish(self, config: Config) -> list[str]:
        """Write `config`'s files (in a thread: the steps wait); log what changed."""
        async with self._lock:
            written = await asyncio.to_thread(
                publish, config, self.directory, admin_address=self.admin_address, bootstrap=self.bootstrap,
                pause=self.pause, ready=self.ready,
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
