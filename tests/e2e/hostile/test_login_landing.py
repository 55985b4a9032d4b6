"""Where a login lands comes from config (class 3), and it finishes only in the browser that started
it (class 4): attacks through the real Envoy against the real IdP."""

from __future__ import annotations

import base64
import time
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest

from authz.dev.stack import idp_available
from authz.sessions.sealing import derive_key
from authz.signing import signed_url

from ..conftest import Stack
from ..loopback import browser, forms, idp_login

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(idp_available() is not None, reason=f"local IdP unavailable: {idp_available()}"),
]


def _login_at_idp(client: httpx2.Client, page: httpx2.Response, user: str) -> httpx2.Response:
    """Submit the IdP's login form without following redirects."""
    (form,) = [f for f in forms(page.text) if "login" in f["fields"]]  # type: ignore[operator]
    fields = {**form["fields"], "login": user, "password": "x"}  # type: ignore[dict-item]
    return client.post(page.url.join(str(form["action"])), data=fields, follow_redirects=False)


def _follow_until(client: httpx2.Client, response: httpx2.Response, path: str) -> str:
    """Follow redirects by hand; the first Location whose path is `path`, not followed."""
    while response.is_redirect:
        location = str(response.url.join(response.headers["location"]))
        if urlsplit(location).path == path:
            return location
        response = client.get(location, follow_redirects=False)
    raise AssertionError(f"never redirected to {path}")


def _unredeemed_handoff(stack: Stack, user: str) -> str:
    """An attacker signs in as `user` in their own browser and stops before the route-host callback."""
    with browser() as attacker:
        page = attacker.get(stack.url("private.localhost", "/dash"))
        return _follow_until(attacker, _login_at_idp(attacker, page, user), "/.pomerium/callback/")


def test_a_host_port_never_reaches_the_sign_in_link(stack: Stack) -> None:
    with httpx2.Client(timeout=10) as raw:
        response = raw.get(
            f"http://127.0.0.1:{stack.envoy_port}/dash",
            headers={"host": "private.localhost:8444", "accept": "text/html"},
        )
    assert response.status_code == 302
    target = parse_qs(urlsplit(response.headers["location"]).query)["pomerium_redirect_uri"][0]
    assert target == f"http://private.localhost:{stack.envoy_port}/dash"  # the configured port, not 8444


def test_a_signed_target_on_another_port_is_refused(stack: Stack) -> None:
    key = derive_key(base64.b64decode(stack.config["shared_secret"]), b"authz/signed-url")
    endpoint = stack.url("authenticate.localhost", "/.pomerium/sign_in")
    for port in (8444, 80):
        link = signed_url.sign(key, endpoint, f"http://private.localhost:{port}/dash", time.time())
        with browser() as client:
            response = client.get(link, follow_redirects=False)
        assert response.status_code == 400 and "port" in response.text


def test_the_programmatic_allow_list_matches_hosts_exactly(stack: Stack) -> None:
    def login(target: str) -> httpx2.Response:
        return stack.get("private.localhost", f"/.pomerium/api/v1/login?pomerium_redirect_uri={target}")

    # The default entry `localhost` no longer covers route hosts under it, nor any other subdomain.
    assert login(f"http://private.localhost:{stack.envoy_port}/").status_code == 400
    assert login("http://app.localhost:9/cb").status_code == 400
    assert login("http://localhost.evil.example/cb").status_code == 400
    # pomerium-cli's own redirect form: a loopback literal with its listener's port.
    allowed = login("http://127.0.0.1:41234/cb")
    assert allowed.status_code == 200
    with browser() as client:
        page = client.get(allowed.text)
        location = _follow_until(client, _login_at_idp(client, page, "bob"), "/cb")
    assert location.startswith("http://127.0.0.1:41234/cb?pomerium_jwt=")  # kept its port


def test_an_attackers_handoff_never_replaces_the_victims_session(stack: Stack) -> None:
    handoff = _unredeemed_handoff(stack, "mallory")
    with browser() as victim:
        signed_in = idp_login(victim, victim.get(stack.url("second.localhost", "/")), "alice")
        assert signed_in.status_code == 200 and str(signed_in.url) == stack.url("second.localhost", "/")
        before = dict(victim.cookies.items())
        # The attack: the victim's browser is sent to the attacker's unredeemed handoff link.
        attacked = victim.get(handoff)
        assert attacked.status_code == 400 and "not started in this browser" in attacked.text
        assert dict(victim.cookies.items()) == before  # no cookie was set or replaced
        stack.upstream.clear()
        after = victim.get(stack.url("second.localhost", "/whoami"))
    assert after.status_code == 200
    assert stack.upstream.last().one("x-pomerium-claim-email") == "alice@example.com"


def test_binding_cookies_are_lax_host_only_and_at_most_five(stack: Stack) -> None:
    with browser() as client:
        lines: list[str] = []
        for _ in range(7):
            response = client.get(stack.url("second.localhost", "/"), follow_redirects=False)
            assert response.status_code == 302
            lines = response.headers.get_list("set-cookie")
        new, *deleted = lines
        assert new.startswith("_pomerium_bind_") and "HttpOnly" in new and "SameSite=Lax" in new
        assert "Domain=" not in new and "Max-Age=600" in new
        assert len(deleted) == 1 and "Max-Age=0" in deleted[0]  # the oldest of five goes
        kept = [name for name in client.cookies if name.startswith("_pomerium_bind_")]
        assert len(kept) == 5
        api = client.get(stack.url("second.localhost", "/"), headers={"accept": "application/json"})
    assert api.status_code == 401 and "set-cookie" not in api.headers  # API clients get no binding


def test_a_sign_in_from_an_8kb_url_lands_on_it(stack: Stack) -> None:
    path = "/report?q=" + "x" * 8000
    with browser() as client:
        first = client.get(stack.url("second.localhost", path), follow_redirects=False)
        assert first.status_code == 302
        page = client.get(first.headers["location"])
        to_idp = [r.headers["location"] for r in page.history if "state=" in r.headers.get("location", "")]
        (state,) = parse_qs(urlsplit(to_idp[0]).query)["state"]
        landed = idp_login(client, page, "alice")
    assert landed.status_code == 200 and str(landed.url) == stack.url("second.localhost", path)
    assert stack.upstream.last().path == path
    assert len(state) < 512  # the URL stayed in the store, not in `state`
