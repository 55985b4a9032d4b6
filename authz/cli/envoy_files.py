"""`authz envoy-config --out DIR [--watch]`: Envoy's files written once, or kept up to date.

With `--watch` the command runs until SIGTERM or SIGINT and rewrites the files (in the safe order,
authz/envoy/files.py) when the config file or a file it names changes, or on SIGHUP. A new config
that does not load is logged with its errors and the files stay as they are.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
import sys

from authz.config import Config
from authz.config.load import load_config
from authz.envoy.bootstrap import BOOTSTRAP_FILE
from authz.envoy.files import Publisher, publish
from authz.errors import ConfigError
from authz.ops.logs import configure_logging
from authz.ops.watch import keep, watch_files

log = logging.getLogger("authz")


def write_once(config: Config, directory: str, admin_address: str | None) -> int:
    """Write the three files and exit: 0, or 1 when the directory cannot be written."""
    try:
        written = publish(config, directory, admin_address=admin_address)
    except OSError as exc:
        print(f"--out: cannot write {directory}: {exc}", file=sys.stderr)
        return 1
    print(f"{directory}: {', '.join(written) or 'unchanged'}", file=sys.stderr)
    return 0


class _Follower:
    """The config last loaded well, and the files written from it."""

    def __init__(self, path: str, config: Config, publisher: Publisher, workers: int | None) -> None:
        self.path = path
        self.config = config
        self.publisher = publisher
        self.workers = workers  # `--workers`, which stands in for the file's `workers` on every load
        self._tasks: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()  # one load-and-write at a time: a SIGHUP and a file change in order

    def files(self) -> list[str]:
        return [self.path, *self.config.files]

    def trigger(self, why: str) -> None:
        """Rewrite from a signal handler (the task is kept until it ends)."""
        keep(self._tasks, self.update(why))

    async def update(self, why: str) -> None:
        """Load the config again and write what changed; a config that does not load changes nothing."""
        async with self._lock:
            await self._update(why)

    async def _update(self, why: str) -> None:
        try:
            config = await asyncio.to_thread(load_config, self.path)
        except ConfigError as exc:
            for problem in exc.problems:
                log.error("config refused: %s", problem, extra={"fields": {"trigger": why}})
            log.error("Envoy's files stay as they are (%d problems in the config)", len(exc.problems))
            return
        if self.workers is not None:
            config = dataclasses.replace(config, workers=self.workers)
        self.config = config
        await self.write(why)

    async def write(self, why: str) -> None:
        try:
            written = await self.publisher.publish(self.config)
        except OSError as exc:
            log.error("cannot write Envoy's files: %s", exc, extra={"fields": {"trigger": why}})
            return
        if BOOTSTRAP_FILE in written:
            log.warning(
                "%s changed (the listener or authz's clusters): Envoy reads it at start only; restart Envoy to apply",
                BOOTSTRAP_FILE,
            )

    async def settle(self) -> None:
        """Let a rewrite that a signal started finish (its steps must not stop half-way)."""
        while self._tasks:
            await asyncio.gather(*self._tasks)


def write_and_watch(path: str, config: Config, directory: str, admin_address: str | None, workers: int | None) -> int:
    """Write the files, then keep them up to date until SIGTERM or SIGINT (exit 0); 1 when the
    directory cannot be written at start."""
    configure_logging(config.log_level, config.logs.format)
    # Until the loop's handler is in place, a SIGHUP must not end the process.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        written = publish(config, directory, admin_address=admin_address)
    except OSError as exc:
        print(f"--out: cannot write {directory}: {exc}", file=sys.stderr)
        return 1
    log.info("envoy files written", extra={"fields": {"directory": directory, "files": written}})
    follower = _Follower(path, config, Publisher(directory, admin_address=admin_address), workers)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, follower.trigger, "SIGHUP")
        log.info("watching the config for Envoy's files", extra={"fields": {"config": path, "directory": directory}})
        await watch_files(follower.files, lambda: follower.update("file change"), stop)
        await follower.settle()

    asyncio.run(main())
    return 0
