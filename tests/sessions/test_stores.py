"""The SQLite store at rest: owner-only files, sealed IdP tokens and stashed values, rows from before
sealing (what every store does, a take atomic across connections among it: test_store_contract.py)."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import stat
from pathlib import Path

import pytest

from authz.sessions.sealing import AtRestSealer
from authz.sessions.session import Session
from authz.sessions.stores import TOKENS_AT_REST, SQLiteStore

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


def test_stashed_values_are_sealed_at_rest(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = SQLiteStore(path, secret=SECRET)
    store.stash("k", "https://app.example.com/?api_key=SECRET-IN-URL", NOW + 600)
    store.close()
    assert b"SECRET-IN-URL" not in raw_bytes(path)


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
