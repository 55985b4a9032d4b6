"""Sessions over time: IdP token refresh, a refused refresh, and an IdP that goes away."""

from __future__ import annotations

import base64
import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from authz.dev.stack import idp_available
from authz.sessions.session import Session
from authz.sessions.stores import SQLiteStore

from .conftest import Stack, _launch, _teardown
from .loopback import browser, idp_login

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(idp_available() is not None, reason=f"local IdP unavailable: {idp_available()}"),
]


@pytest.fixture
def short_tokens(tmp_path: Path) -> Iterator[Stack]:
    """A stack whose IdP issues 20-second access tokens, so the refresher runs at once."""
    stack = _launch(tmp_path, idp_ttl={"AccessToken": 20, "IdToken": 20})
    yield stack
    _teardown(stack)


def _only_session(stack: Stack) -> Session:
    store = SQLiteStore(stack.store_path, secret=base64.b64decode(stack.config["cookie_secret"]))
    try:
        (session,) = store.due_for_refresh(time.time() + 3600)
        return session
    finally:
        store.close()


def _wait(check: object, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.5)
    raise AssertionError("condition not met in time")


def test_tokens_are_refreshed_and_a_refused_refresh_ends_the_session(short_tokens: Stack) -> None:
    stack = short_tokens
    with browser() as client:
        page = client.get(stack.url("private.localhost", "/"))
        assert idp_login(client, page, "alice").status_code == 200
        first = stack.upstream.last().one("x-access-token")
        original = _only_session(stack)

        def refreshed() -> bool:
            client.get(stack.url("private.localhost", "/"))
            return stack.upstream.last().one("x-access-token") != first

        _wait(refreshed, 20)
        renewed = _only_session(stack)
        assert renewed.refresh_token != original.refresh_token  # rotated
        assert renewed.token_expires_at > original.token_expires_at

        store = SQLiteStore(stack.store_path, secret=base64.b64decode(stack.config["cookie_secret"]))
        store.put(dataclasses.replace(renewed, refresh_token="stolen-or-revoked"))
        store.close()

        def ended() -> bool:
            return client.get(stack.url("private.localhost", "/"), follow_redirects=False).status_code == 302

        _wait(ended, 20)


def test_existing_sessions_survive_an_idp_outage(fresh_stack: Stack) -> None:
    cookie = fresh_stack.seed_session("private.localhost", user_id="u-1", email="carol@example.com")
    assert fresh_stack.idp is not None
    fresh_stack.idp.stop()
    response = fresh_stack.get("private.localhost", "/", headers={"cookie": f"_pomerium={cookie}"})
    assert response.status_code == 200
    with browser() as client:
        page = client.get(fresh_stack.url("private.localhost", "/"))
    assert page.status_code == 502 and "identity provider" in page.text
