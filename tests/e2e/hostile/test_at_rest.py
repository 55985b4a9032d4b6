"""Session data at rest (class 8): an attacker who copies the SQLite store finds no IdP token in it,
the file is owner-only, and an operator can end a user's sessions everywhere from the command line."""

from __future__ import annotations

import stat
import subprocess
import sys

import pytest

from authz.dev.stack import idp_available, wait_until

from ..conftest import Stack
from ..loopback import browser, idp_login

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(idp_available() is not None, reason=f"local IdP unavailable: {idp_available()}"),
]


def _store_bytes(stack: Stack) -> bytes:
    """What a copy of the store holds: the database and its -wal and -shm files."""
    files = [p for p in stack.store_path.parent.iterdir() if p.name.startswith(stack.store_path.name)]
    return b"".join(p.read_bytes() for p in files)


def test_a_copied_store_holds_no_token_and_revoke_ends_the_session(stack: Stack) -> None:
    with browser() as client:
        landed = idp_login(client, client.get(stack.url("private.localhost", "/")), "bob")
        assert landed.status_code == 200
        access_token = stack.upstream.last().one("x-access-token")  # the IdP's token, as the upstream sees it
        cookie = client.cookies.get("_pomerium", domain="private.localhost")
    assert access_token and cookie
    session = stack.session_of(cookie, "private.localhost")  # opened with cookie_secret, as authz does
    assert session.access_token == access_token and session.refresh_token and session.id_token

    copied = _store_bytes(stack)
    assert b"bob@example.com" in copied  # the row is there…
    for token in (session.access_token, session.refresh_token, session.id_token):
        assert token.encode() not in copied  # …its tokens are not
        assert token.split(".")[-1].encode() not in copied  # not even a JWT's signature part
    assert stat.S_IMODE(stack.store_path.stat().st_mode) == 0o600
    for sidecar in stack.store_path.parent.glob(f"{stack.store_path.name}-*"):
        assert stat.S_IMODE(sidecar.stat().st_mode) == 0o600, sidecar.name

    replay = {"cookie": f"_pomerium={cookie}", "accept": "text/html"}
    assert stack.get("private.localhost", "/", headers=replay).status_code == 200
    revoked = subprocess.run(
        [sys.executable, "-m", "authz", "sessions", "revoke", "--user", "bob", "-c", str(stack.config_path)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert revoked.returncode == 0, revoked.stderr
    assert revoked.stdout.startswith("revoked ") and "of user bob" in revoked.stdout
    assert int(revoked.stdout.split()[1]) >= 1
    # Another process ended it: this authz sees that within session_cache_ttl (1 s in this stack).
    wait_until(lambda: stack.get("private.localhost", "/", headers=replay).status_code == 302, 10, "revocation seen")
    stack.upstream.clear()
    after = stack.get("private.localhost", "/", headers=replay)
    assert after.status_code == 302 and "/.pomerium/sign_in" in after.headers["location"]
    assert stack.upstream.requests == []
