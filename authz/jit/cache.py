"""The Check's view of grants: a user's active grant records on a route, read from the store at
most once per `session_cache_ttl` per process.

It holds grant records with their `expires_at`, never an answer: the decide step compares
`expires_at` with the request's clock, so a grant stops working at that second whatever is cached.
A change made in this process (approve, reject, revoke) drops the entry at once; a change made in
another worker is seen within the bound, as a sign-out is.
"""

from __future__ import annotations

import json
import threading

from authz.jit.model import Grant
from authz.jit.store import GrantStore
from authz.sessions.cache import MISS, Miss

MAX_ENTRIES = 100_000


class GrantCache:
    """(route, user) → the active grants the store held when last read, for `ttl` seconds."""

    def __init__(self, store: GrantStore, ttl: float, max_entries: int = MAX_ENTRIES) -> None:
        self.store = store
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: dict[tuple[str, str], tuple[float, tuple[Grant, ...]]] = {}
        self._lock = threading.Lock()
        self._writes = 0  # a read that raced a change is not remembered (it may be stale)

    def peek(self, route: str, user: str, now: float) -> tuple[Grant, ...] | Miss:
        """The cached active grants, or MISS when only the store can tell (no I/O)."""
        entry = self._entries.get((route, user))
        if entry is None or entry[0] + self.ttl <= now:
            return MISS
        return entry[1]

    def load(self, route: str, user: str, now: float) -> tuple[Grant, ...]:
        """The active grants from the store (blocks), remembered for `ttl`."""
        writes = self._writes
        grants = self.store.active(route, user)
        with self._lock:
            if writes == self._writes:
                entries = self._entries
                entries.pop((route, user), None)
                entries[(route, user)] = (now, grants)
                while len(entries) > self.max_entries:
                    del entries[next(iter(entries))]
        return grants

    def forget(self, route: str, user: str) -> None:
        """A grant of this user on this route changed here: the next Check reads the store."""
        with self._lock:
            self._writes += 1
            self._entries.pop((route, user), None)

    def clear(self) -> None:
        with self._lock:
            self._writes += 1
            self._entries.clear()

    def invalidate(self, message: str) -> None:
        """A change elsewhere, pushed by the Redis store: `g:["route","user"]`, or `*` for anything."""
        if message == "*":
            self.clear()
            return
        kind, _, pair = message.partition(":")
        if kind != "g":
            return
        try:
            route, user = json.loads(pair)
        except (ValueError, TypeError):
            self.clear()  # unreadable: forget everything rather than keep what it may have named
            return
        self.forget(str(route), str(user))
