"""Session stores: `memory:` for one process, `sqlite:///path` shared by the workers of a host.

Besides sessions, a store keeps single-use markers (login `state` and handoffs may be redeemed
once) and refresh leases (only one worker refreshes a session's IdP tokens at a time: refresh
tokens rotate, and a second worker reusing the old one would end the session).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Protocol

from authz.sessions.session import Session


class SessionStore(Protocol):
    """Where sessions live; every replica and worker reads the same ones."""

    # True when reads wait on a disk or the network: the Check then reads off the event loop.
    blocking: bool

    def get(self, session_id: str, now: float | None = None) -> Session | None: ...

    def put(self, session: Session) -> None: ...

    def delete(self, session_id: str) -> None: ...

    def claim_once(self, key: str, expires_at: float, now: float | None = None) -> bool:
        """True the first time `key` is claimed (until it expires), False on every replay."""
        ...

    def try_lease(self, session_id: str, owner: str, until: float, now: float | None = None) -> bool:
        """Take the refresh lease of a session unless someone else holds a live one."""
        ...

    def due_for_refresh(self, before: float, limit: int = 100) -> list[Session]:
        """Sessions with a refresh token whose access token expires before `before`."""
        ...

    def close(self) -> None: ...


def _now(now: float | None) -> float:
    return time.time() if now is None else now


class MemoryStore:
    """Everything in dicts: one process only (tests, single-worker development)."""

    blocking = False

    def __init__(self) -> None:
        self._sessions: dict[str, Session] = {}
        self._once: dict[str, float] = {}
        self._leases: dict[str, tuple[str, float]] = {}

    def get(self, session_id: str, now: float | None = None) -> Session | None:
        session = self._sessions.get(session_id)
        if session is None or session.expires_at <= _now(now):
            return None
        return session

    def put(self, session: Session) -> None:
        self._sessions[session.id] = session

    def delete(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)
        self._leases.pop(session_id, None)

    def claim_once(self, key: str, expires_at: float, now: float | None = None) -> bool:
        at = _now(now)
        if len(self._once) > 10_000:
            self._once = {k: v for k, v in self._once.items() if v > at}
        if self._once.get(key, 0) > at:
            return False
        self._once[key] = expires_at
        return True

    def try_lease(self, session_id: str, owner: str, until: float, now: float | None = None) -> bool:
        holder = self._leases.get(session_id)
        if holder is not None and holder[0] != owner and holder[1] > _now(now):
            return False
        self._leases[session_id] = (owner, until)
        return True

    def due_for_refresh(self, before: float, limit: int = 100) -> list[Session]:
        due = [s for s in self._sessions.values() if s.refresh_token and 0 < s.token_expires_at < before]
        return sorted(due, key=lambda s: s.token_expires_at)[:limit]

    def close(self) -> None:
        self._sessions.clear()


class SQLiteStore:
    """Everything in one SQLite file (WAL): survives restarts, shared by the workers of a host."""

    blocking = True

    def __init__(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=5)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(
            """
            CREATE TABLE IF NOT EXISTS sessions (
                id TEXT PRIMARY KEY, user_id TEXT NOT NULL, expires_at INTEGER NOT NULL,
                refresh_at INTEGER NOT NULL DEFAULT 0, lease_owner TEXT NOT NULL DEFAULT '',
                lease_until REAL NOT NULL DEFAULT 0, data TEXT NOT NULL);
            CREATE INDEX IF NOT EXISTS sessions_refresh ON sessions (refresh_at) WHERE refresh_at > 0;
            CREATE TABLE IF NOT EXISTS once (key TEXT PRIMARY KEY, expires_at REAL NOT NULL);
            """
        )

    def get(self, session_id: str, now: float | None = None) -> Session | None:
        with self._lock:
            row = self._db.execute(
                "SELECT data FROM sessions WHERE id = ? AND expires_at > ?", (session_id, _now(now))
            ).fetchone()
        return Session.from_json(row[0]) if row else None

    def put(self, session: Session) -> None:
        refresh_at = session.token_expires_at if session.refresh_token else 0
        with self._lock:
            self._db.execute(
                "INSERT INTO sessions (id, user_id, expires_at, refresh_at, data) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET user_id = excluded.user_id,"
                " expires_at = excluded.expires_at, refresh_at = excluded.refresh_at, data = excluded.data",
                (session.id, session.user_id, session.expires_at, refresh_at, session.to_json()),
            )

    def delete(self, session_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM sessions WHERE id = ?", (session_id,))

    def claim_once(self, key: str, expires_at: float, now: float | None = None) -> bool:
        at = _now(now)
        with self._lock:
            self._db.execute("DELETE FROM once WHERE key = ? AND expires_at <= ?", (key, at))
            cursor = self._db.execute("INSERT OR IGNORE INTO once (key, expires_at) VALUES (?, ?)", (key, expires_at))
            if cursor.rowcount and int(at) % 64 == 0:
                self._db.execute("DELETE FROM once WHERE expires_at <= ?", (at,))
        return cursor.rowcount == 1

    def try_lease(self, session_id: str, owner: str, until: float, now: float | None = None) -> bool:
        with self._lock:
            cursor = self._db.execute(
                "UPDATE sessions SET lease_owner = ?, lease_until = ?"
                " WHERE id = ? AND (lease_until <= ? OR lease_owner = ?)",
                (owner, until, session_id, _now(now), owner),
            )
        return cursor.rowcount == 1

    def due_for_refresh(self, before: float, limit: int = 100) -> list[Session]:
        with self._lock:
            rows = self._db.execute(
                "SELECT data FROM sessions WHERE refresh_at > 0 AND refresh_at < ? ORDER BY refresh_at LIMIT ?",
                (before, limit),
            ).fetchall()
        return [Session.from_json(row[0]) for row in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()


def open_store(url: str) -> SessionStore:
    """The store named by a validated `session_store` value."""
    if url == "memory:":
        return MemoryStore()
    if url.startswith("sqlite://"):
        return SQLiteStore(url[len("sqlite://") :])
    raise ValueError(f"unsupported session store {url!r}")
