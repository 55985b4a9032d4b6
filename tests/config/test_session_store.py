"""`session_store` and the Redis keys: URLs, the password kept out of every printed value, TLS files,
the key prefix and timeout, and the mistakes each gets a clear error for."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from authz.config import Config
from authz.config.store import masked
from authz.errors import ConfigError
from authz.ops.reload import restart_needed


def problems(make_config: Callable[..., Config], **overrides: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        make_config(**overrides)
    return [str(p) for p in info.value.problems]


def test_a_redis_url_loads_without_its_password(make_config: Callable[..., Config]) -> None:
    config = make_config(session_store="redis://authz:s3cr%40t@127.0.0.1:6380/2")
    assert config.session_store == "redis://authz@127.0.0.1:6380/2"
    redis = config.redis
    assert redis is not None
    assert (redis.host, redis.port, redis.db, redis.username, redis.tls) == ("127.0.0.1", 6380, 2, "authz", False)
    assert redis.password is not None and redis.password.value == b"s3cr@t"
    assert "s3cr" not in repr(config) and "s3cr" not in repr(redis)
    assert (redis.key_prefix, redis.timeout) == ("authz:", 1.0)
    assert config.warnings == ()  # loopback: no plain-text warning


def test_other_stores_have_no_redis_settings(make_config: Callable[..., Config], tmp_path: Path) -> None:
    assert make_config(session_store="sqlite://s.db").session_store == f"sqlite://{tmp_path / 's.db'}"
    assert make_config(session_store="memory:").redis is None
    assert make_config(session_store="redis://localhost").session_store == "redis://localhost/0"


def test_the_password_from_a_file_and_tls_files(make_config: Callable[..., Config], tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("from-file\n")
    for name in ("ca.pem", "c.pem", "c.key"):
        (tmp_path / name).write_text("-")
    config = make_config(
        session_store="rediss://redis.internal:6390",
        session_store_password_file="pw",
        session_store_ca_file="ca.pem",
        session_store_cert_file="c.pem",
        session_store_key_file="c.key",
        session_store_key_prefix="{edge-1}:",
        session_store_timeout="250ms",
    )
    redis = config.redis
    assert redis is not None and redis.password is not None
    assert redis.password.value == b"from-file" and redis.tls
    assert (redis.ca_file, redis.cert_file, redis.key_file) == tuple(
        str(tmp_path / n) for n in ("ca.pem", "c.pem", "c.key")
    )
    assert (redis.key_prefix, redis.timeout) == ("{edge-1}:", 0.25)
    assert str(tmp_path / "pw") in config.files  # a changed password file is noticed


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"session_store": "redis://"}, "session_store: names no host"),
        ({"session_store": "redis://h/x"}, "session_store: the path must be a database number"),
        ({"session_store": "redis://h:99999"}, "session_store: is not a valid Redis URL"),
        ({"session_store": "redis://h?ssl=1"}, "session_store: takes no query"),
        ({"session_store": "postgres://u:pw@h/db"}, "session_store: expected memory:, sqlite:///path, redis://"),
        ({"session_store": 7}, "session_store: expected memory:"),
        ({"session_store": "redis://:pw@h", "session_store_password_file": "x"}, "has a password already"),
        ({"session_store": "redis://h", "session_store_password_file": "nope"}, "cannot read 'nope'"),
        ({"session_store": "redis://h", "session_store_ca_file": "ca.pem"}, "needs a rediss:// session_store"),
        ({"session_store": "rediss://h", "session_store_ca_file": "nope.pem"}, "no such file 'nope.pem'"),
        ({"session_store": "memory:", "session_store_key_prefix": "x:"}, "applies to a redis:// or rediss://"),
        ({"session_store": "redis://h", "session_store_key_prefix": ""}, "must be 1 to 64 printable characters"),
        ({"session_store": "redis://h", "session_store_timeout": "60s"}, "at most 30s"),
    ],
)
def test_mistakes(make_config: Callable[..., Config], overrides: dict[str, Any], expected: str) -> None:
    found = problems(make_config, **overrides)
    assert any(expected in p for p in found), found
    assert not any("pw@" in p or ":pw" in p for p in found)  # a password is never echoed


def test_plain_text_to_another_host_warns(make_config: Callable[..., Config]) -> None:
    config = make_config(session_store="redis://redis.internal:6379/0")
    assert any("redis:// to redis.internal is plain text" in w for w in config.warnings)


def test_masked() -> None:
    assert masked("redis://u:secret@h:1/0") == "redis://u:***@h:1/0"
    assert masked("redis://:secret@[::1]:1") == "redis://:***@[::1]:1"
    assert masked("redis://h") == "redis://h"


def test_a_password_change_needs_a_restart(make_config: Callable[..., Config]) -> None:
    old = make_config(session_store="redis://:one@127.0.0.1")
    assert restart_needed(old, make_config(session_store="redis://:one@127.0.0.1")) == []
    assert restart_needed(old, make_config(session_store="redis://:two@127.0.0.1")) == ["session_store_*"]


def test_check_config_never_prints_the_password(write_config: Callable[..., Path]) -> None:
    for store in ("redis://authz:hunter2-secret@redis.internal:6379/0", "redis://:hunter2-secret@h?x=1"):
        path = write_config(session_store=store)
        run = subprocess.run(
            [sys.executable, "-m", "authz", "check-config", "--config", str(path)], capture_output=True, text=True
        )
        assert "hunter2" not in run.stdout + run.stderr
        assert "redis" in run.stdout + run.stderr  # it did say something about the store
