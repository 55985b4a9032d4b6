"""`authz grants …`: the operator's break-glass path on the configured store, the same JSON as the
API, recorded as `cli`, not subject to `approvers`."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from authz.cli import main
from authz.config import load_config
from authz.jit import service
from authz.jit.store import open_grant_store
from tests.jit.test_service import BOB, jit_routes


@pytest.fixture(params=["sqlite", "redis"])
def config(request: pytest.FixtureRequest, write_config: Callable[..., Path], tmp_path: Path) -> Path:
    """The CLI on a host's SQLite file, and on the Redis every replica shares."""
    if request.param == "redis":
        server = request.getfixturevalue("redis_server")
        store_keys = {"session_store": server.url, "session_store_key_prefix": server.settings().key_prefix}
    else:
        store_keys = {"session_store": f"sqlite://{tmp_path / 'authz.db'}"}
    path = write_config(routes=jit_routes(), **store_keys)
    loaded = load_config(path)
    store = open_grant_store(loaded.session_store, loaded.redis)
    service.request_access(loaded, store, BOB, "app", "20m", "incident 7", time.time())
    store.close()
    return path


def _out(capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    data: dict[str, object] = json.loads(capsys.readouterr().out)
    return data


def test_list_approve_show_revoke(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["grants", "list", "--status", "pending", "-c", str(config)]) == 0
    (grant,) = _out(capsys)["grants"]  # type: ignore[misc]
    assert grant["user"] == "bob" and grant["status"] == "pending" and grant["duration"] == "20m"
    assert main(["grants", "approve", grant["id"], "--duration", "5m", "-c", str(config)]) == 0
    approved = _out(capsys)
    assert approved["status"] == "active" and approved["decided_by"] == "cli" and approved["duration"] == "5m"
    assert main(["grants", "show", grant["id"], "-c", str(config)]) == 0
    shown = _out(capsys)
    assert [(h["event"], h["actor"]) for h in shown["history"]] == [("requested", "bob"), ("approved", "cli")]  # type: ignore[attr-defined]
    out = subprocess.run([sys.executable, "-m", "authz", "grants", "revoke", grant["id"], "-c", str(config)],
                         capture_output=True, text=True, check=False)  # fmt: skip
    assert out.returncode == 0 and json.loads(out.stdout)["status"] == "revoked"


def test_refusals_are_json_on_stderr(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["grants", "revoke", "nope", "-c", str(config)]) == 2
    assert json.loads(capsys.readouterr().err) == {"error": "no such grant", "status": 404}
    main(["grants", "list", "-c", str(config)])
    (grant,) = _out(capsys)["grants"]  # type: ignore[misc]
    assert main(["grants", "approve", grant["id"], "--duration", "3h", "-c", str(config)]) == 2
    assert "longer than this route allows" in capsys.readouterr().err
    assert main(["grants", "reject", grant["id"], "-c", str(config)]) == 0
    assert main(["grants", "reject", grant["id"], "-c", str(config)]) == 2
    assert json.loads(capsys.readouterr().err.splitlines()[-1])["status"] == 409


def test_a_memory_store_is_out_of_reach(write_config: Callable[..., Path], capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(routes=jit_routes())
    assert main(["grants", "list", "-c", str(path)]) == 1
    assert "memory:" in capsys.readouterr().err
