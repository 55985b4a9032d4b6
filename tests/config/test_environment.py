"""Every global key from an upper-case environment variable, as Pomerium reads them: it wins over
the file, is read as YAML, counts in the config's digest, and `check-config` shows where each value
came from without showing a secret."""

from __future__ import annotations

import base64
import os
import secrets
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from authz.config import load_config
from authz.errors import ConfigError


def run(config: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "authz", "check-config", "-c", str(config)],
                          capture_output=True, text=True, check=False, env={**os.environ, **env})  # fmt: skip


def test_the_environment_wins_and_is_read_as_yaml(
    write_config: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_config(cookie_expire="1h")
    before = load_config(path)
    secret = base64.b64encode(secrets.token_bytes(32)).decode()
    monkeypatch.setenv("COOKIE_SECRET", secret)
    monkeypatch.setenv("COOKIE_EXPIRE", "2h")
    monkeypatch.setenv("PASS_IDENTITY_HEADERS", "true")
    monkeypatch.setenv("LOG_LEVEL", "warn")
    monkeypatch.setenv("cookie_name", "ignored")  # lower case is not a config variable
    config = load_config(path)
    assert config.cookie_secret.value == base64.b64decode(secret) and config.cookie_expire == 7200
    assert config.pass_identity_headers is True and config.cookie_name == before.cookie_name
    assert config.log_level == "warn"
    assert sorted(dict(config.from_env).values()) == [
        "COOKIE_EXPIRE",
        "COOKIE_SECRET",
        "LOG_LEVEL",
        "PASS_IDENTITY_HEADERS",
    ]
    assert config.digest != before.digest
    monkeypatch.setenv("COOKIE_EXPIRE", "3h")
    assert load_config(path).digest != config.digest  # a changed value is a changed config


def test_a_bad_value_names_the_key_and_not_the_value(
    write_config: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHARED_SECRET", "[unclosed")
    with pytest.raises(ConfigError) as info:
        load_config(write_config())
    (problem,) = info.value.problems
    assert "SHARED_SECRET is not valid YAML (value not shown)" in str(problem) and "unclosed" not in str(problem)
    monkeypatch.setenv("SHARED_SECRET", "not-base64!")
    with pytest.raises(ConfigError) as again:
        load_config(write_config())
    assert any("shared_secret" in str(p) and "not-base64" not in str(p) for p in again.value.problems)


def test_check_config_shows_each_source_and_no_secret(write_config: Callable[..., Path], tmp_path: Path) -> None:
    path = write_config(session_store=f"sqlite://{tmp_path / 'a.db'}")
    secret = base64.b64encode(secrets.token_bytes(32)).decode()
    out = run(path, COOKIE_SECRET=secret, IDP_CLIENT_SECRET="idp-secret-value", SESSION_STORE="redis://u:pw-123@127.0.0.1/0",
              LOG_LEVEL="debug", IDP_PROVIDER_URL="https://idp.example.com", IDP_CLIENT_ID="authz")  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "ok"
    rows = {line.split()[0]: line for line in lines[1:]}
    assert rows["cookie_secret"].split()[1:] == ["(set,", "not", "shown)", "$COOKIE_SECRET"]
    assert rows["log_level"].split()[1:] == ["debug", "$LOG_LEVEL"]
    assert rows["session_store"].split()[1:] == ["redis://u:***@127.0.0.1/0", "$SESSION_STORE"]
    assert rows["address"].split()[-1] == str(path)  # from the file
    assert rows["routes"].split()[1:3] == ["1", "route"] or "route" in rows["routes"]
    for leaked in (secret, "idp-secret-value", "pw-123"):
        assert leaked not in out.stdout + out.stderr
