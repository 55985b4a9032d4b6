"""Session stores: `memory:` for one process, `sqlite:///path` shared by the workers of a host."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Protocol

from authz.session import Session


class SessionStore(Protocol):
    """Where sessions live; every replica and worker reads the same ones."""

    def get(self, session_id: str, now: float | None = None) -> Session | None: ...

    def put(self, session: Session) -> None: ...

    def delete(self, session_id: str) -> None: ...

    def close(self) -> None: ...


class MemoryStore:
    """Sessions in a dict: one process only (tests, single-worker development)."""

    def __init__(self) -> None:
        self._sessions: dict[str, Session] = {}

    def get(self, session_id: str, now: float | None = None) -> Session | None:
        session = self._sessions.get(session_id)
        if session is None or session.expires_at <= (time.time() if now is None else now):
            return None
        return session

    def put(self, session: Session) -> None:
        self._sessions[session.id] = session

    def delete(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)

    def close(self) -> None:
        self._sessions.clear()


class SQLiteStore:
    """Sessions in one SQLite file (WAL): survives restarts, shared by the workers of a host."""

    def __init__(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS sessions ("
            " id TEXT PRIMARY KEY, user_id TEXT NOT NULL, expires_at INTEGER NOT NULL, data TEXT NOT NULL)"
        )

    def get(self, session_id: str, now: float | None = None) -> Session | None:
        at = time.time() if now is None else now
        with self._lock:
            row = self._db.execute(
                "SELECT data FROM sessions WHERE id = ? AND expires_at > ?", (session_id, at)
            ).fetchone()
        return Session.from_json(row[0]) if row else None

    def put(self, session: Session) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO sessions (id, user_id, expires_at, data) VALUES (?, ?, ?, ?)",
                (session.id, session.user_id, session.expires_at, session.to_json()),
            )

    def delete(self, session_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM sessions WHERE id = ?", (session_id,))

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
