"""Watch files for a change by polling: what `authz serve` reloads on and `envoy-config --watch` rewrites on.

A poll of each path's identity and contents once a second, followed through symlinks: it sees an
in-place write, an atomic rename and a symlink swap (how Kubernetes updates a mounted ConfigMap or
Secret) alike, with no platform-specific notification API.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any

WATCH_INTERVAL = 1.0
SETTLE = 0.2  # a writer may still be writing when its change is seen


@dataclass(frozen=True, slots=True)
class Stamp:
    """What identifies a file's contents without reading it: followed through symlinks."""

    device: int
    inode: int
    size: int
    mtime_ns: int
    ctime_ns: int


def stamp(path: str) -> Stamp | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return Stamp(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


async def watch_files(
    paths: Callable[[], Iterable[str]],
    changed: Callable[[], Awaitable[object]],
    stop: asyncio.Event,
    interval: float = WATCH_INTERVAL,
) -> None:
    """Await `changed()` whenever a file of `paths()` changes (asked again after each change, since
    a new config may name other files), until `stop` is set."""

    def stamps() -> dict[str, Stamp | None]:
        return {path: stamp(path) for path in paths()}

    seen = stamps()
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
        if stop.is_set():
            return
        if stamps() != seen:
            await asyncio.sleep(SETTLE)
            await changed()
            seen = stamps()


def keep(tasks: set[asyncio.Task[Any]], work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
    """Run `work` as a task held in `tasks` until it ends (the loop keeps only weak references),
    so a signal handler can start it and a shutdown can find it."""
    task = asyncio.get_running_loop().create_task(work)
    tasks.add(task)
    task.add_done_callback(tasks.discard)
    return task
