"""`authz sessions list|revoke`: one line per session without tokens, revocation by user or id,
and a clear refusal for stores this command cannot reach."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from authz.cli import main
from authz.config import load_config
from authz.sessions.session import Session
from authz.sessions.stores import SessionStore, open_store

NOW = int(time.time())


def _store(config: Path) -> SessionStore:
    loaded = load_config(config)
    return open_store(loaded.session_store, secret=loaded.cookie_secret.value, redis=loaded.redis)


@pytest.fixture(params=["sqlite", "redis"])
def config(request: pytest.FixtureRequest, write_config: Callable[..., Path], tmp_path: Path) -> Path:
    """The CLI on a host's SQLite file, and on the Redis every replica shares."""
    if request.param == "redis":
        server = request.getfixturevalue("redis_server")
        path = write_config(session_store=server.url, session_store_key_prefix=server.settings().key_prefix)
    else:
        path = write_config(session_store=f"sqlite://{tmp_path / 'state' / 'sessions.db'}")
    store = _store(path)
    for sid, user, issued in (("alpha-111111", "u-1", NOW - 20), ("bravo-222222", "u-1", NOW - 10),
                              ("charlie-3333", "u-2", NOW - 5)):  # fmt: skip
        store.put(Session(sid, user, f"{user}@example.com", issued_at=issued, expires_at=NOW + 3600,
                          access_token=f"access-{sid}", refresh_token=f"refresh-{sid}"))  # fmt: skip
    store.close()
    return path


def test_list_shows_one_line_per_session_and_no_token(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sessions", "list", "-c", str(config)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["alpha-11", "bravo-22", "charlie-"]
    assert "user=u-1" in lines[0] and "email=u-1@example.com" in lines[0]
    assert "issued=" in lines[0] and "expires=" in lines[0]
    assert not any("access-" in line or "refresh-" in line or "alpha-111111" in line for line in lines)
    assert main(["sessions", "list", "--user", "u-2", "-c", str(config)]) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()] == ["charlie-"]


def test_revoke_a_user_ends_every_session_of_theirs(config: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "authz", "sessions", "revoke", "--user", "u-1", "-c", str(config)],
                         capture_output=True, text=True, check=False)  # fmt: skip
    assert out.returncode == 0 and out.stdout.strip() == "revoked 2 sessions of user u-1", out.stderr
    store = _store(config)
    assert [s.id for s in store.sessions()] == ["charlie-3333"]
    store.close()


def test_revoke_one_session_by_its_listed_prefix(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sessions", "revoke", "--session", "bravo-22", "-c", str(config)]) == 0
    assert capsys.readouterr().out.startswith("revoked session bravo-22")
    assert main(["sessions", "revoke", "--session", "bravo-22", "-c", str(config)]) == 1  # gone now
    assert main(["sessions", "revoke", "--session", "a", "-c", str(config)]) == 1  # too short to be sure
    store = _store(config)
    assert [s.id for s in store.sessions()] == ["alpha-111111", "charlie-3333"]
    store.close()


def test_memory_store_is_out_of_reach(write_config: Callable[..., Path], capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(session_store="memory:")
    assert main(["sessions", "revoke", "--user", "u-1", "-c", str(path)]) == 1
    assert "cannot reach" in capsys.readouterr().err
    assert main(["sessions", "list", "-c", str(path)]) == 1


def test_a_missing_store_is_not_created(write_config: Callable[..., Path], tmp_path: Path) -> None:
    path = write_config(session_store=f"sqlite://{tmp_path / 'none' / 'sessions.db'}")
    assert main(["sessions", "list", "-c", str(path)]) == 1
    assert not (tmp_path / "none").exists()


def test_revoke_needs_a_user_or_a_session(config: Path) -> None:
    with pytest.raises(SystemExit):
        main(["sessions", "revoke", "-c", str(config)])
