"""Refresh IdP tokens before they expire, in the background (never on the request path).

Each worker scans for sessions whose access token expires within REFRESH_AHEAD and takes the
session's lease in the store before refreshing, so exactly one worker uses a (rotating) refresh
token. A refusal from the IdP (`invalid_grant`) ends the session; an unreachable IdP is retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
import time

from authz.errors import IdpError, IdpRefused
from authz.identity.oidc import OidcClient, Tokens
from authz.runtime.holder import RuntimeHolder
from authz.runtime.state import Runtime
from authz.sessions.session import Session

log = logging.getLogger("authz.refresh")

REFRESH_AHEAD = 60.0
LEASE = 30.0


async def refresh_one(rt: Runtime, oidc: OidcClient, session: Session, owner: str, now: float) -> str:
    """Refresh one session's tokens; 'refreshed', 'ended', 'retry' or 'busy' (another worker has it)."""
    if not rt.store.try_lease(session.id, owner, now + LEASE, now):
        return "busy"
    current = rt.store.get(session.id, now)
    if current is None or current.refresh_token != session.refresh_token:
        return "busy"  # deleted, or refreshed by another worker meanwhile
    try:
        meta = await oidc.metadata()
        tokens = await oidc.refresh(
            meta, Tokens(session.access_token, session.id_token, session.refresh_token, session.token_expires_at)
        )
        info = await oidc.userinfo(meta, tokens.access_token)
    except IdpRefused as exc:
        rt.store.delete(session.id)
        log.info("session ended: refresh refused", extra={"fields": {"user": session.user_id, "error": str(exc)}})
        return "ended"
    except IdpError as exc:
        log.warning("refresh failed; will retry", extra={"fields": {"user": session.user_id, "error": str(exc)}})
        return "retry"
    updated = dataclasses.replace(
        current,
        access_token=tokens.access_token,
        id_token=tokens.id_token,
        refresh_token=tokens.refresh_token,
        token_expires_at=tokens.expires_at,
    )
    if info and info.get("sub") == session.user_id:
        groups = info.get("groups", list(current.groups))
        updated = dataclasses.replace(
            updated,
            email=str(info.get("email", current.email)),
            name=str(info.get("name", current.name)),
            groups=tuple(str(g) for g in groups) if isinstance(groups, list) else current.groups,
            claims={**current.claims, **info},
        )
    rt.store.put(updated)
    return "refreshed"


async def refresh_loop(holder: RuntimeHolder, stop: asyncio.Event, interval: float = 5.0) -> None:
    """Refresh due sessions until `stop` is set; each pass uses the Runtime current when it starts."""
    owner = secrets.token_hex(8)
    while not stop.is_set():
        now = time.time()
        rt = holder.current
        try:
            if rt.oidc is not None:
                for session in rt.store.due_for_refresh(now + REFRESH_AHEAD):
                    await refresh_one(rt, rt.oidc, session, owner, now)
        except Exception:
            log.exception("refresh pass failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
