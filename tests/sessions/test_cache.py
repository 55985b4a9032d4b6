"""The per-process session cache: what it answers, when it asks the store again, what a write does."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from authz.check.gather import Pending, gather
from authz.check.request import RequestContext
from authz.config import Config
from authz.errors import ConfigError
from authz.runtime.state import Runtime
from authz.sessions.cache import MISS, CachedStore
from authz.sessions.session import Session, SessionHandle
from authz.sessions.stores import MemoryStore, SQLiteStore

NOW = 1_000_000.0


def session(sid: str = "s1", user: str = "u1", expires: float = NOW + 3600) -> Session:
    return Session(sid, user, f"{user}@example.com", issued_at=int(NOW), expires_at=int(expires))


class Counting(MemoryStore):
    """A store that counts reads and can act in the middle of one."""

    blocking = True

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0
        self.during_read: Callable[[], None] | None = None

    def get(self, session_id: str, now: float | None = None) -> Session | None:
        self.reads += 1
        found = super().get(session_id, now)
        if self.during_read is not None:
            self.during_read()
        return found


def test_a_fresh_entry_answers_without_the_store_and_a_stale_one_asks_again() -> None:
    inner = Counting()
    inner.put(session())
    cache = CachedStore(inner, ttl=10)
    assert cache.peek("s1", NOW) is MISS
    assert cache.get("s1", NOW) == session() and inner.reads == 1
    assert cache.get("s1", NOW + 9.9) == session() and inner.reads == 1
    assert cache.peek("s1", NOW + 10) is MISS
    assert cache.get("s1", NOW + 10) == session() and inner.reads == 2


def test_no_session_is_remembered_too() -> None:
    inner = Counting()
    cache = CachedStore(inner, ttl=10)
    assert cache.get("gone", NOW) is None and cache.peek("gone", NOW + 1) is None and inner.reads == 1


def test_a_cached_session_never_outlives_its_expiry() -> None:
    inner = Counting()
    inner.put(session(expires=NOW + 5))
    cache = CachedStore(inner, ttl=10)
    assert cache.get("s1", NOW) is not None
    assert cache.peek("s1", NOW + 4.9) is not None
    assert cache.peek("s1", NOW + 5) is None


def test_writes_in_this_process_are_seen_at_once() -> None:
    inner = Counting()
    cache = CachedStore(inner, ttl=10)
    cache.put(session())
    assert cache.get("s1", NOW) is not None
    cache.delete("s1")  # a sign-out
    assert cache.peek("s1", NOW + 1) is MISS and cache.get("s1", NOW + 1) is None
    cache.put(session("s2", "u2"))
    cache.put(session("s3", "u2"))
    cache.put(session("s4", "u3"))
    for sid in ("s2", "s3", "s4"):
        cache.get(sid, NOW)
    assert cache.delete_user("u2") == 2  # a revocation
    assert cache.peek("s2", NOW) is MISS and cache.peek("s3", NOW) is MISS and cache.peek("s4", NOW) is not MISS
    renamed = Session("s4", "u3", "new@example.com", issued_at=int(NOW), expires_at=int(NOW + 60))
    cache.put(renamed)  # a refresh
    assert cache.get("s4", NOW) == renamed


def test_a_read_that_raced_a_write_is_not_remembered() -> None:
    inner = Counting()
    inner.put(session())
    cache = CachedStore(inner, ttl=10)
    inner.during_read = lambda: cache.delete("s1")  # a sign-out lands while the read is in flight
    cache.get("s1", NOW)
    inner.during_read = None
    assert cache.peek("s1", NOW) is MISS and cache.get("s1", NOW) is None


def test_the_cache_is_bounded_and_drops_the_oldest_read() -> None:
    inner = Counting()
    for i in range(5):
        inner.put(session(f"s{i}"))
    cache = CachedStore(inner, ttl=10, max_entries=3)
    for i in range(5):
        cache.get(f"s{i}", NOW)
    assert len(cache) == 3
    assert [cache.peek(f"s{i}", NOW) is MISS for i in range(5)] == [True, True, False, False, False]


def test_only_a_blocking_store_gets_a_cache_and_ttl_0_turns_it_off(
    make_config: Callable[..., Config], tmp_path: Path
) -> None:
    assert Runtime.build(make_config(), MemoryStore()).cache is None
    sqlite = SQLiteStore(tmp_path / "a.db", secret=os.urandom(32))
    rt = Runtime.build(make_config(), sqlite)
    assert rt.cache is not None and rt.store is rt.cache and rt.cache.ttl == 10
    off = SQLiteStore(tmp_path / "b.db", secret=os.urandom(32))
    assert Runtime.build(make_config(session_cache_ttl="0"), off).cache is None
    with pytest.raises(ConfigError, match="session_cache_ttl: must be at most 30s"):
        make_config(session_cache_ttl="5m")


def test_a_steady_check_gathers_without_a_blocking_read(make_config: Callable[..., Config], tmp_path: Path) -> None:
    route = {"id": "r", "from": "http://r.localhost", "to": "http://127.0.0.1:9", "allow_any_authenticated_user": True}
    rt = Runtime.build(make_config(routes=[route]), SQLiteStore(tmp_path / "s.db", secret=os.urandom(32)))
    rt.store.put(session())
    cookie = rt.codec.seal(SessionHandle("s1", "u1", "r.localhost", int(NOW), int(NOW + 3600)))
    req = RequestContext.build(
        method="GET", host="r.localhost", target="/", headers={"cookie": f"_pomerium={cookie}"}, route_id="r"
    )
    first = gather(rt, req, NOW)
    assert isinstance(first, Pending) and first.resolve().session == session()  # a miss reads the store
    second = gather(rt, req, NOW + 1)
    assert not isinstance(second, Pending) and second.session == session()  # then no I/O
    rt.store.delete("s1")
    third = gather(rt, req, NOW + 2)
    assert isinstance(third, Pending) and third.resolve().session is None


def test_the_refresher_reads_past_the_cache(make_config: Callable[..., Config], tmp_path: Path) -> None:
    """Another worker may have rotated the refresh token: a stale copy would spend a used one."""
    rt = Runtime.build(make_config(), SQLiteStore(tmp_path / "s.db", secret=os.urandom(32)))
    assert rt.cache is not None
    old = Session("s1", "u1", refresh_token="rt-1", issued_at=int(NOW), expires_at=int(NOW + 3600))
    rt.store.put(old)
    assert rt.store.get("s1", NOW) == old  # cached
    rotated = Session("s1", "u1", refresh_token="rt-2", issued_at=int(NOW), expires_at=int(NOW + 3600))
    rt.cache.inner.put(rotated)  # what another worker's refresh wrote
    assert rt.store.get("s1", NOW + 1) == old  # the Check may use the copy for the bound…
    assert rt.stored_session("s1", NOW + 1) == rotated  # …the refresher never does
    assert rt.store.get("s1", NOW + 1) == rotated  # and the fresh read updates the cache


def test_a_token_opened_before_is_still_checked_for_expiry_and_host() -> None:
    """The codec remembers what a token decrypted to, never whether it is still good."""
    from authz.errors import InvalidSession
    from authz.sessions.codec import HandleCodec

    codec = HandleCodec(os.urandom(32))
    token = codec.seal(SessionHandle("s1", "u1", "app.localhost", int(NOW), int(NOW + 60)))
    assert codec.open(token, "app.localhost", NOW).session_id == "s1"
    assert codec.open(token, "app.localhost", NOW + 1).session_id == "s1"  # remembered
    with pytest.raises(InvalidSession, match="another host"):
        codec.open(token, "other.localhost", NOW + 1)
    with pytest.raises(InvalidSession, match="expired"):
        codec.open(token, "app.localhost", NOW + 60)
    forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    with pytest.raises(InvalidSession):
        codec.open(forged, "app.localhost", NOW)
    with pytest.raises(InvalidSession):  # a codec under another key never opens it, remembered or not
        HandleCodec(os.urandom(32)).open(token, "app.localhost", NOW)


def test_entries_past_the_ttl_leave_as_new_ones_come() -> None:
    inner = Counting()
    for i in range(6):
        inner.put(session(f"s{i}"))
    cache = CachedStore(inner, ttl=10)
    for i in range(3):
        cache.get(f"s{i}", NOW)  # read at NOW
    cache.get("s3", NOW + 5)
    assert len(cache) == 4  # nothing is past the TTL yet
    cache.get("s4", NOW + 11)  # s0..s2 are stale now: they go, s3 (read at NOW + 5) stays
    assert len(cache) == 2 and cache.peek("s3", NOW + 11) is not MISS
