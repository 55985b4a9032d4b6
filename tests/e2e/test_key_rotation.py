"""Rotating the signing key under load with `authz keys add|promote|retire`, while two upstream
verifiers (authz.verify) check every assertion: zero failures. One fetches the JWKS again on an
unknown key id (at most every 10 s); the other never does, as a stricter cache would, and relies on
the procedure's wait alone. Where the procedure says to wait, their clocks are moved on instead."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import jwt
import pytest

from authz.signing.keys import generate_p256_pem
from authz.verify import InvalidAssertion, Verifier

from .conftest import Stack, _launch, _teardown, grpc_pass_only

pytestmark = [pytest.mark.e2e, grpc_pass_only("key rotation")]
HOST = "private.localhost"


@pytest.fixture
def rotating(tmp_path: Path) -> Iterator[Stack]:
    keys = tmp_path / "signing.pem"
    keys.write_bytes(generate_p256_pem())
    keys.chmod(0o600)
    stack = _launch(tmp_path, signing_key=None, signing_key_file="signing.pem")
    yield stack
    _teardown(stack)


class Later:
    """A clock some seconds ahead of the real one: the stricter verifier's, moved on by the test."""

    def __init__(self) -> None:
        self.ahead = 0.0

    def __call__(self) -> float:
        return time.time() + self.ahead


def test_a_rotation_under_load_fails_no_verification(rotating: Stack) -> None:
    stack = rotating
    cookie = stack.seed_session(HOST, user_id="u-7", email="gail@example.com")
    jwks = f"http://127.0.0.1:{stack.http_port}/.well-known/pomerium/jwks.json"
    later = Later()
    refetching = Verifier(jwks, audience=HOST, issuer=HOST, clock=later)
    strict = Verifier(jwks, audience=HOST, issuer=HOST, refetch_interval=10**9, clock=later)
    kids: list[str] = []
    failures: list[str] = []
    stop = threading.Event()

    def load() -> None:
        with stack.client(HOST) as client:
            while not stop.is_set():
                answer = client.get("/", headers={"cookie": f"_pomerium={cookie}"})
                if answer.status_code != 200:
                    failures.append(f"status {answer.status_code}")
                    continue
                token = stack.upstream.requests[-1].one("x-pomerium-jwt-assertion") or ""
                for verifier in (refetching, strict):
                    try:
                        verifier.verify(token)
                    except InvalidAssertion as exc:
                        failures.append(str(exc))
                kids.append(jwt.get_unverified_header(token)["kid"] if token else "")

    def keys(*args: str) -> str:
        out = subprocess.run([sys.executable, "-m", "authz", "keys", *args, "-c", str(stack.config_path)],
                             capture_output=True, text=True, check=False)  # fmt: skip
        assert out.returncode == 0, out.stderr
        stack.authz.proc.send_signal(signal.SIGHUP)  # the file watcher would see it within a second too
        return out.stdout

    def published() -> list[str]:
        return [k["kid"] for k in httpx2.get(jwks, timeout=5).json()["keys"]]

    def until(condition: object, what: str) -> None:
        deadline = time.monotonic() + 10
        while not condition():  # type: ignore[operator]
            assert time.monotonic() < deadline, what
            time.sleep(0.05)

    (old,) = published()
    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    try:
        time.sleep(0.5)
        added = keys("add").split()[1]
        until(lambda: published() == [old, added], "the new key published")
        time.sleep(0.5)
        later.ahead += 61  # wait for JWKS caches: authz serves the JWKS with max-age=60
        time.sleep(0.5)
        keys("promote", added[:16])
        until(lambda: kids and kids[-1] == added, "assertions signed by the new key")
        time.sleep(0.5)
        # The old key's assertions expire 300 s after they were signed; here none are in flight
        # (the load verifies each one as it arrives), so it is retired at once.
        keys("retire", old[:16])
        until(lambda: published() == [added], "the old key retired")
        time.sleep(0.5)
    finally:
        stop.set()
        worker.join()
    assert failures == [], failures[:3]
    assert len(kids) > 50 and set(kids) == {old, added}
    assert (Path(stack.config_path).parent / "signing.pem").stat().st_mode & 0o077 == 0


def test_the_commands_refuse_what_would_break_signing(rotating: Stack) -> None:
    def keys(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "authz", "keys", *args, "-c", str(rotating.config_path)],
                              capture_output=True, text=True, check=False)  # fmt: skip

    signing = httpx2.get(f"http://127.0.0.1:{rotating.http_port}/.well-known/pomerium/jwks.json").json()["keys"][0]
    refused = keys("retire", signing["kid"][:16])
    assert refused.returncode == 1 and "is the signing key" in refused.stderr
    assert keys("promote", "short").returncode == 1
    assert "no single key" in keys("promote", "0123456789abcdef").stderr
