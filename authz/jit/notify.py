"""The just-in-time background pass: record expiries and deliver notifications, in one worker at a time.

Every worker runs `jit_loop`; each tick, the one holding the `jit` lease in the grant store (taken
or renewed, as the token refresher's leases are) records as expired every active grant whose
`expires_at` has passed (access already ended then: the Check compares the clock), then delivers
the notifications waiting in the store's outbox. The lease is renewed before each delivery, so a
slow endpoint never lets a second worker deliver the same event.

A notification is POSTed as JSON to the route's `notify_url` with `X-Authz-Event-Id` (the event id a
receiver de-duplicates on: delivery is at least once) and, with `notify_secret`,
`X-Authz-Timestamp` and `X-Authz-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`.
A 2xx answer delivers it; anything else (an error, a timeout, another status) is retried with
back-off, FIRST_RETRY doubling to MAX_RETRY, and given up after MAX_ATTEMPTS with an error log
line. Redirects are not followed. The URL is never logged: a Slack webhook URL is a secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Callable

import httpx2

from authz.errors import StoreUnavailable
from authz.jit import service
from authz.jit.model import Delivery
from authz.runtime.holder import RuntimeHolder
from authz.runtime.state import Runtime

log = logging.getLogger("authz.jit")

LEASE_NAME = "jit"
TICK = 1.0
LEASE = 15.0  # longer than a delivery's timeout, renewed before each delivery
TIMEOUT = 5.0
FIRST_RETRY = 2.0
MAX_RETRY = 300.0
MAX_ATTEMPTS = 12  # about 25 minutes of retries


def signature(secret: bytes, timestamp: str, body: str) -> str:
    """The `X-Authz-Signature` value: `sha256=` and the hex HMAC-SHA256 of `<timestamp>.<body>`."""
    return "sha256=" + hmac.new(secret, f"{timestamp}.{body}".encode(), hashlib.sha256).hexdigest()


def retry_delay(attempts: int) -> float:
    """Seconds before attempt `attempts + 1`: FIRST_RETRY doubling, at most MAX_RETRY."""
    return float(min(FIRST_RETRY * 2.0 ** max(attempts - 1, 0), MAX_RETRY))


async def deliver(rt: Runtime, client: httpx2.AsyncClient, delivery: Delivery, now: float) -> None:
    """One POST of one notification; the store remembers the outcome."""
    assert rt.grants is not None
    route = rt.config.routes_by_id.get(delivery.route)
    jit = route.jit if route is not None else None
    if jit is None or jit.notify_url is None:
        log.warning("a notification's route no longer notifies; dropped", extra={"fields": {"event": delivery.id}})
        await asyncio.to_thread(rt.grants.delivered, delivery.id)
        return
    headers = {"content-type": "application/json", "x-authz-event-id": delivery.id}
    if jit.notify_secret is not None:
        stamp = str(int(now))
        headers["x-authz-timestamp"] = stamp
        headers["x-authz-signature"] = signature(jit.notify_secret.value, stamp, delivery.body)
    fields = {"event": delivery.id, "route": delivery.route, "attempt": delivery.attempts + 1}
    try:
        response = await client.post(jit.notify_url.value.decode(), content=delivery.body, headers=headers)
        problem = None if 200 <= response.status_code < 300 else f"HTTP {response.status_code}"
    except httpx2.TimeoutException:
        problem = "timed out"
    except Exception as exc:  # any fault is a failed attempt, never a stuck outbox
        problem = type(exc).__name__  # never the message: it may carry the URL
    if problem is None:
        await asyncio.to_thread(rt.grants.delivered, delivery.id)
        log.info("notification delivered", extra={"fields": fields})
        return
    attempts = delivery.attempts + 1
    if attempts >= MAX_ATTEMPTS:
        log.error("notification given up after %d attempts (%s)", attempts, problem, extra={"fields": fields})
        await asyncio.to_thread(rt.grants.delivered, delivery.id)
        return
    log.warning("notification not delivered (%s); will retry", problem, extra={"fields": fields})
    await asyncio.to_thread(rt.grants.postpone, delivery.id, attempts, now + retry_delay(attempts))


async def one_pass(rt: Runtime, client: httpx2.AsyncClient, owner: str, clock: Callable[[], float]) -> bool:
    """If this worker holds the lease: record expiries, then deliver what is due. False if it does not."""
    store = rt.grants
    if store is None:
        return False
    now = clock()
    if not await asyncio.to_thread(store.try_lease, LEASE_NAME, owner, now + LEASE, now):
        return False
    for grant in await asyncio.to_thread(service.expire_due, rt.config, store, now):
        rt.grant_changed(grant)
    for delivery in await asyncio.to_thread(store.due, now):
        now = clock()
        if not await asyncio.to_thread(store.try_lease, LEASE_NAME, owner, now + LEASE, now):
            return False
        try:
            await deliver(rt, client, delivery, now)
        except Exception:  # the store itself failed: the next pass tries again; the others go on
            log.exception("a notification could not be handled", extra={"fields": {"event": delivery.id}})
    return True


async def jit_loop(
    holder: RuntimeHolder, stop: asyncio.Event, clock: Callable[[], float] = time.time, tick: float = TICK
) -> None:
    """Run passes every `tick` seconds until `stop` (a failing pass is logged, never fatal)."""
    owner = secrets.token_hex(8)
    async with httpx2.AsyncClient(timeout=TIMEOUT, follow_redirects=False) as client:
        while not stop.is_set():
            try:
                await one_pass(holder.current, client, owner, clock)
            except StoreUnavailable:
                pass  # the store logs going down and coming back once each; the next pass tries again
            except Exception:
                log.exception("the just-in-time pass failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), tick)
