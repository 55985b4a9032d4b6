"""Grant stores, memory, SQLite and Redis alike: compare-and-set changes, one pending request per route
and user, the audit trail, the outbox and the lease."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from authz.jit.model import Delivery, Event, Grant, Record, Status
from authz.jit.redis_store import RedisGrantStore
from authz.jit.store import GrantStore, MemoryGrantStore, SQLiteGrantStore, open_grant_store
from tests.redis_server import RedisServer

NOW = 1_800_000_000


@pytest.fixture(params=["memory", "sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[GrantStore]:
    made: GrantStore
    if request.param == "redis":
        made = RedisGrantStore(request.getfixturevalue("redis_server").settings())
    else:
        made = MemoryGrantStore() if request.param == "memory" else SQLiteGrantStore(tmp_path / "a.db")
    yield made
    made.close()


def _grant(grant_id: str = "g1", route: str = "app", user: str = "bob", created: int = NOW) -> Grant:
    return Grant(grant_id, route, user, f"{user}@example.com", Status.PENDING, "incident 7", 600, created)


def _record(grant: Grant, event: Event = Event.REQUESTED, actor: str = "bob") -> Record:
    return Record(grant.id, grant.route, event, actor, NOW, {"reason": grant.reason})


def test_a_grant_is_stored_with_its_record_and_notification(store: GrantStore) -> None:
    grant = _grant()
    assert store.add(grant, _record(grant), Delivery("e1", "app", '{"x":1}', 0, NOW))
    assert store.get("g1") == grant
    assert store.history("g1") == [_record(grant)]
    assert store.due(NOW) == [Delivery("e1", "app", '{"x":1}', 0, NOW)]
    assert store.get("nope") is None


def test_one_pending_request_per_route_and_user(store: GrantStore) -> None:
    first = _grant("g1")
    assert store.add(first, _record(first), Delivery("e1", "app", "{}", 0, NOW))
    second = _grant("g2")
    assert not store.add(second, _record(second), Delivery("e2", "app", "{}", 0, NOW))
    assert store.get("g2") is None and len(store.history("g2")) == 0
    assert [d.id for d in store.due(NOW)] == ["e1"]  # nothing of the refused one was written
    # Another route, or another user, may ask at the same time; and once decided, ask again.
    assert store.add(_grant("g3", route="db"), _record(_grant("g3", route="db")), None)
    assert store.add(_grant("g4", user="carol"), _record(_grant("g4", user="carol")), None)
    assert store.change(Status.PENDING, replace(first, status=Status.REJECTED), _record(first, Event.REJECTED), None)
    assert store.add(second, _record(second), None)


def test_a_change_is_a_compare_and_set(store: GrantStore) -> None:
    grant = _grant()
    store.add(grant, _record(grant), None)
    active = replace(grant, status=Status.ACTIVE, decided_by="alice", decided_at=NOW, expires_at=NOW + 600)
    assert store.change(Status.PENDING, active, _record(active, Event.APPROVED, "alice"), None)
    # A second approver (or a reject) that read the pending grant loses, and writes nothing.
    rejected = replace(grant, status=Status.REJECTED, decided_by="carol")
    assert not store.change(
        Status.PENDING, rejected, _record(rejected, Event.REJECTED, "carol"), Delivery("x", "app", "{}")
    )
    assert store.get("g1") == active
    assert [r.event for r in store.history("g1")] == [Event.REQUESTED, Event.APPROVED]
    assert store.due(NOW) == []
    assert not store.change(Status.PENDING, active, _record(active), None)  # unknown id too
    assert not store.change(Status.PENDING, replace(active, id="nope"), _record(active), None)


def test_active_and_expiring(store: GrantStore) -> None:
    for n, (user, status, expires) in enumerate(
        [("bob", Status.ACTIVE, NOW + 60), ("bob", Status.ACTIVE, NOW - 1), ("bob", Status.REVOKED, NOW + 60),
         ("carol", Status.ACTIVE, NOW + 60)]
    ):  # fmt: skip
        grant = replace(_grant(f"g{n}", user=user), status=status, expires_at=expires)
        store.add(grant, _record(grant), None)
    assert {g.id for g in store.active("app", "bob")} == {"g0", "g1"}  # recorded active; the caller compares times
    assert store.active("db", "bob") == ()
    assert [g.id for g in store.expiring(NOW)] == ["g1"]
    assert {g.id for g in store.expiring(NOW + 60)} == {"g0", "g1", "g3"}


def test_listing_is_newest_first_and_filtered(store: GrantStore) -> None:
    for n, (route, user) in enumerate([("app", "bob"), ("db", "bob"), ("app", "carol")]):
        grant = _grant(f"g{n}", route, user, created=NOW + n)
        store.add(grant, _record(grant), None)
    assert [g.id for g in store.grants()] == ["g2", "g1", "g0"]
    assert [g.id for g in store.grants(user="bob")] == ["g1", "g0"]
    assert [g.id for g in store.grants(routes=["app"])] == ["g2", "g0"]
    assert store.grants(routes=[]) == []
    assert [r.grant for r in store.trail(["app"])] == ["g2", "g0"]
    assert store.trail([]) == []


def test_the_outbox_postpones_and_forgets(store: GrantStore) -> None:
    grant = _grant()
    store.add(grant, _record(grant), Delivery("e1", "app", "{}", 0, NOW))
    store.postpone("e1", 1, NOW + 10)
    assert store.due(NOW + 9) == []
    assert store.due(NOW + 10) == [Delivery("e1", "app", "{}", 1, NOW + 10)]
    store.delivered("e1")
    assert store.due(NOW + 100) == []


def test_the_lease_has_one_holder_until_it_lapses(store: GrantStore) -> None:
    assert store.try_lease("jit", "w1", NOW + 10, NOW)
    assert not store.try_lease("jit", "w2", NOW + 15, NOW + 5)
    assert store.try_lease("jit", "w1", NOW + 20, NOW + 5)  # the holder renews
    assert not store.try_lease("jit", "w2", NOW + 25, NOW + 19)
    assert store.try_lease("jit", "w2", NOW + 30, NOW + 20)  # lapsed: another takes it
    assert store.try_lease("other", "w1", NOW + 30, NOW + 20)  # leases are by name


def test_two_sqlite_stores_on_one_file_are_one_store(tmp_path: Path) -> None:
    one, two = SQLiteGrantStore(tmp_path / "s.db"), SQLiteGrantStore(tmp_path / "s.db")
    try:
        grant = _grant()
        assert one.add(grant, _record(grant), None)
        assert not two.add(_grant("g2"), _record(_grant("g2")), None)
        assert two.try_lease("jit", "w2", NOW + 10, NOW) and not one.try_lease("jit", "w1", NOW + 10, NOW)
        assert (tmp_path / "s.db").stat().st_mode & 0o077 == 0
    finally:
        one.close()
        two.close()


def test_open_grant_store_follows_the_session_store(tmp_path: Path) -> None:
    assert isinstance(open_grant_store("memory:"), MemoryGrantStore)
    assert isinstance(open_grant_store(f"sqlite://{tmp_path / 'x.db'}"), SQLiteGrantStore)
    with pytest.raises(ValueError, match="unsupported"):
        open_grant_store("redis://x")  # a Redis URL comes with its settings


def test_two_redis_clients_are_one_store(redis_server: RedisServer) -> None:
    """Two replicas: a pending request made through one blocks a second through the other, an
    approval through one is read by the other, and of two racing approvals exactly one wins."""
    settings = redis_server.settings()
    one, two = open_grant_store(settings.url, settings), RedisGrantStore(settings)
    try:
        grant = _grant()
        assert one.add(grant, _record(grant), None)
        assert not two.add(_grant("g2"), _record(_grant("g2")), None)
        active = replace(grant, status=Status.ACTIVE, expires_at=NOW + 600)
        wins = [
            store.change(Status.PENDING, active, _record(active, Event.APPROVED, "amy"), None) for store in (two, one)
        ]
        assert wins == [True, False]
        assert [g.id for g in one.active("app", "bob")] == ["g1"]
        assert [r.event for r in one.history("g1")] == [Event.REQUESTED, Event.APPROVED]
        assert two.try_lease("jit", "w2", NOW + 10, NOW) and not one.try_lease("jit", "w1", NOW + 10, NOW)
    finally:
        one.close()
        two.close()


def test_opening_the_session_file_again_keeps_its_locks(tmp_path: Path) -> None:
    """The grant store opens the session store's file in the same process. Closing any descriptor
    of a file drops the process's POSIX locks on it: if opening the grant store did that, another
    process's SQLite would take itself for the last connection and delete the WAL still in use,
    and every later write here would be invisible to the other workers."""
    import subprocess
    import sys

    from authz.sessions.stores import SQLiteStore

    path = tmp_path / "s.db"
    sessions = SQLiteStore(path, secret=b"k" * 32)
    grants = SQLiteGrantStore(path)
    try:
        count = "select count(*) from sessions"
        other = f"import sqlite3; c = sqlite3.connect({str(path)!r}); c.execute({count!r}).fetchall(); c.close()"
        subprocess.run([sys.executable, "-c", other], check=True)
        assert (tmp_path / "s.db-wal").exists()
        grant = _grant()
        grants.add(grant, _record(grant), None)
        query = "select id from grants"
        read = f"import sqlite3; print(sqlite3.connect({str(path)!r}).execute({query!r}).fetchall())"
        seen = subprocess.run([sys.executable, "-c", read], check=True, capture_output=True, text=True).stdout
        assert "g1" in seen
    finally:
        grants.close()
        sessions.close()


def test_ping_answers_while_the_store_does(store: GrantStore) -> None:
    store.ping()
    store.close()
    if isinstance(store, SQLiteGrantStore):
        with pytest.raises(sqlite3.ProgrammingError):
            store.ping()
