"""Resident memory of the session cache when full (100k sessions) and of the opened-cookie memo.

    python scripts/bench/cache_memory.py

Sessions as a sign-in makes them (name, email, 10 groups, a few claims, three IdP tokens of the
oidc-provider's sizes), read through the cache as Checks would; RSS measured from /proc.
"""

from __future__ import annotations

import gc
import secrets
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from authz.sessions.cache import MAX_ENTRIES, CachedStore
from authz.sessions.codec import HandleCodec
from authz.sessions.session import Session, SessionHandle
from authz.sessions.stores import MemoryStore


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Backing(MemoryStore):
    """As SQLite: the cache sits in front of it, and every read decodes a new copy."""

    blocking = True

    def get(self, session_id: str, now: float | None = None) -> Session | None:
        found = super().get(session_id, now)
        return Session.from_json(found.to_json()) if found is not None else None


def main() -> None:
    now = time.time()
    store = Backing()
    for i in range(MAX_ENTRIES):
        store.put(Session(
            f"sid-{i:06d}-{secrets.token_hex(8)}", f"user-{i}", f"user{i}@example.com", f"User {i}",
            tuple(f"group-{g}" for g in range(10)), {"department": "engineering", "locale": "en"},
            int(now), int(now + 3600), id_token="x" * 900, access_token="y" * 700, refresh_token="z" * 60,
        ))  # fmt: skip
    ids = list(store._sessions)
    gc.collect()
    before = rss_mb()
    cache = CachedStore(store, ttl=10)
    for sid in ids:
        cache.get(sid, now)
    gc.collect()
    print(f"session cache, {len(cache):,} entries (each as a store read decodes it): +{rss_mb() - before:.1f} MB")
    codec = HandleCodec(secrets.token_bytes(32))
    tokens = [codec.seal(SessionHandle(sid, "u", "app.example.com", int(now), int(now + 3600))) for sid in ids[:50_000]]
    gc.collect()
    before = rss_mb()
    for token in tokens:
        codec.open(token, "app.example.com", now)
    gc.collect()
    print(f"opened-cookie memo, 50,000 entries: +{rss_mb() - before:.1f} MB")


if __name__ == "__main__":
    main()
