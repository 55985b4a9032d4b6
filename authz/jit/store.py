"""Grant stores: the same kinds as session stores, `memory:` for one process and `sqlite:///path`
(the session store's file, its own tables) shared by the workers of a host.

A store keeps grants, their append-only audit records, the outbox of notifications not yet
delivered, and named leases (one worker at a time sweeps expiries and delivers notifications).
A grant's change, its audit record and its notification are written together or not at all, and
a change is a compare-and-set on the status it expects (`change`): of two approvers, or an
approver and the sweeper, exactly one wins.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from authz.jit.model import Delivery, Event, Grant, Record, Status
from authz.sessions.stores import create_private

if TYPE_CHECKING:
    from authz.config.model import RedisSettings
    from authz.sessions.redis_link import RedisLink

MAX_LISTED = 1000  # grants in one listing, newest first
MAX_TRAIL = 500  # audit records in one trail, newest first


class GrantStore(Protocol):
    """Where grants live; every worker (and, with Redis, every replica) reads the same ones."""

    # True when reads wait on a disk or the network: the Check then reads off the event loop.
    blocking: bool

    def add(self, grant: Grant, record: Record, delivery: Delivery | None) -> bool:
        """Store a new pending grant with its audit record (and notification); False, and nothing
        written, when the user already has a pending request for that route."""
        ...

    def get(self, grant_id: str) -> Grant | None: ...

    def change(self, expected: Status, grant: Grant, record: Record, delivery: Delivery | None) -> bool:
        """Replace the grant if its stored status is still `expected`, with its audit record (and
        notification); False, and nothing written, otherwise."""
        ...

    def grants(
        self,
        *,
        routes: Collection[str] | None = None,
        user: str | None = None,
        status: Status | None = None,
        now: float = 0.0,
    ) -> list[Grant]:
        """Grants of these routes (all: None), this user (any: None) and this status as of `now`
        (any: None; an active grant past `expires_at` counts as expired), newest first, at most
        MAX_LISTED."""
        ...

    def active(self, route: str, user: str) -> tuple[Grant, ...]:
        """The user's grants on the route recorded as active (the caller compares `expires_at`)."""
        ...

    def expiring(self, now: float, limit: int = 100) -> list[Grant]:
        """Grants recorded as active whose `expires_at` has passed: the sweeper records them."""
        ...

    def history(self, grant_id: str) -> list[Record]:
        """A grant's audit records, oldest first."""
        ...

    def trail(self, routes: Collection[str]) -> list[Record]:
        """The audit records of these routes, newest first, at most MAX_TRAIL."""
        ...

    def due(self, now: float, limit: int = 20) -> list[Delivery]:
        """Notifications whose next attempt is due, oldest first."""
        ...

    def delivered(self, delivery_id: str) -> None:
        """Remove a notification its endpoint accepted (or that was given up on)."""
        ...

    def postpone(self, delivery_id: str, attempts: int, next_at: float) -> None: ...

    def try_lease(self, name: str, owner: str, until: float, now: float) -> bool:
        """Take or renew the named lease unless someone else holds a live one."""
        ...

    def ping(self) -> None:
        """Return when the store answers a read; raise when it cannot (`/readyz`)."""
        ...

    def close(self) -> None: ...


class MemoryGrantStore:
    """Everything in lists and dicts: one process only (tests, single-worker development)."""

    blocking = False

    def __init__(self) -> None:
        self._grants: dict[str, Grant] = {}
        self._records: list[Record] = []
        self._outbox: dict[str, Delivery] = {}
        self._leases: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def _write(self, grant: Grant, record: Record, delivery: Delivery | None) -> None:
        self._grants[grant.id] = grant
        self._records.append(record)
        if delivery is not None:
            self._outbox[delivery.id] = delivery

    def add(self, grant: Grant, record: Record, delivery: Delivery | None) -> bool:
        with self._lock:
            if any(
                g.route == grant.route and g.user == grant.user and g.status is Status.PENDING
                for g in self._grants.values()
            ):
                return False
            self._write(grant, record, delivery)
            return True

    def get(self, grant_id: str) -> Grant | None:
        with self._lock:
            return self._grants.get(grant_id)

    def change(self, expected: Status, grant: Grant, record: Record, delivery: Delivery | None) -> bool:
        with self._lock:
            stored = self._grants.get(grant.id)
            if stored is None or stored.status is not expected:
                return False
            self._write(grant, record, delivery)
            return True

    # Reads take the lock too: API calls write from worker threads while the Check reads.

    def grants(
        self,
        *,
        routes: Collection[str] | None = None,
        user: str | None = None,
        status: Status | None = None,
        now: float = 0.0,
    ) -> list[Grant]:
        with self._lock:
            found = [
                g
                for g in self._grants.values()
                if (routes is None or g.route in routes)
                and user in (None, g.user)
                and (status is None or g.status_at(now) is status)
            ]
        return sorted(found, key=lambda g: (g.created_at, g.id), reverse=True)[:MAX_LISTED]

    def active(self, route: str, user: str) -> tuple[Grant, ...]:
        with self._lock:
            return tuple(
                g for g in self._grants.values() if g.route == route and g.user == user and g.status is Status.ACTIVE
            )

    def expiring(self, now: float, limit: int = 100) -> list[Grant]:
        with self._lock:
            due = [g for g in self._grants.values() if g.status is Status.ACTIVE and g.expires_at <= now]
        return sorted(due, key=lambda g: g.expires_at)[:limit]

    def history(self, grant_id: str) -> list[Record]:
        with self._lock:
            return [r for r in self._records if r.grant == grant_id]

    def trail(self, routes: Collection[str]) -> list[Record]:
        with self._lock:
            return [r for r in reversed(self._records) if r.route in routes][:MAX_TRAIL]

    def due(self, now: float, limit: int = 20) -> list[Delivery]:
        with self._lock:
            return [d for d in self._outbox.values() if d.next_at <= now][:limit]

    def delivered(self, delivery_id: str) -> None:
        self._outbox.pop(delivery_id, None)

    def postpone(self, delivery_id: str, attempts: int, next_at: float) -> None:
        with self._lock:
            found = self._outbox.get(delivery_id)
            if found is not None:
                self._outbox[delivery_id] = Delivery(found.id, found.route, found.body, attempts, next_at)

    def try_lease(self, name: str, owner: str, until: float, now: float) -> bool:
        with self._lock:
            holder = self._leases.get(name)
            if holder is not None and holder[0] != owner and holder[1] > now:
                return False
            self._leases[name] = (owner, until)
            return True

    def ping(self) -> None:
        pass

    def close(self) -> None:
        return None


_SCHEMA = """
CREATE TABLE IF NOT EXISTS grants (
    id TEXT PRIMARY KEY, route TEXT NOT NULL, user_id TEXT NOT NULL, status TEXT NOT NULL,
    created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL DEFAULT 0, data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS grants_route_user ON grants (route, user_id, status);
CREATE INDEX IF NOT EXISTS grants_expiring ON grants (expires_at) WHERE status = 'active';
CREATE UNIQUE INDEX IF NOT EXISTS grants_one_pending ON grants (route, user_id) WHERE status = 'pending';
CREATE TABLE IF NOT EXISTS grant_audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, grant_id TEXT NOT NULL, route TEXT NOT NULL, data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS grant_audit_grant ON grant_audit (grant_id);
CREATE INDEX IF NOT EXISTS grant_audit_route ON grant_audit (route);
CREATE TABLE IF NOT EXISTS grant_outbox (
    id TEXT PRIMARY KEY, route TEXT NOT NULL, body TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, next_at REAL NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS leases (name TEXT PRIMARY KEY, owner TEXT NOT NULL, until REAL NOT NULL);
"""


def _record_row(record: Record) -> tuple[str, str, str]:
    data = {"event": str(record.event), "actor": record.actor, "at": record.at, "detail": record.detail}
    return record.grant, record.route, json.dumps(data, separators=(",", ":"))


def _record(grant: str, route: str, text: str) -> Record:
    data = json.loads(text)
    return Record(grant, route, Event(data["event"]), data["actor"], data["at"], data.get("detail") or {})


def _grant(text: str) -> Grant:
    return Grant.from_row(json.loads(text))


class SQLiteGrantStore:
    """Grants in the session store's SQLite file (WAL), in tables of their own."""

    blocking = True

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        create_private(path)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=5)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def _write(self, grant: Grant, record: Record, delivery: Delivery | None) -> None:
        self._db.execute("INSERT INTO grant_audit (grant_id, route, data) VALUES (?, ?, ?)", _record_row(record))
        if delivery is not None:
            self._db.execute(
                "INSERT OR IGNORE INTO grant_outbox (id, route, body, attempts, next_at) VALUES (?, ?, ?, ?, ?)",
                (delivery.id, delivery.route, delivery.body, delivery.attempts, delivery.next_at),
            )

    def add(self, grant: Grant, record: Record, delivery: Delivery | None) -> bool:
        data = json.dumps(grant.to_row(), separators=(",", ":"))
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                try:
                    self._db.execute(
                        "INSERT INTO grants (id, route, user_id, status, created_at, expires_at, data)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (
                            grant.id,
                            grant.route,
                            grant.user,
                            str(grant.status),
                            grant.created_at,
                            grant.expires_at,
                            data,
                        ),
                    )
                except sqlite3.IntegrityError:  # grants_one_pending: already a pending request
                    self._db.execute("ROLLBACK")
                    return False
                self._write(grant, record, delivery)
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        return True

    def get(self, grant_id: str) -> Grant | None:
        with self._lock:
            row = self._db.execute("SELECT data FROM grants WHERE id = ?", (grant_id,)).fetchone()
        return _grant(row[0]) if row else None

    def change(self, expected: Status, grant: Grant, record: Record, delivery: Delivery | None) -> bool:
        data = json.dumps(grant.to_row(), separators=(",", ":"))
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                changed = self._db.execute(
                    "UPDATE grants SET status = ?, expires_at = ?, data = ? WHERE id = ? AND status = ?",
                    (str(grant.status), grant.expires_at, data, grant.id, str(expected)),
                ).rowcount
                if changed:
                    self._write(grant, record, delivery)
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        return changed == 1

    def grants(
        self,
        *,
        routes: Collection[str] | None = None,
        user: str | None = None,
        status: Status | None = None,
        now: float = 0.0,
    ) -> list[Grant]:
        clauses: list[str] = []
        params: list[str | float] = []
        if status is Status.ACTIVE:
            clauses.append("status = 'active' AND expires_at > ?")
            params.append(now)
        elif status is Status.EXPIRED:
            clauses.append("(status = 'expired' OR (status = 'active' AND expires_at <= ?))")
            params.append(now)
        elif status is not None:
            clauses.append("status = ?")
            params.append(str(status))
        if routes is not None:
            if not routes:
                return []
            clauses.append(f"route IN ({','.join('?' * len(routes))})")
            params.extend(routes)
        if user is not None:
            clauses.append("user_id = ?")
            params.append(user)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        query = f"SELECT data FROM grants {where} ORDER BY created_at DESC, id DESC LIMIT {MAX_LISTED}"  # noqa: S608
        with self._lock:
            rows = self._db.execute(query, params).fetchall()
        return [_grant(row[0]) for row in rows]

    def active(self, route: str, user: str) -> tuple[Grant, ...]:
        with self._lock:
            rows = self._db.execute(
                "SELECT data FROM grants WHERE route = ? AND user_id = ? AND status = 'active'", (route, user)
            ).fetchall()
        return tuple(_grant(row[0]) for row in rows)

    def expiring(self, now: float, limit: int = 100) -> list[Grant]:
        with self._lock:
            rows = self._db.execute(
                "SELECT data FROM grants WHERE status = 'active' AND expires_at <= ? ORDER BY expires_at LIMIT ?",
                (now, limit),
            ).fetchall()
        return [_grant(row[0]) for row in rows]

    def history(self, grant_id: str) -> list[Record]:
        with self._lock:
            rows = self._db.execute(
                "SELECT grant_id, route, data FROM grant_audit WHERE grant_id = ? ORDER BY seq", (grant_id,)
            ).fetchall()
        return [_record(*row) for row in rows]

    def trail(self, routes: Collection[str]) -> list[Record]:
        if not routes:
            return []
        marks = ",".join("?" * len(routes))
        query = f"SELECT grant_id, route, data FROM grant_audit WHERE route IN ({marks}) ORDER BY seq DESC LIMIT ?"  # noqa: S608
        with self._lock:
            rows = self._db.execute(query, (*routes, MAX_TRAIL)).fetchall()
        return [_record(*row) for row in rows]

    def due(self, now: float, limit: int = 20) -> list[Delivery]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, route, body, attempts, next_at FROM grant_outbox"
                " WHERE next_at <= ? ORDER BY next_at LIMIT ?",
                (now, limit),
            ).fetchall()
        return [Delivery(*row) for row in rows]

    def delivered(self, delivery_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM grant_outbox WHERE id = ?", (delivery_id,))

    def postpone(self, delivery_id: str, attempts: int, next_at: float) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE grant_outbox SET attempts = ?, next_at = ? WHERE id = ?", (attempts, next_at, delivery_id)
            )

    def try_lease(self, name: str, owner: str, until: float, now: float) -> bool:
        with self._lock:
            cursor = self._db.execute(
                "INSERT INTO leases (name, owner, until) VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE"
                " SET owner = excluded.owner, until = excluded.until WHERE leases.until <= ? OR leases.owner = ?",
                (name, owner, until, now, owner),
            )
        return cursor.rowcount == 1

    def ping(self) -> None:
        with self._lock:
            self._db.execute("SELECT 1 FROM grants LIMIT 1").fetchall()

    def close(self) -> None:
        with self._lock:
            self._db.close()


def open_grant_store(url: str, redis: RedisSettings | None = None, link: RedisLink | None = None) -> GrantStore:
    """The grant store beside the session store a validated `session_store` value names (on the
    session store's Redis connection, `link`, when it has one)."""
    if url == "memory:":
        return MemoryGrantStore()
    if url.startswith("sqlite://"):
        return SQLiteGrantStore(url[len("sqlite://") :])
    if redis is not None:
        from authz.jit.redis_store import RedisGrantStore

        return RedisGrantStore(redis, link=link)
    raise ValueError(f"unsupported grant store {url!r}")
