"""`rediss://` against a real redis-server speaking TLS only, asking for a client certificate and a
password: the store works with the config's CA, certificate and password file, and anything less is
a StoreUnavailable with a log line that never holds the password."""

from __future__ import annotations

import logging
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from authz.config import Config
from authz.errors import StoreUnavailable
from authz.sessions.redis_store import RedisStore
from authz.sessions.session import Session
from tests.pki import Pki
from tests.redis_server import BINARY, MISSING, free_port

PASSWORD = "tls-test-password-not-in-logs"
SECRET = os.urandom(32)


@pytest.fixture(scope="module")
def tls_redis(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    if BINARY is None:
        if os.environ.get("AUTHZ_REQUIRE_REDIS"):
            pytest.fail(MISSING)
        pytest.skip(MISSING)
    folder = tmp_path_factory.mktemp("redis-tls")
    files = {"server.pem": pki.server.cert_pem, "server.key": pki.server.key_pem, "ca.pem": pki.root.cert_pem,
             "client.pem": pki.authz.cert_pem, "client.key": pki.authz.key_pem,
             "other-ca.pem": pki.other_root.cert_pem, "pw": f"{PASSWORD}\n".encode()}  # fmt: skip
    for name, data in files.items():
        (folder / name).write_bytes(data)
    port = free_port()
    proc = subprocess.Popen(
        [BINARY, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(folder), "--tls-cert-file", str(folder / "server.pem"),
         "--tls-key-file", str(folder / "server.key"), "--tls-ca-cert-file", str(folder / "ca.pem"),
         "--tls-auth-clients", "yes", "--requirepass", PASSWORD],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(0.3)
    assert proc.poll() is None, "redis-server refused the TLS options (built without TLS?)"
    yield port, folder
    proc.terminate()
    proc.wait(10)


def store_for(make_config: Callable[..., Config], port: int, folder: Path, **keys: str) -> RedisStore:
    config = make_config(session_store=f"rediss://127.0.0.1:{port}/0", session_store_timeout="1s", **keys)
    assert config.redis is not None
    return RedisStore(config.redis, secret=SECRET)


def full_keys(folder: Path) -> dict[str, str]:
    return {
        "session_store_ca_file": str(folder / "ca.pem"),
        "session_store_cert_file": str(folder / "client.pem"),
        "session_store_key_file": str(folder / "client.key"),
        "session_store_password_file": str(folder / "pw"),
    }


def session() -> Session:
    now = int(time.time())
    return Session("s1", "u1", "u1@example.com", issued_at=now, expires_at=now + 60, access_token="AT")


def test_rediss_with_the_ca_a_client_certificate_and_the_password(
    tls_redis: tuple[int, Path], make_config: Callable[..., Config]
) -> None:
    port, folder = tls_redis
    keys = full_keys(folder)
    store = store_for(make_config, port, folder, **keys)
    deadline = time.monotonic() + 10
    while True:  # the server may still be starting
        try:
            store.put(session())
            break
        except StoreUnavailable:
            assert time.monotonic() < deadline
            store.link._backoff = 0.0
            time.sleep(0.1)
    assert store.get("s1") == session()
    store.close()


@pytest.mark.parametrize(
    "missing",
    ["client certificate", "the right CA", "the password", "the right password"],
)
def test_anything_less_is_unavailable_and_the_password_stays_out_of_logs(
    tls_redis: tuple[int, Path], make_config: Callable[..., Config], missing: str, caplog: pytest.LogCaptureFixture
) -> None:
    port, folder = tls_redis
    keys = full_keys(folder)
    if missing == "client certificate":
        del keys["session_store_cert_file"], keys["session_store_key_file"]
    elif missing == "the right CA":
        keys["session_store_ca_file"] = str(folder / "other-ca.pem")
    elif missing == "the password":
        del keys["session_store_password_file"]
    else:
        (folder / "wrong-pw").write_text("not-the-password")
        keys["session_store_password_file"] = str(folder / "wrong-pw")
    store = store_for(make_config, port, folder, **keys)
    with caplog.at_level(logging.DEBUG), pytest.raises(StoreUnavailable):
        store.get("s1")
    assert "is unreachable" in caplog.text and PASSWORD not in caplog.text
    store.close()
