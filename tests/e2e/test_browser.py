"""The login as a person does it: headless Chromium (Debian's package) driven by Playwright."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from authz.dev.stack import idp_available

from .conftest import Stack, _launch, _teardown

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(idp_available() is not None, reason=f"local IdP unavailable: {idp_available()}"),
    pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)"),
]
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-quic"]  # fmt: skip


@pytest.fixture
def secure_stack(tmp_path: Path) -> Iterator[Stack]:
    """cookie_secure keeps its default (true): Chromium sends Secure cookies to http://*.localhost."""
    stack = _launch(tmp_path, cookie_secure=True)
    yield stack
    _teardown(stack)


@pytest.fixture
def page(tmp_path: Path) -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        context = browser.new_context()
        yield context.new_page()
        context.close()
        browser.close()


def test_browser_login_cookie_flags_and_sign_out(secure_stack: Stack, page: Any, tmp_path: Path) -> None:
    stack = secure_stack
    idp_port = urlsplit(stack.config["idp_provider_url"]).port
    page.goto(stack.url("private.localhost", "/dash?from=browser"))
    assert urlsplit(page.url).port == idp_port  # at the IdP's login form
    page.fill("input[name=login]", "alice")
    page.fill("input[name=password]", "whatever")
    page.click("button[type=submit]")
    page.wait_for_url(stack.url("private.localhost", "/dash?from=browser"))
    assert '"/dash?from=browser"' in page.content()
    page.screenshot(path=str(tmp_path / "landed.png"))

    # cookie_secure and no cookie_domain: every cookie is __Host- (Secure, Path=/, host-only).
    (cookie,) = [c for c in page.context.cookies() if c["name"] == "__Host-_pomerium"]
    assert cookie["domain"] == "private.localhost"  # host-only
    assert (cookie["path"], cookie["httpOnly"], cookie["secure"], cookie["sameSite"]) == ("/", True, True, "Lax")
    auth = [c for c in page.context.cookies() if c["name"] == "__Host-_pomerium_authenticate"]
    assert auth and auth[0]["domain"] == "authenticate.localhost" and auth[0]["secure"]
    # The CSRF cookie and the login binding are spent once the sign-in is done.
    assert not [c for c in page.context.cookies() if "_pomerium_csrf_" in c["name"] or "_bind_" in c["name"]]

    visited: list[str] = []
    page.on("request", lambda request: visited.append(request.url))
    page.goto(stack.url("second.localhost", "/"))
    assert page.url == stack.url("second.localhost", "/")
    assert not [u for u in visited if urlsplit(u).port == idp_port]

    refused: list[str] = []  # what the Content-Security-Policy blocked, as Chromium reports it
    page.on(
        "console", lambda message: refused.append(message.text) if "Content Security Policy" in message.text else None
    )
    page.goto(stack.url("private.localhost", "/.pomerium/"))
    assert "Alice Example" in page.content()
    # The layout's stylesheet applies under the strict CSP (its hash is the one the policy names).
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(243, 244, 246)"
    page.goto(stack.url("private.localhost", "/.pomerium/sign_out"))  # a GET only asks
    assert "Sign out of <b>private.localhost</b>?" in page.content()
    page.click("button[type=submit]")  # confirm: the form POSTs with its CSRF token
    page.wait_for_url(lambda url: url.partition("?")[0] == stack.url("authenticate.localhost", "/.pomerium/signed_out"))
    assert "signed out" in page.content()
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(243, 244, 246)"
    assert refused == []
    # This host's and the authenticate host's __Host- cookies were deleted as they were set (Secure,
    # Path=/, no Domain); second.localhost keeps a cookie whose session is gone.
    left = {(c["domain"], c["name"]) for c in page.context.cookies() if c["name"].startswith("__Host-_pomerium")}
    assert left == {("second.localhost", "__Host-_pomerium")}
    page.goto(stack.url("second.localhost", "/"))
    assert urlsplit(page.url).port == idp_port  # signed out everywhere: back at the login form
