"""Store reachability: a read of each store, for /readyz and the `authz_store_up` metric.

Envoy's health checks of the Check port never depend on it: a store outage must not eject every
replica at once (README, Operations).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from authz.runtime.holder import RuntimeHolder
from authz.runtime.state import Runtime

log = logging.getLogger("authz")
READY_TIMEOUT = 2.0  # seconds a store has to answer
PROBE_INTERVAL = 15.0


async def probe_loop(holder: RuntimeHolder, stop: asyncio.Event) -> None:
    """Set `authz_store_up` from a read of each store every PROBE_INTERVAL (metrics on only)."""
    while not stop.is_set():
        rt = holder.current
        if rt.metrics.enabled:
            await probe_stores(rt)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), PROBE_INTERVAL)


async def probe_stores(rt: Runtime) -> str | None:
    """Read each store once (bounded by READY_TIMEOUT); record the result; the first store that
    did not answer, or None."""
    stores: list[tuple[str, Callable[[], None]]] = [("session", rt.store.ping)]
    if rt.grants is not None:
        stores.append(("grant", rt.grants.ping))
    failed = None
    for name, ping in stores:
        try:
            await asyncio.wait_for(asyncio.to_thread(ping), READY_TIMEOUT)
            rt.metrics.store_up(name, True)
        except Exception as exc:  # any failure to answer is "down", never a crash of the loop
            rt.metrics.store_up(name, False)
            rt.metrics.store_error(name)
            log.warning("the %s store does not answer: %s", name, exc or type(exc).__name__)
            failed = failed or name
    return failed
