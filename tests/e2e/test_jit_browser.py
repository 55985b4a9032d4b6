"""Just-in-time access in a real browser (Debian's Chromium): bob asks from the 403 page's form,
and a script running on a route host in alice's browser — an approver, signed in — cannot approve
anything, though her cookies ride along to the authenticate host (the hosts are same-site); alice
herself approves on the authenticate host's page."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from authz.dev.stack import idp_available

from .conftest import Stack, _launch, _teardown
from .test_browser import ARGS, CHROMIUM

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(idp_available() is not None, reason=f"local IdP unavailable: {idp_available()}"),
    pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)"),
]
API = "/.pomerium/api/v1/grants"

# What a script in the app behind wiki.localhost (a stored XSS, a notebook) tries with alice's browser.
ATTACKS = """async ([auth, id]) => {
  const out = {};
  const post = (url, init) => fetch(url, {method: "POST", credentials: "include", ...init})
    .then(r => r.type === "opaque" ? "opaque" : r.status).catch(e => "blocked: " + e.name);
  // 1. Same origin as the app: the route host's grants API with alice's route-host cookie.
  out.routeHost = await post(`/.pomerium/api/v1/grants/${id}/approve`,
    {headers: {"content-type": "application/json", "sec-fetch-site": "same-origin"}, body: "{}"});
  out.routeRevoke = await fetch(`/.pomerium/api/v1/grants/${id}`,
    {method: "DELETE", headers: {"content-type": "application/json"}}).then(r => r.status);
  // 2. The authenticate host, cookies included: JSON needs a CORS preflight, which is never granted.
  out.authJson = await post(`${auth}/.pomerium/api/v1/grants/${id}/approve`,
    {headers: {"content-type": "application/json"}, body: "{}"});
  // 3. A "simple" request, sent without a preflight (the answer is unreadable, the effect is not).
  out.authPlain = await post(`${auth}/.pomerium/api/v1/grants/${id}/approve`,
    {mode: "no-cors", headers: {"content-type": "text/plain"}, body: "{}"});
  // 4. The approval form, posted blind (its CSRF token cannot be read cross-origin).
  out.readPage = await fetch(`${auth}/.pomerium/jit`, {credentials: "include"})
    .then(r => r.status).catch(e => "blocked: " + e.name);
  out.authForm = await post(`${auth}/.pomerium/jit`,
    {mode: "no-cors", body: new URLSearchParams({grant: id, action: "approve", csrf_token: ""})});
  return out;
}"""


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    vault = {
        "id": "vault",
        "from": "http://vault.localhost",
        "allowed_users": ["carol@example.com"],
        "jit": {"approvers": [{"allow": {"or": [{"groups": {"has": "admins"}}]}}], "max_duration": "1h"},
    }
    wiki = {"id": "wiki", "from": "http://wiki.localhost", "allow_any_authenticated_user": True}
    running = _launch(tmp_path, cookie_secure=True, extra_routes=[vault, wiki])
    yield running
    _teardown(running)


@pytest.fixture
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield launched
        launched.close()


def _sign_in(page: Any, stack: Stack, url: str, user: str) -> None:
    page.goto(url)
    assert urlsplit(page.url).port == urlsplit(stack.config["idp_provider_url"]).port
    page.fill("input[name=login]", user)
    page.fill("input[name=password]", "whatever")
    page.click("button[type=submit]")
    page.wait_for_url(url)


def _grant(stack: Stack, grant_id: str) -> dict[str, Any]:
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "authz", "grants", "show", grant_id, "-c", str(stack.config_path)],
                         capture_output=True, text=True, check=True)  # fmt: skip
    data: dict[str, Any] = json.loads(out.stdout)
    return data


def test_a_script_on_a_route_host_cannot_approve(stack: Stack, browser: Any) -> None:
    bob = browser.new_context().new_page()
    _sign_in(bob, stack, stack.url("vault.localhost", "/"), "bob")
    assert "Request access" in bob.content()
    bob.fill("textarea[name=reason]", "incident 42")
    bob.fill("input[name=duration]", "15m")
    bob.click("form.access button[type=submit]")
    assert "waiting for an approver" in bob.content()
    mine = json.loads(bob.goto(stack.url("vault.localhost", API)).text())["grants"]
    grant_id = mine[0]["id"]
    assert mine[0]["status"] == "pending"

    alice = browser.new_context().new_page()
    _sign_in(alice, stack, stack.url("wiki.localhost", "/notes"), "alice")  # an app she may use
    auth = f"http://authenticate.localhost:{stack.envoy_port}"
    out = alice.evaluate(ATTACKS, [auth, grant_id])
    assert out["routeHost"] == 403 and out["routeRevoke"] == 403
    assert str(out["authJson"]).startswith("blocked")  # the preflight is refused
    assert out["authPlain"] == "opaque" and out["authForm"] == "opaque"  # sent, and refused there
    assert str(out["readPage"]).startswith("blocked")
    after = _grant(stack, grant_id)
    assert after["status"] == "pending" and [h["event"] for h in after["history"]] == ["requested"]

    # On the authenticate host's own page, alice decides.
    alice.goto(f"{auth}/.pomerium/jit")
    assert "incident 42" in alice.content()
    alice.click("button[value=approve]")
    alice.wait_for_url(f"{auth}/.pomerium/jit?done=approve")
    assert _grant(stack, grant_id)["status"] == "active"
    bob.goto(stack.url("vault.localhost", "/"))
    assert '"path": "/"' in bob.content()
