"""Session stores: `memory:` for one process, `sqlite:///path` shared by the workers of a host
(`redis://…`, shared by replicas, is authz/sessions/redis_store.py).

Besides sessions, a store keeps single-use markers (login `state` and handoffs may be redeemed
once), refresh leases (only one worker refreshes a session's IdP tokens at a time: refresh
tokens rotate, and a second worker reusing the old one would end the session), and a single-use
stash (a value kept for one later `take`, such as a return URL too long to travel in `state`).

At rest, the SQLite store is owner-only (file 0600, and 0700 for a directory it creates) and
seals each session's IdP tokens and each stashed value under keys derived from `cookie_secret`,
so a copied database holds no usable token. Rows written before tokens were sealed still load,
and are sealed in place when the store opens.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from authz.config.model import RedisSettings
from authz.sessions.sealing import AtRestSealer
from authz.sessions.session import Session

log = logging.getLogger("authz.sessions")

TOKENS_AT_REST = b"session-tokens-at-rest"
STASH_AT_REST = b"stash-at-rest"
_TOKEN_FIELDS = ("id_token", "access_token", "refresh_token")
# The stash keeps what a sign-in must remember that is too long to carry in a cookie or URL
# (return URLs over about 1 KiB): at most this many values, each at most this long (~64 MiB).
MAX_STASHED = 4096
MAX_STASH_VALUE = 16 * 1024
_SEALED_TOKENS = "sealed_tokens"  # the key of a row's data that holds its sealed IdP tokens


class SessionStore(Protocol):
    """Where sessions live; every replica and worker reads the same ones."""

    # True when reads wait on a disk or the network: the Check then reads off the event loop.
    blocking: bool

    def get(self, session_id: str, now: float | None = None) -> Session | None: ...

    def put(self, session: Session) -> None: ...

    def update(self, session: Session) -> bool:
        """Replace a session that is still stored; False (and nothing written) when it was deleted
        meanwhile, so a slow writer such as a token refresh never brings back a revoked session."""
        ...

    def delete(self, session_id: str) -> None: ...

    def sessions(self, user_id: str | None = None, now: float | None = None) -> Iterator[Session]:
        """Live sessions (all, or one user's), oldest first, with their IdP tokens left out."""
        ...

    def delete_user(self, user_id: str) -> int:
        """End every session of a user; how many there were."""
        ...

    def claim_once(self, key: str, expires_at: float, now: float | None = None) -> bool:
        """True the first time `key` is claimed (until it expires), False on every replay."""
        ...

    def stash(self, key: str, value: str, expires_at: float) -> bool:
        """Keep `value` under `key` until `expires_at`, for one `take` (apart from sessions and
        markers). False, and nothing kept, when the value is over MAX_STASH_VALUE characters or the
        store already holds MAX_STASHED live values: what anonymous requests can make it keep is bounded."""
        ...

    def take(self, key: str, now: float | None = None) -> str | None:
        """The stashed value, removed as it is read: None when absent, expired or already taken."""
        ...

    def try_lease(self, session_id: str, owner: str, until: float, now: float | None = None) -> bool:
        """Take the refresh lease of a session unless someone else holds a live one."""
        ...

    def due_for_refresh(self, before: float, limit: int = 100) -> list[Session]:
        """Sessions with a refresh token whose access token expires before `before`."""
        ...

    def ping(self) -> None:
        """Return when the store answers a read; raise when it cannot (`/readyz`)."""
        ...

    def close(self) -> None: ...


def _now(now: float | None) -> float:
    return time.time() if now is None else now


def _without_tokens(session: Session) -> Session:
    return dataclasses.replace(session, id_token="", access_token="", refresh_token="")


class MemoryStore:
    """Everything in dicts: one process only (tests, single-worker development).

    Tokens stay plain here: nothing reaches a disk, and a key would sit in the same memory as
    the tokens that every Check reads anyway.
    """

    blocking = False

    def __init__(self) -> None:
        self._sessions: dict[str, Session] = {}
        self._once: dict[str, float] = {}
        self._stash: dict[str, tuple[str, float]] = {}
        self._leases: dict[str, tuple[str, float]] = {}

    def get(self, session_id: str, now: float | None = None) -> Session | None:
        session = self._sessions.get(session_id)
        if session is None or session.expires_at <= _now(now):
            return None
        return session

    def put(self, session: Session) -> None:
        self._sessions[session.id] = session

    def update(self, session: Session) -> bool:
        if session.id not in self._sessions:
            return False
        self._sessions[session.id] = session
        return True

    def delete(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)
        self._leases.pop(session_id, None)

    def sessions(self, user_id: str | None = None, now: float | None = None) -> Iterator[Session]:
        at = _now(now)
        found = [s for s in self._sessions.values() if s.expires_at > at and user_id in (None, s.user_id)]
        return iter([_without_tokens(s) for s in sorted(found, key=lambda s: (s.issued_at, s.id))])

    def delete_user(self, user_id: str) -> int:
        ids = [s.id for s in self._sessions.values() if s.user_id == user_id]
        for session_id in ids:
            self.delete(session_id)
        return len(ids)

    def claim_once(self, key: str, expires_at: float, now: float | None = None) -> bool:
        at = _now(now)
        if len(self._once) > 10_000:
            self._once = {k: v for k, v in self._once.items() if v > at}
        if self._once.get(key, 0) > at:
            return False
        self._once[key] = expires_at
        return True

    def stash(self, key: str, value: str, expires_at: float) -> bool:
        if len(value) > MAX_STASH_VALUE:
            return False
        if len(self._stash) >= MAX_STASHED and key not in self._stash:
            at = time.time()
            self._stash = {k: v for k, v in self._stash.items() if v[1] > at}
            if len(self._stash) >= MAX_STASHED:
                return False
        self._stash[key] = (value, expires_at)
        return True

    def take(self, key: str, now: float | None = None) -> str | None:
        found = self._stash.pop(key, None)
        if found is None or found[1] <= _now(now):
            return None
        return found[0]

    def try_lease(self, session_id: str, owner: str, until: float, now: float | None = None) -> bool:
        holder = self._leases.get(session_id)
        if session_id not in self._sessions or (holder is not None and holder[0] != owner and holder[1] > _now(now)):
            return False
        self._leases[session_id] = (owner, until)
        return True

    def due_for_refresh(self, before: float, limit: int = 100) -> list[Session]:
        due = [s for s in self._sessions.values() if s.refresh_token and 0 < s.token_expires_at < before]
        return sorted(due, key=lambda s: s.token_expires_at)[:limit]

    def ping(self) -> None:
        pass

    def close(self) -> None:
        self._sessions.clear()
        self._stash.clear()


def _private_dirs(directory: Path) -> None:
    """Create `directory` and any missing parent 0700; leave existing ones (such as /tmp) alone."""
    missing = []
    while not directory.exists():
        missing.append(directory)
        directory = directory.parent
    for path in reversed(missing):
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            continue


def _owner_only(path: Path) -> None:
    """Take group and other bits off an existing store file, with a warning."""
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & 0o077:
        log.warning("session store file %s was mode %03o; setting it owner-only", path, mode)
        try:
            os.chmod(path, mode & 0o700)
        except OSError as exc:
            log.warning("could not make session store file %s owner-only: %s", path, exc.strerror)


def create_private(path: Path) -> None:
    """Create the database file 0600 before SQLite opens it (no moment when others may read it).

    An existing file is never opened here: closing any descriptor of a file drops every POSIX lock
    this process holds on it, including an open SQLite connection's (the session store's, when the
    grant store opens the same file), and another process's SQLite would then take itself for the
    last connection and delete the WAL that this one still writes to."""
    _private_dirs(path.parent)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
    _owner_only(path)


class SQLiteStore:
    """Everything in one SQLite file (WAL): survives restarts, shared by the workers of a host.

    `secret` is `cookie_secret`: the IdP tokens and stashed values are sealed under keys derived
    from it, so rotating it (which already ends every session) leaves old rows unreadable.
    """

    blocking = True

    def __init__(self, path: str | Path, *, secret: bytes) -> None:
        path = Path(path)
        create_private(path)
        self._tokens = AtRestSealer(secret, TOKENS_AT_REST)
        self._stashed = AtRestSealer(secret, STASH_AT_REST)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=5)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA secure_delete=ON")  # replaced rows leave no old bytes in free pages
        self._db.executescript(
            """
            CREATE TABLE IF NOT EXISTS sessions (
                id TEXT PRIMARY KEY, user_id TEXT NOT NULL, expires_at INTEGER NOT NULL,
                refresh_at INTEGER NOT NULL DEFAULT 0, lease_owner TEXT NOT NULL DEFAULT '',
                lease_until REAL NOT NULL DEFAULT 0, data TEXT NOT NULL);
            CREATE INDEX IF NOT EXISTS sessions_refresh ON sessions (refresh_at) WHERE refresh_at > 0;
            CREATE INDEX IF NOT EXISTS sessions_user ON sessions (user_id);
            CREATE TABLE IF NOT EXISTS once (key TEXT PRIMARY KEY, expires_at REAL NOT NULL);
            CREATE TABLE IF NOT EXISTS stash (key TEXT PRIMARY KEY, value TEXT NOT NULL, expires_at REAL NOT NULL);
            """
        )
        # SQLite gives its -wal and -shm files the database's mode; older ones may be looser.
        for suffix in ("-wal", "-shm", "-journal"):
            if (sidecar := Path(f"{path}{suffix}")).exists():
                _owner_only(sidecar)
        self._seal_plain_rows()

    def _dump(self, session: Session) -> str:
        """A row's data: the session with its IdP tokens sealed and bound to its id."""
        data = session.to_dict()
        tokens = [data.pop(name) for name in _TOKEN_FIELDS]
        if any(tokens):
            data[_SEALED_TOKENS] = self._tokens.seal(json.dumps(tokens), session.id)
        return json.dumps(data, separators=(",", ":"))

    def _load(self, session_id: str, text: str, tokens: bool = True) -> Session:
        """The session in a row; rows from before sealing hold plain tokens. ValueError if the
        tokens do not open (another `cookie_secret`, or moved from another row)."""
        data: dict[str, Any] = json.loads(text)
        sealed = data.pop(_SEALED_TOKENS, None)
        if not tokens:
            return _without_tokens(Session.from_dict(data))
        if sealed is not None:
            data.update(zip(_TOKEN_FIELDS, json.loads(self._tokens.open(sealed, session_id)), strict=True))
        return Session.from_dict(data)

    def _seal_plain_rows(self) -> None:
        """Seal the tokens of rows written before tokens were sealed at rest (once per database)."""
        pattern = " OR ".join(f"data LIKE '%\"{name}\":%'" for name in _TOKEN_FIELDS)
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                rows = self._db.execute(f"SELECT id, data FROM sessions WHERE {pattern}").fetchall()  # noqa: S608
                plain = 0
                for session_id, data in rows:
                    try:
                        session = self._load(session_id, data)
                    except (ValueError, TypeError):
                        continue  # unreadable either way: `get` treats it as no session
                    if any(name in json.loads(data) for name in _TOKEN_FIELDS):
                        self._db.execute("UPDATE sessions SET data = ? WHERE id = ?", (self._dump(session), session_id))
                        plain += 1
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            if plain:
                log.info("sealed the IdP tokens of %d stored sessions", plain)
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def get(self, session_id: str, now: float | None = None) -> Session | None:
        with self._lock:
            row = self._db.execute(
                "SELECT data FROM sessions WHERE id = ? AND expires_at > ?", (session_id, _now(now))
            ).fetchone()
        if row is None:
            return None
        try:
            return self._load(session_id, row[0])
        except ValueError:
            log.warning("session %s… has IdP tokens sealed under another key; treated as none", session_id[:8])
            return None

    def put(self, session: Session) -> None:
        refresh_at = session.token_expires_at if session.refresh_token else 0
        data = self._dump(session)
        with self._lock:
            self._db.execute(
                "INSERT INTO sessions (id, user_id, expires_at, refresh_at, data) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET user_id = excluded.user_id,"
                " expires_at = excluded.expires_at, refresh_at = excluded.refresh_at, data = excluded.data",
                (session.id, session.user_id, session.expires_at, refresh_at, data),
            )

    def update(self, session: Session) -> bool:
        refresh_at = session.token_expires_at if session.refresh_token else 0
        data = self._dump(session)
        with self._lock:
            changed = self._db.execute(
                "UPDATE sessions SET user_id = ?, expires_at = ?, refresh_at = ?, data = ? WHERE id = ?",
                (session.user_id, session.expires_at, refresh_at, data, session.id),
            ).rowcount
        return changed > 0

    def delete(self, session_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM sessions WHERE id = ?", (session_id,))

    def sessions(self, user_id: str | None = None, now: float | None = None) -> Iterator[Session]:
        query = "SELECT id, data FROM sessions WHERE expires_at > ? AND (? IS NULL OR user_id = ?)"
        with self._lock:
            rows = self._db.execute(query, (_now(now), user_id, user_id)).fetchall()
        found = []
        for session_id, data in rows:
            try:
                found.append(self._load(session_id, data, tokens=False))
            except (ValueError, TypeError):
                log.warning("session %s… is unreadable; left out", session_id[:8])
        return iter(sorted(found, key=lambda s: (s.issued_at, s.id)))

    def delete_user(self, user_id: str) -> int:
        with self._lock:
            return self._db.execute("DELETE FROM sessions WHERE user_id = ?", (user_id,)).rowcount

    def claim_once(self, key: str, expires_at: float, now: float | None = None) -> bool:
        at = _now(now)
        with self._lock:
            self._db.execute("DELETE FROM once WHERE key = ? AND expires_at <= ?", (key, at))
            cursor = self._db.execute("INSERT OR IGNORE INTO once (key, expires_at) VALUES (?, ?)", (key, expires_at))
            if cursor.rowcount and int(at) % 64 == 0:
                self._db.execute("DELETE FROM once WHERE expires_at <= ?", (at,))
        return cursor.rowcount == 1

    def stash(self, key: str, value: str, expires_at: float) -> bool:
        if len(value) > MAX_STASH_VALUE:
            return False
        sealed = self._stashed.seal(value, key)
        at = time.time()
        with self._lock:
            others = "SELECT count(*) FROM stash WHERE key != ?"  # replacing a held key takes no room
            if self._db.execute(others, (key,)).fetchone()[0] >= MAX_STASHED:
                self._db.execute("DELETE FROM stash WHERE expires_at <= ?", (at,))
                if self._db.execute(others, (key,)).fetchone()[0] >= MAX_STASHED:
                    return False
            self._db.execute(
                "INSERT INTO stash (key, value, expires_at) VALUES (?, ?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at",
                (key, sealed, expires_at),
            )
        return True

    def take(self, key: str, now: float | None = None) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value, expires_at FROM stash WHERE key = ?", (key,)).fetchone()
            if row is None:
                return None
            # Whoever deletes the row takes the value: another worker may have read it too.
            taken = self._db.execute("DELETE FROM stash WHERE key = ? AND value = ?", (key, row[0])).rowcount == 1
        if not taken or row[1] <= _now(now):
            return None
        try:
            return self._stashed.open(row[0], key)
        except ValueError:
            log.warning("a stashed value is sealed under another key; treated as none")
            return None

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
                "SELECT id, data FROM sessions WHERE refresh_at > 0 AND refresh_at < ? ORDER BY refresh_at LIMIT ?",
                (before, limit),
            ).fetchall()
        due = []
        for session_id, data in rows:
            try:
                due.append(self._load(session_id, data))
            except ValueError:
                # Sealed under another cookie_secret: it can never be refreshed, and must not
                # keep the sessions that can out of the first `limit`.
                with self._lock:
                    self._db.execute("UPDATE sessions SET refresh_at = 0 WHERE id = ?", (session_id,))
        return due

    def ping(self) -> None:
        with self._lock:
            self._db.execute("SELECT 1 FROM sessions LIMIT 1").fetchall()

    def close(self) -> None:
        with self._lock:
            self._db.close()


def open_store(url: str, *, secret: bytes, redis: RedisSettings | None = None) -> SessionStore:
    """The store named by a validated `session_store` value; `secret` (cookie_secret) seals at rest."""
    if url == "memory:":
        return MemoryStore()
    if url.startswith("sqlite://"):
        return SQLiteStore(url[len("sqlite://") :], secret=secret)
    if redis is not None:
        from authz.sessions.redis_store import RedisStore  # the redis client loads only when used

        return RedisStore(redis, secret=secret)
    raise ValueError(f"unsupported session store {url!r}")
