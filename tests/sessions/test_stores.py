"""Stores at rest (owner-only files, sealed IdP tokens, rows from before sealing), listing and
revoking a user's sessions, and the single-use stash."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sqlite3
import stat
import threading
import time
from pathlib import Path

import pytest

from authz.sessions import stores
from authz.sessions.cache import CachedStore
from authz.sessions.sealing import AtRestSealer
from authz.sessions.session import Session
from authz.sessions.stores import TOKENS_AT_REST, MemoryStore, SessionStore, SQLiteStore

NOW = 1_800_000_000
SECRET = os.urandom(32)
TOKENS = {"id_token": "eyJ-id-token-VALUE", "access_token": "AT-access-VALUE", "refresh_token": "RT-refresh-VALUE"}


def signed_in(sid: str = "s1", user: str = "u1", issued: int = NOW) -> Session:
    return Session(sid, user, f"{user}@example.com", "A", ("g",), {"k": "v"}, issued, NOW + 3600,
                   token_expires_at=NOW + 60, **TOKENS)  # fmt: skip


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def raw_bytes(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in path.parent.iterdir() if p.name.startswith(path.name))


def make(kind: str, tmp_path: Path) -> SessionStore:
    return MemoryStore() if kind == "memory" else SQLiteStore(tmp_path / "s.db", secret=SECRET)


def test_database_and_created_directories_are_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "new" / "deeper" / "sessions.db"
    old = os.umask(0o022)  # the usual umask: files 0644 unless authz asks for less
    try:
        store = SQLiteStore(path, secret=SECRET)
        store.put(signed_in())
    finally:
        os.umask(old)
    assert mode(path) == 0o600
    assert {mode(Path(f"{path}{s}")) for s in ("-wal", "-shm")} == {0o600}
    assert mode(path.parent) == mode(path.parent.parent) == 0o700
    store.close()


def test_existing_directory_is_left_alone_and_a_loose_file_is_tightened(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tmp_path.chmod(0o755)
    path = tmp_path / "sessions.db"
    path.touch()
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING, "authz.sessions"):
        SQLiteStore(path, secret=SECRET).close()
    assert mode(path) == 0o600 and mode(tmp_path) == 0o755
    assert "owner-only" in caplog.text


def test_tokens_are_sealed_at_rest(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = SQLiteStore(path, secret=SECRET)
    store.put(signed_in())
    assert store.get("s1", NOW) == signed_in()
    store.close()
    raw = raw_bytes(path)
    assert b"u1@example.com" in raw  # the rest of the row is there to read…
    assert not any(value.encode() in raw for value in TOKENS.values())  # …but no token
    (data,) = sqlite3.connect(path).execute("SELECT data FROM sessions").fetchone()
    assert json.loads(data)["sealed_tokens"].startswith("v1.")
    assert not set(TOKENS) & set(json.loads(data))


def test_tokens_need_this_deployments_secret_and_their_own_row(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = SQLiteStore(path, secret=SECRET)
    store.put(signed_in("s1"))
    store.put(signed_in("s2", issued=NOW + 1))
    assert [s.id for s in store.due_for_refresh(NOW + 120)] == ["s1", "s2"]
    db = sqlite3.connect(path, isolation_level=None)
    (sealed,) = db.execute("SELECT data FROM sessions WHERE id = 's1'").fetchone()
    moved = json.loads(db.execute("SELECT data FROM sessions WHERE id = 's2'").fetchone()[0])
    moved["sealed_tokens"] = json.loads(sealed)["sealed_tokens"]
    db.execute("UPDATE sessions SET data = ? WHERE id = 's2'", (json.dumps(moved),))
    assert store.get("s2", NOW) is None  # tokens copied from another row do not open there
    assert [s.id for s in store.due_for_refresh(NOW + 120)] == ["s1"]  # and stop being due
    store.close()
    rotated = SQLiteStore(path, secret=os.urandom(32))
    assert rotated.get("s1", NOW) is None  # another cookie_secret: no session, no crash
    assert rotated.due_for_refresh(NOW + 120) == []
    rotated.close()


def test_rows_from_before_sealing_load_and_are_sealed_on_open(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    SQLiteStore(path, secret=SECRET).close()
    session = signed_in()
    db = sqlite3.connect(path, isolation_level=None)
    db.execute(
        "INSERT INTO sessions (id, user_id, expires_at, refresh_at, data) VALUES (?, ?, ?, ?, ?)",
        (session.id, session.user_id, session.expires_at, session.token_expires_at, session.to_json()),
    )  # as the store wrote it before this change
    db.close()
    assert TOKENS["refresh_token"].encode() in raw_bytes(path)
    store = SQLiteStore(path, secret=SECRET)
    assert store.get("s1", NOW) == session
    store.close()
    assert not any(value.encode() in raw_bytes(path) for value in TOKENS.values())


def test_a_plain_token_that_looks_sealed_is_still_plain(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db", secret=SECRET)
    odd = Session("s", "u", expires_at=NOW + 60, access_token="v1.not-sealed", refresh_token="v1.x")
    store.put(odd)
    assert store.get("s", NOW) == odd
    store.close()


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_list_and_revoke_a_users_sessions(kind: str, tmp_path: Path) -> None:
    store = make(kind, tmp_path)
    store.put(signed_in("b-newer", "u1", NOW + 5))
    store.put(signed_in("a-older", "u1", NOW))
    store.put(signed_in("c", "u2", NOW + 1))
    store.put(Session("gone", "u1", issued_at=NOW - 10, expires_at=NOW - 1))
    assert [s.id for s in store.sessions(now=NOW)] == ["a-older", "c", "b-newer"]
    listed = list(store.sessions("u1", NOW))
    assert [s.id for s in listed] == ["a-older", "b-newer"]
    assert all(not (s.id_token or s.access_token or s.refresh_token) for s in listed)  # never tokens
    assert listed[0].email == "u1@example.com" and listed[0].issued_at == NOW
    assert store.delete_user("u1") == 3  # the expired one goes too
    assert store.get("a-older", NOW) is None and store.get("b-newer", NOW) is None
    assert store.get("c", NOW) is not None
    assert store.delete_user("u1") == 0
    store.close()


@pytest.mark.parametrize("kind", ["memory", "sqlite", "cached"])
def test_update_writes_only_a_session_still_stored(kind: str, tmp_path: Path) -> None:
    inner = make("sqlite" if kind == "cached" else kind, tmp_path)
    store: SessionStore = CachedStore(inner, ttl=10) if kind == "cached" else inner
    store.put(signed_in("s1"))
    assert store.get("s1", NOW) is not None  # cached, when there is a cache
    renewed = dataclasses.replace(signed_in("s1"), access_token="AT-2", token_expires_at=NOW + 300)
    assert store.update(renewed) is True
    assert store.get("s1", NOW) == renewed and store.due_for_refresh(NOW + 60) == []
    store.delete("s1")
    assert store.update(renewed) is False  # a revoked session is never written back
    assert store.get("s1", NOW) is None and inner.get("s1", NOW) is None
    store.close()


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_stash_is_single_use_and_expires(kind: str, tmp_path: Path) -> None:
    store = make(kind, tmp_path)
    long_url = "https://app.example.com/" + "x" * 8192
    store.stash("attempt-1", long_url, NOW + 600)
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
    store.close()


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_the_stash_is_bounded(kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stores, "MAX_STASHED", 3)
    store = make(kind, tmp_path)
    at = time.time()
    assert not store.stash("huge", "x" * (stores.MAX_STASH_VALUE + 1), at + 600)
    assert store.stash("short-lived", "v", at + 0.2)
    assert all(store.stash(f"k{i}", "v", at + 600) for i in range(2))
    assert not store.stash("one-more", "v", at + 600)  # full: refused, nothing evicted
    assert store.stash("k0", "again", at + 600)  # replacing a held key takes no more room
    time.sleep(0.25)
    assert store.stash("one-more", "v", at + 600)  # the expired one made room
    assert [store.take(k, time.time()) for k in ("huge", "k0", "k1", "one-more")] == [None, "again", "v", "v"]
    store.close()


def test_stashed_values_are_sealed_at_rest(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = SQLiteStore(path, secret=SECRET)
    store.stash("k", "https://app.example.com/?api_key=SECRET-IN-URL", NOW + 600)
    store.close()
    assert b"SECRET-IN-URL" not in raw_bytes(path)


def test_take_is_atomic_across_connections(tmp_path: Path) -> None:
    first = SQLiteStore(tmp_path / "s.db", secret=SECRET)
    second = SQLiteStore(tmp_path / "s.db", secret=SECRET)
    keys = [f"attempt-{i}" for i in range(200)]
    for key in keys:
        first.stash(key, key.upper(), NOW + 600)
    taken: dict[int, list[str]] = {0: [], 1: []}
    start = threading.Barrier(2)

    def race(index: int, store: SQLiteStore) -> None:
        start.wait()
        for key in keys:
            if (value := store.take(key, NOW)) is not None:
                taken[index].append(value)

    threads = [threading.Thread(target=race, args=(i, s)) for i, s in enumerate((first, second))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(taken[0] + taken[1]) == sorted(k.upper() for k in keys)  # each value exactly once
    first.close()
    second.close()


def test_at_rest_sealer_format() -> None:
    sealer = AtRestSealer(SECRET, TOKENS_AT_REST)
    sealed = sealer.seal("token", "row-1")
    assert sealed.startswith("v1.") and sealer.open(sealed, "row-1") == "token"
    assert sealer.seal("token", "row-1") != sealed  # a fresh nonce each time
    tampered = sealed[:-2] + ("AA" if sealed[-2:] != "AA" else "BB")
    bad = [(sealed, "row-2"), ("token", "row-1"), ("v2." + sealed[3:], "row-1"), ("v1.!!", "row-1"),
           ("v1.AAAA", "row-1"), (tampered, "row-1")]  # fmt: skip
    for value, context in bad:
        with pytest.raises(ValueError):
            sealer.open(value, context)
    with pytest.raises(ValueError):
        AtRestSealer(SECRET, b"another-purpose").open(sealed, "row-1")


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_ping_answers_while_the_store_does(kind: str, tmp_path: Path) -> None:
    store = make(kind, tmp_path)
    store.ping()
    store.close()
    if kind == "sqlite":
        with pytest.raises(sqlite3.ProgrammingError):
            store.ping()  # closed: /readyz says so
