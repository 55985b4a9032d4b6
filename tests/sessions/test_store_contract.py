"""What every session store does, run on each of them: memory, SQLite and a real Redis.

Sessions (expiry by the caller's clock, update only while stored, listing without tokens, a user's
revocation), single-use markers, refresh leases, the bounded single-use stash, and two handles on
one backing store acting as one (two SQLite connections, two Redis clients: workers or replicas).
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from authz.sessions import stores
from authz.sessions.cache import CachedStore
from authz.sessions.redis_store import RedisStore
from authz.sessions.session import Session
from authz.sessions.stores import MemoryStore, SessionStore, SQLiteStore
from tests.redis_server import RedisServer

NOW = 1_800_000_000
SECRET = os.urandom(32)
TOKENS = {"id_token": "eyJ-id-token-VALUE", "access_token": "AT-access-VALUE", "refresh_token": "RT-refresh-VALUE"}
KINDS = ["memory", "sqlite", "redis"]


def signed_in(sid: str = "s1", user: str = "u1", issued: int = NOW) -> Session:
    return Session(sid, user, f"{user}@example.com", "A", ("g",), {"k": ["v"]}, issued, NOW + 3600,
                   token_expires_at=NOW + 60, **TOKENS)  # fmt: skip


@pytest.fixture
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[str], SessionStore]]:
    """Opens a store of a kind; every Redis store opened in one test shares one key prefix."""
    made: list[SessionStore] = []
    prefix = f"contract{id(request)}:"

    def open_kind(kind: str) -> SessionStore:
        store: SessionStore
        if kind == "memory":
            store = MemoryStore()
        elif kind == "sqlite":
            store = SQLiteStore(tmp_path / "s.db", secret=SECRET)
        else:
            server: RedisServer = request.getfixturevalue("redis_server")
            store = RedisStore(server.settings(prefix), secret=SECRET)
        made.append(store)
        return store

    yield open_kind
    for store in made:
        store.close()


@pytest.fixture(params=KINDS)
def store(request: pytest.FixtureRequest, opener: Callable[[str], SessionStore]) -> SessionStore:
    return opener(request.param)


def test_get_put_delete_and_expiry_by_the_callers_clock(store: SessionStore) -> None:
    session = Session("s1", "u1", "a@b.c", "A", ("g",), {"k": ["v"]}, NOW, NOW + 10)
    store.put(session)
    assert store.get("s1", NOW) == session
    assert store.get("s1", NOW + 10) is None  # expired at that second
    assert store.get("missing", NOW) is None
    store.delete("s1")
    assert store.get("s1", NOW) is None
    store.delete("s1")  # deleting what is gone is no error


def test_tokens_round_trip(store: SessionStore) -> None:
    store.put(signed_in())
    assert store.get("s1", NOW) == signed_in()


def test_update_writes_only_a_session_still_stored(store: SessionStore) -> None:
    store.put(signed_in("s1"))
    renewed = dataclasses.replace(signed_in("s1"), access_token="AT-2", token_expires_at=NOW + 300)
    assert store.update(renewed) is True
    assert store.get("s1", NOW) == renewed and store.due_for_refresh(NOW + 60) == []
    store.delete("s1")
    assert store.update(renewed) is False  # a revoked session is never written back
    assert store.get("s1", NOW) is None


def test_a_cached_store_writes_through(opener: Callable[[str], SessionStore]) -> None:
    for kind in ("sqlite", "redis"):
        inner = opener(kind)
        store = CachedStore(inner, ttl=10)
        store.put(signed_in("s1"))
        assert store.get("s1", NOW) is not None  # now cached
        store.delete("s1")
        assert store.get("s1", NOW) is None and inner.get("s1", NOW) is None


def test_list_and_revoke_a_users_sessions(store: SessionStore) -> None:
    store.put(signed_in("b-newer", "u1", NOW + 5))
    store.put(signed_in("a-older", "u1", NOW))
    store.put(signed_in("c", "u2", NOW + 1))
    store.put(Session("gone", "u1", issued_at=NOW - 10, expires_at=NOW - 1))
    assert [s.id for s in store.sessions(now=NOW)] == ["a-older", "c", "b-newer"]
    listed = list(store.sessions("u1", NOW))
    assert [s.id for s in listed] == ["a-older", "b-newer"]
    assert all(not (s.id_token or s.access_token or s.refresh_token) for s in listed)  # never tokens
    assert listed[0].email == "u1@example.com" and listed[0].issued_at == NOW
    assert store.delete_user("u1") in (2, 3)  # an expired one may already be gone (Redis expires it)
    assert store.get("a-older", NOW) is None and store.get("b-newer", NOW) is None
    assert store.get("c", NOW) is not None
    assert store.delete_user("u1") == 0
    assert list(store.sessions("u1", NOW)) == []


def test_single_use_markers(store: SessionStore) -> None:
    assert store.claim_once("state:a", NOW + 60, NOW)
    assert not store.claim_once("state:a", NOW + 60, NOW + 30)  # a replay
    assert store.claim_once("state:a", NOW + 200, NOW + 61)  # expired markers may be reused
    assert not store.claim_once("state:a", NOW + 200, NOW + 62)
    assert store.claim_once("state:b", NOW + 60, NOW)  # markers are independent


def test_refresh_due_and_leases(store: SessionStore) -> None:
    store.put(Session("s1", "u1", refresh_token="r", token_expires_at=NOW + 30, expires_at=NOW + 3600))
    store.put(Session("s2", "u2", token_expires_at=NOW + 30, expires_at=NOW + 3600))  # no refresh token
    store.put(Session("s3", "u3", refresh_token="r", token_expires_at=NOW + 20, expires_at=NOW + 3600))
    assert [s.id for s in store.due_for_refresh(NOW + 60)] == ["s3", "s1"]  # soonest first
    assert [s.id for s in store.due_for_refresh(NOW + 60, limit=1)] == ["s3"]
    assert store.due_for_refresh(NOW + 10) == []
    assert store.due_for_refresh(NOW + 60)[0].refresh_token == "r"  # with its tokens, to refresh
    assert store.try_lease("s1", "worker-a", NOW + 30, NOW)
    assert not store.try_lease("s1", "worker-b", NOW + 30, NOW + 10)
    assert store.try_lease("s1", "worker-a", NOW + 60, NOW + 10)  # the holder may extend
    assert store.try_lease("s1", "worker-b", NOW + 90, NOW + 61)  # after expiry, anyone
    assert not store.try_lease("missing", "worker-a", NOW + 30, NOW)  # no session, no lease
    store.delete("s1")
    assert [s.id for s in store.due_for_refresh(NOW + 60)] == ["s3"]


def test_stash_is_single_use_and_expires(store: SessionStore) -> None:
    long_url = "https://app.example.com/" + "x" * 8192
    assert store.stash("attempt-1", long_url, NOW + 600)
    assert store.take("attempt-1", NOW) == long_url
    assert store.take("attempt-1", NOW) is None  # a second take finds nothing
    store.stash("attempt-2", "v", NOW + 600)
    assert store.take("attempt-2", NOW + 600) is None  # expired
    assert store.take("attempt-2", NOW) is None  # and gone
    assert store.take("never", NOW) is None
    store.stash("s1", "v", NOW + 600)
    store.put(signed_in("s1"))
    assert store.claim_once("s1", NOW + 600, NOW)  # namespaces apart: sessions, markers, stash
    assert store.get("s1", NOW) is not None
    assert store.take("s1", NOW) == "v"


def test_the_stash_is_bounded(store: SessionStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stores, "MAX_STASHED", 3)
    at = time.time()
    assert not store.stash("huge", "x" * (stores.MAX_STASH_VALUE + 1), at + 600)
    assert store.stash("short-lived", "v", at + 0.2)
    assert all(store.stash(f"k{i}", "v", at + 600) for i in range(2))
    assert not store.stash("one-more", "v", at + 600)  # full: refused, nothing evicted
    assert store.stash("k0", "again", at + 600)  # replacing a held key takes no more room
    time.sleep(0.25)
    assert store.stash("one-more", "v", at + 600)  # the expired one made room
    assert [store.take(k, time.time()) for k in ("huge", "k0", "k1", "one-more")] == [None, "again", "v", "v"]


def test_ping_answers_while_the_store_does(store: SessionStore) -> None:
    store.ping()


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_two_handles_on_one_store_act_as_one(kind: str, opener: Callable[[str], SessionStore]) -> None:
    """Two workers (SQLite) or two replicas (Redis): what one writes, the other reads; a marker or
    a lease taken through one is refused through the other; a stashed value is taken exactly once."""
    first, second = opener(kind), opener(kind)
    first.put(signed_in("s1"))
    assert second.get("s1", NOW) == signed_in("s1")
    assert first.claim_once("handoff:x", NOW + 60, NOW)
    assert not second.claim_once("handoff:x", NOW + 60, NOW)
    assert second.try_lease("s1", "replica-b", NOW + 30, NOW)
    assert not first.try_lease("s1", "replica-a", NOW + 30, NOW)
    second.delete_user("u1")
    assert first.get("s1", NOW) is None
    keys = [f"attempt-{i}" for i in range(100)]
    for key in keys:
        first.stash(key, key.upper(), time.time() + 600)
    taken: dict[int, list[str]] = {0: [], 1: []}
    start = threading.Barrier(2)

    def race(index: int, store: SessionStore) -> None:
        start.wait()
        for key in keys:
            if (value := store.take(key)) is not None:
                taken[index].append(value)

    threads = [threading.Thread(target=race, args=(i, s)) for i, s in enumerate((first, second))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(taken[0] + taken[1]) == sorted(k.upper() for k in keys)  # each value exactly once


def test_claims_race_to_exactly_one_winner(opener: Callable[[str], SessionStore]) -> None:
    """Many threads over two Redis clients claim the same markers: each is won exactly once."""
    first, second = opener("redis"), opener("redis")
    wins: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def claim(store: SessionStore) -> None:
        start.wait()
        for i in range(50):
            if store.claim_once(f"state:{i}", time.time() + 60):
                with lock:
                    wins.append(f"state:{i}")

    threads = [threading.Thread(target=claim, args=(first if i % 2 else second,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(wins) == sorted(f"state:{i}" for i in range(50))
