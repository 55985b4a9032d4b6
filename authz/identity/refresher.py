"""Refresh IdP tokens before they expire, in the background (never on the request path).

Each pass takes the sessions whose access token expires within REFRESH_AHEAD and, for each, the
session's lease in the store, so exactly one worker uses a (rotating) refresh token. What a failure
does depends on whose fault it is:

- `invalid_grant` (RFC 6749 §5.2: the refresh token is expired, revoked or spent) ends the session,
  and so does a refreshed ID token or userinfo that fails verification or names another user.
- Any other refusal (`invalid_client`, `unauthorized_client`, `invalid_scope`, …) is an operator
  fault, such as a mistyped or rotated idp_client_secret: logged at ERROR with the likely cause and
  retried. It never ends a session, or a bad secret would sign everyone out as their tokens came due.
- An IdP that is unreachable, answers HTTP 5xx or nonsense, or times out is retried.

Retries back off (`Backoff`): FIRST_RETRY doubling to MAX_RETRY. A pass stops at the first fault and
no pass runs until the process-wide delay is over, so a down IdP or a bad secret costs one request
per delay, not one per session. The session that failed also waits out its own delay behind
sessions that never failed, so one session the IdP keeps refusing cannot starve the others. An
answer from the IdP clears the process-wide delay; a new OIDC client (a reloaded config) starts afresh.

The user's claims are merged again at each refresh by the sign-in rule (`claims.merge_identity`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
import time
from collections.abc import Callable, Iterable
from enum import StrEnum

from authz.errors import IdpError, IdpRefused, InvalidIdToken, StoreUnavailable
from authz.identity.claims import Identity, merge_identity, with_identity
from authz.identity.idtoken import stored_claims
from authz.identity.oidc import Metadata, OidcClient, Tokens
from authz.runtime.holder import RuntimeHolder
from authz.runtime.state import Runtime
from authz.sessions.session import Session

log = logging.getLogger("authz.refresh")

REFRESH_AHEAD = 60.0
LEASE = 30.0
FIRST_RETRY = 10.0
MAX_RETRY = 300.0

# The likely cause of a refusal other than invalid_grant, for the operator (RFC 6749 §5.2 codes).
_CAUSES = {
    "invalid_client": "check idp_client_id and idp_client_secret (mistyped, or rotated at the IdP?)",
    "unauthorized_client": "the IdP does not let this client (idp_client_id) use refresh tokens",
    "unsupported_grant_type": "the IdP does not allow the refresh_token grant for this client",
    "invalid_scope": "check idp_scopes against the scopes the IdP allows this client",
    "invalid_request": "the IdP finds the refresh request malformed; check idp_provider_url and the client there",
}
_OTHER_CAUSE = "check idp_client_id, idp_client_secret and the client's settings at the IdP"


class Outcome(StrEnum):
    """What became of one session's refresh."""

    REFRESHED = "refreshed"  # new tokens stored
    ENDED = "ended"  # the IdP refused the grant, or vouched for no one we know: session deleted
    RETRY = "retry"  # the IdP or authz's own client credentials are at fault: tried again later
    BUSY = "busy"  # another worker has it, refreshed it already, or the session is gone


class Backoff:
    """When to ask the IdP again after faults: one process-wide delay, and one per failing session.

    Each doubles from `first` to `cap` with every fault in a row. Time is always passed in.
    """

    def __init__(self, first: float = FIRST_RETRY, cap: float = MAX_RETRY) -> None:
        self.first, self.cap = first, cap
        self._faults = 0  # faults since the IdP last answered, whichever sessions they were for
        self._until = 0.0
        self._sessions: dict[str, tuple[int, float]] = {}  # session id → (its faults, not before)

    def _delay(self, faults: int) -> float:
        return float(min(self.cap, self.first * 2 ** min(faults - 1, 30)))

    def paused(self, now: float) -> bool:
        """True while the process-wide delay runs: no session is tried."""
        return now < self._until

    def order(self, due: Iterable[Session], now: float) -> list[Session]:
        """The due sessions to try now: those that never failed first, then those whose delay is over."""
        due = list(due)
        fresh = [s for s in due if s.id not in self._sessions]
        retried = [s for s in due if s.id in self._sessions and self._sessions[s.id][1] <= now]
        return fresh + retried

    def keep(self, session_ids: Iterable[str]) -> None:
        """Forget sessions no longer due (refreshed elsewhere, ended, signed out)."""
        keep = set(session_ids)
        self._sessions = {sid: state for sid, state in self._sessions.items() if sid in keep}

    def fault(self, session_id: str, now: float) -> float:
        """Count a fault while refreshing this session; the seconds until the next pass."""
        self._faults += 1
        self._until = now + self._delay(self._faults)
        faults = self._sessions.get(session_id, (0, 0.0))[0] + 1
        self._sessions[session_id] = (faults, now + self._delay(faults))
        return self._until - now

    def answered(self, session_id: str) -> None:
        """The IdP answered for this session (refreshed or ended it): no more delay, for anyone."""
        self._faults, self._until = 0, 0.0
        self._sessions.pop(session_id, None)


async def refresh_one(
    rt: Runtime, oidc: OidcClient, session: Session, owner: str, now: float, backoff: Backoff | None = None
) -> Outcome:
    """Refresh one session's tokens and identity, with its lease; faults are counted in `backoff`."""
    outcome = await _refresh_one(rt, oidc, session, owner, now, backoff if backoff is not None else Backoff())
    if outcome is not Outcome.BUSY:  # another worker's refresh is counted there
        rt.metrics.refresh(outcome.value)
    return outcome


async def _refresh_one(
    rt: Runtime, oidc: OidcClient, session: Session, owner: str, now: float, backoff: Backoff
) -> Outcome:
    if not rt.store.try_lease(session.id, owner, now + LEASE, now):
        return Outcome.BUSY
    current = rt.stored_session(session.id, now)  # past the cache: another worker may have refreshed it
    if current is None or current.refresh_token != session.refresh_token:
        return Outcome.BUSY  # deleted, or refreshed by another worker meanwhile
    fields: dict[str, object] = {"user": current.user_id, "session": current.id[:8]}
    previous = Tokens(current.access_token, current.id_token, current.refresh_token, current.token_expires_at)
    try:
        meta = await oidc.metadata()
        tokens = await oidc.refresh(meta, previous, now)
    except IdpRefused as exc:
        if exc.error == "invalid_grant":
            return _end(rt, current, backoff, "the identity provider refused the refresh token", fields)
        delay = backoff.fault(current.id, now)
        cause = _CAUSES.get(exc.error, _OTHER_CAUSE)
        log.error(
            "the identity provider refused a token refresh with %r: %s. Sessions are kept; retrying in %.0fs",
            exc.error,
            cause,
            delay,
            extra={"fields": {**fields, "error": exc.error, "retry_in": delay}},
        )
        return Outcome.RETRY
    except IdpError as exc:  # IdpUnavailable, IdpTimeout: the IdP's trouble, not the user's
        delay = backoff.fault(current.id, now)
        log.warning(
            "token refresh failed; the session is kept, retrying in %.0fs",
            delay,
            extra={"fields": {**fields, "error": exc.detail, "retry_in": delay}},
        )
        return Outcome.RETRY
    # The IdP has issued new tokens and may have spent the old refresh token (rotation): from here they
    # are stored whatever else fails, unless they turn out to vouch for someone else.
    identity: Identity | None
    try:
        identity = await _identity(oidc, meta, current, tokens, now, rt.config.allow_unverified_email)
    except InvalidIdToken as exc:
        return _end(rt, current, backoff, f"the refreshed identity is invalid: {exc.detail}", fields, logging.WARNING)
    except IdpError as exc:
        identity = None
        # Unverified (the JWKS could not be fetched) or unmerged: keep the ID token the claims came from.
        tokens = dataclasses.replace(tokens, id_token=current.id_token)
        log.warning(
            "tokens refreshed, but not the user's claims; they are kept until the next refresh",
            extra={"fields": {**fields, "error": exc.detail}},
        )
    updated = dataclasses.replace(
        current,
        access_token=tokens.access_token,
        id_token=tokens.id_token,
        refresh_token=tokens.refresh_token,
        token_expires_at=tokens.expires_at,
    )
    backoff.answered(current.id)
    if not rt.store.update(with_identity(updated, identity) if identity is not None else updated):
        # Signed out or revoked while the IdP answered: it stays ended, and the tokens just issued
        # are revoked at the IdP as sign-out does (best effort).
        log.info("session ended during its refresh; not stored again", extra={"fields": fields})
        try:
            await oidc.revoke(meta, tokens.refresh_token, "refresh_token")
            await oidc.revoke(meta, tokens.access_token, "access_token")
        except IdpError as exc:
            log.warning("token revocation failed", extra={"fields": {**fields, "error": exc.detail}})
        return Outcome.ENDED
    return Outcome.REFRESHED


async def _identity(
    oidc: OidcClient, meta: Metadata, session: Session, tokens: Tokens, now: float, allow_unverified_email: bool
) -> Identity:
    """The user's identity after a refresh, merged from ID-token claims and userinfo as at sign-in."""
    if tokens.id_token != session.id_token:
        id_claims = await oidc.verify_refreshed(meta, tokens.id_token, session.user_id, now)
    else:
        # No new ID token: the stored one's claims, read without verifying again (see stored_claims).
        # A session stored without a readable ID token (none is made so) gets its claims from userinfo.
        stored = stored_claims(session.id_token)
        id_claims = stored if stored.get("sub") == session.user_id else {"sub": session.user_id}
    info = await oidc.userinfo(meta, tokens.access_token)
    return merge_identity(id_claims, info, allow_unverified_email=allow_unverified_email)


def _end(
    rt: Runtime, session: Session, backoff: Backoff, why: str, fields: dict[str, object], level: int = logging.INFO
) -> Outcome:
    rt.store.delete(session.id)
    backoff.answered(session.id)
    log.log(level, "session ended: %s", why, extra={"fields": fields})
    return Outcome.ENDED


async def refresh_pass(
    rt: Runtime, owner: str, backoff: Backoff, clock: Callable[[], float] = time.time
) -> dict[str, Outcome]:
    """One pass over the due sessions, in back-off order, stopping at the first IdP or operator fault."""
    outcomes: dict[str, Outcome] = {}
    if rt.oidc is None or backoff.paused(clock()):
        return outcomes
    due = rt.store.due_for_refresh(clock() + REFRESH_AHEAD)
    backoff.keep(s.id for s in due)
    for session in backoff.order(due, clock()):
        outcome = await refresh_one(rt, rt.oidc, session, owner, clock(), backoff)
        outcomes[session.id] = outcome
        if outcome is Outcome.RETRY:
            break  # the next session would meet the same IdP or the same client credentials
    return outcomes


async def refresh_loop(
    holder: RuntimeHolder, stop: asyncio.Event, interval: float = 5.0, clock: Callable[[], float] = time.time
) -> None:
    """Refresh due sessions until `stop` is set; each pass uses the Runtime current when it starts."""
    owner = secrets.token_hex(8)
    backoff, client = Backoff(), holder.current.oidc
    while not stop.is_set():
        rt = holder.current
        if rt.oidc is not client:
            # A new client, perhaps with the fixed idp_client_secret: the old one's faults are not its own.
            backoff, client = Backoff(), rt.oidc
        try:
            await refresh_pass(rt, owner, backoff, clock)
        except StoreUnavailable:
            pass  # logged once by the store; sessions are refreshed again when it answers
        except Exception:
            log.exception("refresh pass failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
