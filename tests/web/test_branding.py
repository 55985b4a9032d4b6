"""Branded pages: what a Theme renders, the CSP that lets exactly that load, and the sidecar and the
Check sending a page with the policy of the look it was rendered in (a reload switches both)."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import re
from collections.abc import Callable

import pytest

from authz.check.request import RequestContext
from authz.check.run import check_blocking
from authz.config import Config
from authz.config.model import Branding
from authz.runtime.state import Runtime
from authz.sessions.stores import MemoryStore
from authz.web import pages
from authz.web.negotiate import Format

from .conftest import Web

LOGO = "https://static.example.com/brand/logo.svg?v=3"
FAVICON = "http://127.0.0.1:8000/favicon.ico"
BRAND = Branding(
    name="Example <Corp> & Co",
    logo_url=LOGO,
    favicon_url=FAVICON,
    primary_color="#ffd33d",  # light: dark text on the buttons
    secondary_color="#3b2a8f",
    error_message_first_paragraph="Need access? Ask in #it-help.",
)


def _style_hash(html: str) -> str:
    (css,) = re.findall(r"<style>(.*?)</style>", html, re.S)
    return f"'sha256-{base64.b64encode(hashlib.sha256(css.encode()).digest()).decode()}'"


def test_the_plain_theme_is_the_shared_default() -> None:
    assert pages.theme(Branding()) is pages.DEFAULT
    assert pages.theme(dataclasses.replace(BRAND)) is pages.theme(BRAND)  # equal brandings share one
    assert pages.branded_css(Branding()) == ""
    assert "img-src" not in pages.DEFAULT.csp and "'unsafe-inline'" not in pages.DEFAULT.csp


def test_a_branded_page_shows_name_logo_favicon_and_colours() -> None:
    theme = pages.theme(BRAND)
    html = theme.account_page("signed_out", "Signed out", back="")
    assert "<title>Signed out &middot; Example &lt;Corp&gt; &amp; Co</title>" in html
    assert '<p class="brand"><img src="https://static.example.com/brand/logo.svg?v=3" alt="">' in html
    assert "Example &lt;Corp&gt; &amp; Co</p>" in html
    assert f'<link rel="icon" href="{FAVICON}">' in html
    assert "button{border-color:#ffd33d;background:#ffd33d;color:#1f2328}" in html
    assert ".card{border-top:4px solid #ffd33d}" in html and "a{color:#3b2a8f}" in html
    assert "style=" not in html and "<script" not in html


def test_the_csp_allows_exactly_the_rendered_stylesheet_and_the_brand_images() -> None:
    theme = pages.theme(BRAND)
    html = theme.error_body(403, ("email-unauthorized",), "r", Format.HTML)[1]
    assert theme.csp == (
        f"default-src 'none'; style-src {_style_hash(html)};"
        " img-src https://static.example.com/brand/logo.svg http://127.0.0.1:8000/favicon.ico;"
        " base-uri 'none'; frame-ancestors 'none'"
    )
    assert theme.headers == (
        ("x-frame-options", "DENY"), ("content-security-policy", theme.csp),
        ("x-content-type-options", "nosniff"), ("referrer-policy", "no-referrer"),
    )  # fmt: skip
    logo_only = pages.theme(Branding(logo_url="https://cdn.example.com/l.png"))
    assert "img-src https://cdn.example.com/l.png;" in logo_only.csp
    colours_only = pages.theme(Branding(primary_color="#0a0a0a"))
    assert "img-src" not in colours_only.csp and "color:#fff" in colours_only.account_page(
        "user", "x", rows=[], token="t"
    )


def test_the_paragraph_opens_error_pages_only() -> None:
    theme = pages.theme(BRAND)
    for status in (400, 401, 403, 404, 503):
        html = theme.error_body(
            status, ("email-unauthorized",), "r", Format.HTML, detail="d" if status == 400 else None
        )[1]
        assert "<h1>" in html and html.index("<p>Need access? Ask in #it-help.</p>") > html.index("<h1>"), status
    assert "it-help" not in theme.error_body(302, (), "r", Format.HTML, sign_in_url="https://a/")[1]
    assert "it-help" not in theme.error_body(403, ("x",), "r", Format.JSON)[1]  # programs get the reasons only
    assert "it-help" not in theme.account_page("signed_out", "Signed out", back="")


def test_a_runtime_carries_its_configs_theme(make_config: Callable[..., Config]) -> None:
    plain = Runtime.build(make_config(), MemoryStore())
    branded = Runtime.build(make_config(branding={"name": "Ops", "primary_color": "#123"}), MemoryStore())
    assert plain.theme is pages.DEFAULT
    assert branded.theme is pages.theme(Branding(name="Ops", primary_color="#112233"))


def test_the_checks_pages_carry_their_themes_policy(make_config: Callable[..., Config]) -> None:
    route = {
        "id": "app",
        "from": "http://app.localhost",
        "to": "http://127.0.0.1:9",
        "allow_any_authenticated_user": True,
    }
    rt = Runtime.build(make_config(routes=[route], branding={"name": "Ops", "primary_color": "#123"}), MemoryStore())
    req = RequestContext.build(method="GET", host="app.localhost", target="/", scheme="http",
                               headers={"accept": "text/html"}, request_id="r", route_id="app")  # fmt: skip
    login = check_blocking(rt, req, 1e9)
    assert login.status == 302
    headers = dict(login.headers)
    assert headers["content-security-policy"] == rt.theme.csp != pages.DEFAULT.csp
    assert _style_hash(login.body) in rt.theme.csp and ">Ops</p>" in login.body


@pytest.mark.anyio
async def test_the_sidecar_sends_each_page_with_its_looks_policy_and_a_reload_switches_it(
    make_web: Callable[..., Web],
) -> None:
    web = make_web(branding={"name": "Ops", "logo_url": "https://cdn.example.com/l.png"})
    async with web.client() as client:
        page = await client.get("/.pomerium/signed_out")
        bad_link = await client.get("/.pomerium/sign_in?pomerium_redirect_uri=x", headers={"accept": "text/html"})
        missing = await client.get("/nope")
        jwks = await client.get("/.well-known/pomerium/jwks.json")
        for answer in (page, bad_link, missing, jwks):
            assert answer.headers.get_list("content-security-policy") == [web.rt.theme.csp], answer.request.url
        for html in (page, bad_link):
            assert _style_hash(html.text) in web.rt.theme.csp and 'src="https://cdn.example.com/l.png"' in html.text
        plain = Runtime.build(dataclasses.replace(web.config, branding=Branding()), web.rt.store)
        web.holder.swap(plain)
        after = await client.get("/.pomerium/signed_out")
    assert after.headers["content-security-policy"] == pages.DEFAULT.csp
    assert _style_hash(after.text) in pages.DEFAULT.csp and ">authz</p>" in after.text


def test_branding_is_reloaded_without_a_restart(make_config: Callable[..., Config]) -> None:
    from authz.ops.reload import restart_needed

    assert restart_needed(make_config(), make_config(branding={"name": "Ops"}, primary_color="#123")) == []
