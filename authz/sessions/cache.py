"""A per-process cache in front of a blocking session store, so a steady Check does no I/O.

An entry — a session, or the fact that there is none — is trusted for `ttl` seconds after it was
read; then the store is asked again. What this process writes through the cache (a sign-in, a
refresh, a sign-out, a revocation) replaces or drops the entry at once; what another worker or
replica writes is seen within `ttl`: that is the documented bound on how long a session revoked
elsewhere keeps working here. With Redis, other replicas' writes are pushed (`invalidate`) and the
bound only covers a lost message. A cached session is still checked against its own `expires_at` with
the request's `now`, so it never outlives its expiry by a second.

The cache holds the sessions read in the last `ttl` seconds (each write drops up to four entries
that are past it, oldest first) and never more than `max_entries`; past that the entry read
longest ago goes first. A session with its IdP tokens takes about 3.5 KB here
(`scripts/bench/cache_memory.py`: 100,000 cost 350 MB), so at one process's ~2,000 Checks/s and a
10 s TTL the cache stays under ~70 MB. It lives in the Runtime, so a reloaded config (a new
`cookie_secret` among it) starts empty.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from enum import Enum

from authz.sessions.session import Session
from authz.sessions.stores import SessionStore

MAX_ENTRIES = 100_000


class Miss(Enum):
    """What `peek` answers when only the store can tell: distinct from None, which is "no session"."""

    MISS = 0


MISS = Miss.MISS


class CachedStore:
    """A SessionStore that answers repeated reads from memory for `ttl` seconds."""

    def __init__(self, store: SessionStore, ttl: float, max_entries: int = MAX_ENTRIES) -> None:
        self.inner = store
        self.blocking = store.blocking  # a miss still reads the store
        self.ttl = ttl
        self.max_entries = max_entries
        # session id → (read at, the session or None). Insertion order is read order: the oldest
        # entry is first. Reads are plain dict lookups (atomic under the GIL); writes take the lock.
        self._entries: dict[str, tuple[float, Session | None]] = {}
        self._lock = threading.Lock()
        # Bumped by every write: a read that raced a write is not remembered (it may be stale).
        self._writes = 0

    def peek(self, session_id: str, now: float) -> Session | Miss | None:
        """The live session or None if a fresh entry says so; MISS when only the store can tell."""
        entry = self._entries.get(session_id)
        if entry is None or entry[0] + self.ttl <= now:
            return MISS
        session = entry[1]
        if session is not None and session.expires_at <= now:
            return None
        return session

    def get(self, session_id: str, now: float | None = None) -> Session | None:
        if now is not None:
            found = self.peek(session_id, now)
            if found is not MISS:
                return found
        writes = self._writes
        session = self.inner.get(session_id, now)
        if now is not None:
            self._remember(session_id, now, session, writes)
        return session

    def fresh(self, session_id: str, now: float) -> Session | None:
        """The session as the store holds it now, past the cache (and remembered): the refresher
        must use the latest refresh token, which another worker may have rotated."""
        writes = self._writes
        session = self.inner.get(session_id, now)
        self._remember(session_id, now, session, writes)
        return session

    def _remember(self, session_id: str, now: float, session: Session | None, writes: int) -> None:
        with self._lock:
            if writes != self._writes:
                return
            entries = self._entries
            entries.pop(session_id, None)
            entries[session_id] = (now, session)
            while len(entries) > self.max_entries:
                del entries[next(iter(entries))]
            # The oldest reads come first: drop a few that are past the TTL (no Check may use them
            # again), so the cache holds about the sessions read in the last `ttl` seconds.
            for _ in range(4):
                oldest = next(iter(entries))
                if entries[oldest][0] + self.ttl > now:
                    break
                del entries[oldest]

    def forget(self, session_id: str) -> None:
        """Drop one entry (the session changed or ended)."""
        with self._lock:
            self._writes += 1
            self._entries.pop(session_id, None)

    def clear(self) -> None:
        with self._lock:
            self._writes += 1
            self._entries.clear()

    def forget_user(self, user_id: str) -> None:
        """Drop every entry of a user's sessions (their sessions were revoked)."""
        with self._lock:
            self._writes += 1
            for sid in [sid for sid, (_, s) in self._entries.items() if s is not None and s.user_id == user_id]:
                del self._entries[sid]

    def invalidate(self, message: str) -> None:
        """A write elsewhere, pushed by the store (authz/sessions/redis_link.py): `s:{id}` a session
        changed or ended, `u:{user}` a user's sessions were revoked, `*` anything may have."""
        kind, _, name = message.partition(":")
        if kind == "s":
            self.forget(name)
        elif kind == "u":
            self.forget_user(name)
        elif message == "*":
            self.clear()

    def __len__(self) -> int:
        return len(self._entries)

    # -- writes go to the store, and the entry goes --------------------------------------------

    def put(self, session: Session) -> None:
        self.inner.put(session)
        self.forget(session.id)

    def update(self, session: Session) -> bool:
        updated = self.inner.update(session)
        self.forget(session.id)
        return updated

    def delete(self, session_id: str) -> None:
        self.inner.delete(session_id)
        self.forget(session_id)

    def delete_user(self, user_id: str) -> int:
        ended = self.inner.delete_user(user_id)
        self.forget_user(user_id)
        return ended

    # -- everything else is the store's ------------------------------------------------------

    def sessions(self, user_id: str | None = None, now: float | None = None) -> Iterator[Session]:
        return self.inner.sessions(user_id, now)

    def claim_once(self, key: str, expires_at: float, now: float | None = None) -> bool:
        return self.inner.claim_once(key, expires_at, now)

    def stash(self, key: str, value: str, expires_at: float) -> bool:
        return self.inner.stash(key, value, expires_at)

    def take(self, key: str, now: float | None = None) -> str | None:
        return self.inner.take(key, now)

    def try_lease(self, session_id: str, owner: str, until: float, now: float | None = None) -> bool:
        return self.inner.try_lease(session_id, owner, until, now)

    def due_for_refresh(self, before: float, limit: int = 100) -> list[Session]:
        return self.inner.due_for_refresh(before, limit)

    def ping(self) -> None:
        self.inner.ping()  # never answered from the cache: it asks whether the store itself answers

    def close(self) -> None:
        self.clear()
        self.inner.close()
