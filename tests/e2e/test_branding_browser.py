"""Branded pages in a real browser, through the real Envoy: each page of authz's at a phone's width
(375 px) and a desktop's (1280 px) shows the configured name, logo and colours under the strict
Content-Security-Policy, nothing overflows, and a screenshot of each is kept as a test artefact
(under `$AUTHZ_ARTEFACTS/branding` when that is set, else the test's temporary folder)."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from .conftest import Stack, _launch, _teardown
from .test_browser import ARGS, CHROMIUM, pytestmark, sync_api  # noqa: F401 - the same skips apply

NAME = "Example Corporation Operations Access Portal"
PRIMARY, PRIMARY_RGB = "#6e43e8", "rgb(110, 67, 232)"
SECONDARY_RGB = "rgb(11, 122, 117)"
INTRO = "Need access to something? Ask in #it-help with the request ID below."
LOGO = (
    b'<svg xmlns="http://www.w3.org/2000/svg" width="480" height="120">'
    b'<rect width="480" height="120" fill="#6e43e8"/></svg>'
)
WIDTHS = (375, 1280)
# What the page shows of the branding, read through the DOM as the browser laid it out.
PROBE = """() => {
  const brand = document.querySelector('.brand'), img = brand.querySelector('img');
  const button = document.querySelector('main button'), link = document.querySelector('main a');
  const card = getComputedStyle(document.querySelector('.card'));
  return {
    brand: brand.textContent.trim(), title: document.title,
    logo: img && {loaded: img.complete && img.naturalWidth > 0, shown: img.getBoundingClientRect().width},
    brandRight: brand.getBoundingClientRect().right,
    icon: (document.querySelector('link[rel=icon]') || {}).href || null,
    button: button && [getComputedStyle(button).backgroundColor, getComputedStyle(button).color],
    link: link && getComputedStyle(link).color,
    edge: [card.borderTopColor, card.borderTopWidth],
    overflow: document.documentElement.scrollWidth - window.innerWidth,
    paragraphs: [...document.querySelectorAll('main p:not(.brand)')].map(p => p.textContent.trim()),
  };
}"""


class _Images(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = LOGO if self.path in ("/brand/logo.svg", "/brand/favicon.svg", "/brand/other.svg") else b""
        self.send_response(200 if body else 404)
        self.send_header("content-type", "image/svg+xml")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def images() -> Iterator[str]:
    """A static server for the logo and favicon, on loopback (where http is allowed)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Images)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/brand"
    server.shutdown()
    server.server_close()


@pytest.fixture
def branded(tmp_path: Path, images: str) -> Iterator[Stack]:
    branding = {
        "name": NAME,
        "logo_url": f"{images}/logo.svg",
        "favicon_url": f"{images}/favicon.svg",
        "primary_color": PRIMARY,
        "secondary_color": "#0b7a75",
        "error_message_first_paragraph": INTRO,
    }
    stack = _launch(tmp_path, branding=branding)
    yield stack
    _teardown(stack)


@pytest.fixture
def artefacts(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("AUTHZ_ARTEFACTS") or tmp_path) / "branding"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_every_page_shows_the_brand_at_phone_and_desktop_widths(branded: Stack, images: str, artefacts: Path) -> None:
    stack = branded
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            for width in WIDTHS:
                context = browser.new_context(viewport={"width": width, "height": 800})
                _pages_at(stack, context.new_page(), width, images, artefacts)
                context.close()
        finally:
            browser.close()
    names = ("forbidden", "user", "sign-out", "signed-out", "bad-link")
    assert sorted(p.name for p in artefacts.iterdir()) == sorted(f"{n}-{w}.png" for n in names for w in WIDTHS)


def _pages_at(stack: Stack, page: Any, width: int, images: str, artefacts: Path) -> None:
    refused: list[str] = []  # what the Content-Security-Policy blocked, as Chromium reports it
    page.on("console", lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None)
    cookie = stack.seed_session("private.localhost", user_id="u-dora", email="dora@example.com", name="Dora")
    page.context.add_cookies([{"name": "_pomerium", "value": cookie, "url": stack.url("private.localhost")}])
    visits = {
        "forbidden": (stack.url("private.localhost", "/admin"), 403),  # the admin route allows admin@ only
        "user": (stack.url("private.localhost", "/.pomerium/"), 200),
        "bad-link": (stack.url("authenticate.localhost", "/.pomerium/sign_in?pomerium_redirect_uri=x"), 400),
        "sign-out": (stack.url("private.localhost", "/.pomerium/sign_out"), 200),
    }
    seen: dict[str, dict[str, Any]] = {}
    for name, (url, status) in visits.items():
        response = page.goto(url)
        assert response.status == status, name
        seen[name] = _check(page, name, width, artefacts)
    page.click("main button")  # confirm the sign-out: it ends on the signed-out page, with a way back
    page.wait_for_url(lambda url: "/.pomerium/signed_out?" in url)
    seen["signed-out"] = _check(page, "signed-out", width, artefacts)

    for name in ("forbidden", "user", "sign-out"):
        assert seen[name]["button"] == [PRIMARY_RGB, "rgb(255, 255, 255)"], (name, width)  # white reads best on it
    assert seen["signed-out"]["link"] == SECONDARY_RGB  # "Sign in again"
    for name in ("forbidden", "bad-link"):
        assert seen[name]["paragraphs"][0] == INTRO, (name, width)  # opens error pages, and only those
    assert all(INTRO not in seen[name]["paragraphs"] for name in ("user", "sign-out", "signed-out"))

    # A control: an image from any other URL, even on the same server, is refused by the policy.
    page.evaluate(
        "url => new Promise(done => { const i = new Image(); i.onerror = i.onload = () => done(); i.src = url; "
        "document.body.append(i); })",
        f"{images}/other.svg",
    )
    assert page.evaluate("document.querySelector('body > img').naturalWidth") == 0
    blocked, refused[:] = list(refused), []
    assert len(blocked) == 1 and "other.svg" in blocked[0], blocked


def _check(page: Any, name: str, width: int, artefacts: Path) -> dict[str, Any]:
    shown = page.evaluate(PROBE)
    where = (name, width)
    assert shown["brand"] == NAME and shown["title"].endswith(f" · {NAME}"), where
    assert shown["logo"]["loaded"] and 0 < shown["logo"]["shown"] <= 160, where  # at most 10rem wide
    assert shown["icon"] and shown["icon"].endswith("/brand/favicon.svg"), where
    assert shown["edge"] == [PRIMARY_RGB, "4px"], where
    assert shown["overflow"] <= 0 and shown["brandRight"] <= width, where  # nothing wider than the screen
    page.screenshot(path=str(artefacts / f"{name}-{width}.png"), full_page=True)
    return shown
