"""Shared fixtures: fresh secrets and keys per test session, config builders."""

from __future__ import annotations

import base64
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import settings

from authz.config import Config, parse_config
from authz.signing.keys import generate_p256_pem
from tests.pki import Pki, make_pki
from tests.redis_server import BINARY as REDIS_BINARY
from tests.redis_server import MISSING as REDIS_MISSING
from tests.redis_server import RedisServer

# `make fuzz` runs the property tests with this profile: many more examples, no deadline.
settings.register_profile("fuzz", max_examples=5000, deadline=None)


@pytest.fixture(scope="session")
def pki() -> Pki:
    """Every certificate case of the TLS tests, made once (tests/pki.py)."""
    return make_pki()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One real redis-server for the whole session (tests/redis_server.py); skipped with the reason
    when it is not installed, unless AUTHZ_REQUIRE_REDIS is set (`make test` sets it where it
    could install it), and then its absence fails."""
    if REDIS_BINARY is None:
        if os.environ.get("AUTHZ_REQUIRE_REDIS"):
            pytest.fail(REDIS_MISSING)
        pytest.skip(REDIS_MISSING)
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture(scope="session", autouse=True)
def _quiet_decision_lines() -> None:
    """Runtimes built in this process queue decision lines for stderr from a thread of their own,
    outside any test's capture: here they go nowhere (tests of the lines pass their own writer;
    `authz serve` processes keep theirs)."""
    from authz.ops import decisions

    decisions.STDERR.fd = os.open(os.devnull, os.O_WRONLY)


@pytest.fixture(scope="session")
def signing_pem() -> bytes:
    return generate_p256_pem()


def base_config(signing_pem: bytes, **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "insecure_server": True,
        "address": "127.0.0.1:8080",
        "authenticate_service_url": "http://authenticate.localhost:8080",
        "shared_secret": base64.b64encode(secrets.token_bytes(32)).decode(),
        "cookie_secret": base64.b64encode(secrets.token_bytes(32)).decode(),
        "signing_key": base64.b64encode(signing_pem).decode(),
        "cookie_secure": False,
        "session_store": "memory:",
        "routes": [
            {
                "from": "http://public.localhost",
                "to": "http://127.0.0.1:9000",
                "allow_public_unauthenticated_access": True,
            }
        ],
    }
    data.update(overrides)
    return data


@pytest.fixture
def make_config(signing_pem: bytes, tmp_path: Path) -> Callable[..., Config]:
    def build(**overrides: Any) -> Config:
        return parse_config(base_config(signing_pem, **overrides), base_dir=tmp_path)

    return build


@pytest.fixture
def write_config(signing_pem: bytes, tmp_path: Path) -> Callable[..., Path]:
    def write(**overrides: Any) -> Path:
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(base_config(signing_pem, **overrides), sort_keys=False))
        return path

    return write
