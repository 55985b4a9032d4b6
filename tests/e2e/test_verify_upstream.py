"""authz.verify on the assertions a real gate sends upstream (through Envoy), fetched against the
JWKS the sidecar publishes: an app verifies its own host's assertion; one minted for another host is
refused whatever Host the request claims; a public route's assertion (no user) is refused unless the
app allows anonymous requests."""

from __future__ import annotations

from typing import Any

import pytest

from authz.verify import Identity, Verifier, WSGIAssertionMiddleware

from .conftest import Stack

pytestmark = pytest.mark.e2e


def assertion_for(stack: Stack, host: str, cookie: str | None = None) -> str:
    stack.upstream.clear()
    headers = {"cookie": f"_pomerium={cookie}"} if cookie else {}
    assert stack.get(host, "/", headers=headers).status_code == 200
    token = stack.upstream.last().one("x-pomerium-jwt-assertion")
    assert token
    return token


def app_for(stack: Stack, host: str, **options: Any) -> tuple[WSGIAssertionMiddleware, list[Identity]]:
    """A WSGI app for `host` behind authz.verify; the JWKS from the sidecar, as the edge serves it."""
    seen: list[Identity] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.append(environ["authz.identity"])
        start_response("200 OK", [])
        return [b"ok"]

    jwks = f"http://127.0.0.1:{stack.http_port}/.well-known/pomerium/jwks.json"
    return WSGIAssertionMiddleware(app, Verifier(jwks, audience=host, issuer=host, **options)), seen


def call(app: WSGIAssertionMiddleware, token: str, host: str) -> str:
    statuses: list[str] = []
    app({"HTTP_HOST": host, "HTTP_X_POMERIUM_JWT_ASSERTION": token}, lambda s, h: statuses.append(s))
    return statuses[0]


def test_an_app_takes_its_own_hosts_assertion_and_no_other_whatever_the_host_header(stack: Stack) -> None:
    cookie = stack.seed_session("second.localhost", user_id="u-9", email="erin@example.com")
    other = assertion_for(stack, "second.localhost", cookie)
    mine = stack.seed_session("private.localhost", user_id="u-9", email="erin@example.com")
    own = assertion_for(stack, "private.localhost", mine)
    app, seen = app_for(stack, "private.localhost")
    assert call(app, own, "private.localhost") == "200 OK" and seen[0].email == "erin@example.com"
    # second.localhost's assertion, replayed at private.localhost's app with a forged Host: refused,
    # since the audience is the app's setting, never the request's.
    assert call(app, other, "second.localhost") == "401 Unauthorized"
    assert len(seen) == 1


def test_a_public_routes_assertion_names_nobody_and_is_refused_unless_allowed(stack: Stack) -> None:
    anonymous = assertion_for(stack, "public.localhost")
    strict, seen = app_for(stack, "public.localhost")
    assert call(strict, anonymous, "public.localhost") == "401 Unauthorized" and seen == []
    lenient, seen = app_for(stack, "public.localhost", allow_anonymous=True)
    assert call(lenient, anonymous, "public.localhost") == "200 OK" and seen[0].anonymous
