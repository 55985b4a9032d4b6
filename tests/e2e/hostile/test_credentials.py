"""Credentials never leave authz (class 1) and a planted cookie never makes a victim act as someone
else (class 5): attacks through the real Envoy, with `cookie_domain` set (sibling hosts share the
session cookie by design) and with `__Host-` cookies (`cookie_secure`, no `cookie_domain`)."""

from __future__ import annotations

from collections.abc import Iterator
from http.cookiejar import Cookie, CookieJar, DefaultCookiePolicy
from typing import Any

import httpx2
import pytest

from authz.dev.stack import idp_available

from ..conftest import Stack, _launch, _teardown
from ..loopback import browser, idp_login

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(idp_available() is not None, reason=f"local IdP unavailable: {idp_available()}"),
]


class _LocalhostDomains(DefaultCookiePolicy):
    """Accept `Domain=localhost` as a browser does for *.localhost (the stdlib wants an embedded dot)."""

    def set_ok_domain(self, cookie: Cookie, request: Any) -> bool:
        return cookie.domain.lstrip(".") == "localhost" or super().set_ok_domain(cookie, request)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = _launch(tmp_path_factory.mktemp("shared-domain"), cookie_domain="localhost")
    yield stack
    _teardown(stack)


@pytest.fixture(scope="module")
def prefixed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = _launch(tmp_path_factory.mktemp("host-prefix"), cookie_secure=True)
    yield stack
    _teardown(stack)


def _send(stack: Stack, host: str, path: str, headers: list[tuple[str, str]]) -> httpx2.Response:
    """One request to Envoy with exactly these header lines (repeats kept, as a raw client sends them)."""
    with httpx2.Client(timeout=10) as raw:
        request = raw.build_request("GET", f"http://127.0.0.1:{stack.envoy_port}{path}")
        request.headers = httpx2.Headers([("host", f"{host}:{stack.envoy_port}"), ("accept", "text/html"), *headers])
        return raw.send(request)


def _cookies_upstream(stack: Stack) -> str:
    return ";".join(stack.upstream.last().headers.get("cookie", []))


def test_the_authenticate_cookie_is_host_only_and_opens_no_route_host(shared: Stack) -> None:
    with browser(cookies=CookieJar(policy=_LocalhostDomains())) as client:
        landed = idp_login(client, client.get(shared.url("private.localhost", "/dash")), "alice")
        assert landed.status_code == 200 and str(landed.url) == shared.url("private.localhost", "/dash")
        lines = [line for step in landed.history for line in step.headers.get_list("set-cookie")]
    (auth_line,) = [line for line in lines if line.startswith("_pomerium_authenticate=")]
    assert "Domain=" not in auth_line  # host-only, although cookie_domain is set
    (route_line,) = [line for line in lines if line.startswith("_pomerium=") and "Max-Age=0" not in line]
    assert "Domain=localhost" in route_line
    auth_value = auth_line.partition("=")[2].partition(";")[0]
    for host in ("private.localhost", "second.localhost"):
        replayed = _send(shared, host, "/dash", [("cookie", f"_pomerium={auth_value}")])
        assert replayed.status_code == 302, host  # sent to sign in: the value opens no route host


def test_every_authz_cookie_and_credential_is_removed_on_every_route(shared: Stack) -> None:
    token = shared.seed_session(".localhost", user_id="u-1", email="dora@example.com")
    forged = [
        ("cookie", "app=1; _pomerium_authenticate=a; _POMERIUM=b; __Host-_pomerium=c; _pomerium_csrf_x=d"),
        ("cookie", f"_pomerium={token}; _pomerium_bind_1=e; other=2"),
        ("authorization", f"pomerium {token}"),
        ("x-pomerium-authorization", f"POMERIUM {token}"),
    ]
    for host in ("public.localhost", "private.localhost", "second.localhost"):
        shared.upstream.clear()
        response = _send(shared, host, "/x", forged)
        assert response.status_code == 200, (host, response.text[:200])
        seen = shared.upstream.last()
        assert _cookies_upstream(shared).replace(" ", "") == "app=1;other=2", host
        assert "authorization" not in seen.headers and "x-pomerium-authorization" not in seen.headers, host


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("authorization", "pomerium {t}"),
        ("authorization", "BEARER pomerium-{t}"),
        ("authorization", "Basic dXNlcg==, Pomerium {t}"),
    ],
)
def test_credentials_in_any_case_or_split_open_and_are_removed(shared: Stack, header: str, value: str) -> None:
    token = shared.seed_session(".localhost", user_id="u-2", email="ed@example.com")
    response = _send(shared, "private.localhost", "/y", [(header, value.format(t=token))])
    assert response.status_code == 200  # recognised: the session opened
    seen = shared.upstream.last()
    assert seen.one("x-pomerium-claim-email") == "ed@example.com"
    assert token not in str(seen.headers)


def test_a_public_route_strips_a_second_cookie_line(shared: Stack) -> None:
    # Envoy's CheckRequest joins the lines with ',': what follows a comma is removed, never believed.
    token = shared.seed_session(".localhost", user_id="u-3", email="fay@example.com")
    _send(shared, "public.localhost", "/", [("cookie", "a=1"), ("cookie", f"_pomerium={token}")])
    assert token not in _cookies_upstream(shared)
    assert shared.upstream.last().one("x-pomerium-claim-email") == ""  # and it opened nothing


def test_a_cookie_smuggled_after_a_comma_never_opens_and_never_leaks(shared: Stack) -> None:
    """Browsers allow commas in values: a sibling site's `x=1,_pomerium=<its own session>` must
    not sign the victim in as the attacker (with `__Host-` it would get past the prefix)."""
    token = shared.seed_session(".localhost", user_id="mallory", email="mallory@example.com")
    shared.upstream.clear()
    for value in (f"x=1,_pomerium={token}", f"x=1, _pomerium={token}; y=2"):
        response = _send(shared, "private.localhost", "/y", [("cookie", value)])
        assert response.status_code == 302 and "/.pomerium/sign_in" in response.headers["location"], value
    assert shared.upstream.requests == []
    _send(shared, "public.localhost", "/", [("cookie", f"x=1,_pomerium={token}; keep=1")])
    assert token not in _cookies_upstream(shared) and _cookies_upstream(shared) == "keep=1"


def test_a_planted_cookie_never_wins_over_the_victims_own(shared: Stack) -> None:
    victim = shared.seed_session(".localhost", user_id="alice", email="alice@example.com")
    planted = shared.seed_session(".localhost", user_id="mallory", email="mallory@example.com")
    # A sibling host planted its cookie with a narrower Path, so the browser sends it first.
    cookie = f"_pomerium={planted}; _pomerium={victim}"
    shared.upstream.clear()
    response = _send(shared, "second.localhost", "/dash/x", [("cookie", cookie)])
    assert response.status_code == 302 and not shared.upstream.requests  # nobody: sign in again
    deletions = [line for line in response.headers.get_list("set-cookie") if line.startswith("_pomerium=;")]
    assert any("Domain=localhost" in line and "Path=/dash;" in line for line in deletions)
    assert any("Domain=" not in line and "Path=/;" in line for line in deletions)
    marker = [line for line in response.headers.get_list("set-cookie") if line.startswith("_pomerium_conflict=")]
    assert marker
    # The deletions did not take (the attacker re-plants): a 400 that names the cookies, no loop.
    again = _send(shared, "second.localhost", "/dash/x", [("cookie", f"{cookie}; _pomerium_conflict=1")])
    assert again.status_code == 400 and "_pomerium" in again.text and "location" not in again.headers


def test_with_the_host_prefix_an_unprefixed_cookie_is_ignored_and_stripped(prefixed: Stack) -> None:
    victim = prefixed.seed_session("second.localhost", user_id="alice", email="alice@example.com")
    planted = prefixed.seed_session("second.localhost", user_id="mallory", email="mallory@example.com")
    alone = _send(prefixed, "second.localhost", "/", [("cookie", f"_pomerium={planted}")])
    assert alone.status_code == 302  # an unprefixed cookie is not a session any more
    prefixed.upstream.clear()
    both = _send(prefixed, "second.localhost", "/", [("cookie", f"_pomerium={planted}; __Host-_pomerium={victim}")])
    assert both.status_code == 200
    seen = prefixed.upstream.last()
    assert seen.one("x-pomerium-claim-email") == "alice@example.com"
    assert "_pomerium" not in _cookies_upstream(prefixed)


def test_with_the_host_prefix_sign_in_sets_only_prefixed_cookies(prefixed: Stack) -> None:
    with browser() as client:
        first = client.get(prefixed.url("second.localhost", "/"), follow_redirects=False)
    names = [line.partition("=")[0] for line in first.headers.get_list("set-cookie")]
    assert names and all(name.startswith("__Host-_pomerium_") for name in names)
    assert all("Secure" in line and "Path=/" in line for line in first.headers.get_list("set-cookie"))
