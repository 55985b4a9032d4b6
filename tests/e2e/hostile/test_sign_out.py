"""Sign-out is not a link an attacker can fire (class 10), and the discovery document never takes
the request's port (class 3): attacks through the real Envoy, with `__Host-` cookies."""

from __future__ import annotations

import base64
import hashlib
import re
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx2
import pytest

from authz.dev.stack import idp_available
from authz.sessions.codec import AUTHENTICATE, HandleCodec
from authz.sessions.payloads import SignOutLink
from authz.sessions.sealing import Sealer, derive_key
from authz.sessions.session import SessionHandle
from authz.signing import signed_url
from authz.web.pages import CONTENT_SECURITY_POLICY

from ..conftest import Stack, _launch, _teardown

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(idp_available() is not None, reason=f"local IdP unavailable: {idp_available()}"),
]

HOST = "second.localhost"  # any signed-in user may pass
AUTH = "authenticate.localhost"
COOKIE = "__Host-_pomerium"  # cookie_secure and no cookie_domain
_TOKEN = re.compile(r'name="csrf_token" value="([^"]*)"')
CROSS_SITE = {"origin": "https://evil.example", "referer": "https://evil.example/", "sec-fetch-site": "cross-site"}


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = _launch(tmp_path_factory.mktemp("sign-out"), cookie_secure=True)
    yield stack
    _teardown(stack)


def _send(stack: Stack, method: str, path: str, cookie: str = "", **kwargs: Any) -> httpx2.Response:
    """One request to HOST through Envoy, carrying the session cookie when given."""
    headers = {
        "accept": "text/html",
        **({"cookie": f"{COOKIE}={cookie}"} if cookie else {}),
        **kwargs.pop("headers", {}),
    }
    with stack.client(HOST) as client:
        return client.request(method, path, headers=headers, **kwargs)


def _opens(stack: Stack, cookie: str) -> bool:
    """Whether the session still lets its holder through (else: sent to sign in)."""
    response = _send(stack, "GET", "/", cookie)
    assert response.status_code in (200, 302), response.text
    return response.status_code == 200


def _seed(stack: Stack) -> str:
    return stack.seed_session(HOST, user_id="u-dora", email="dora@example.com")


def _token(page: httpx2.Response) -> str:
    (token,) = _TOKEN.findall(page.text)
    return token


def _own_cookie(stack: Stack, route_cookie: str) -> str:
    """The authenticate host's cookie for the session a route cookie names, as one login sets both."""
    session_id = stack.session_of(route_cookie, HOST).id
    now = int(time.time())
    codec = HandleCodec(base64.b64decode(stack.config["cookie_secret"]), AUTHENTICATE)
    return f"__Host-_pomerium_authenticate={codec.seal(SessionHandle(session_id, 'u-dora', AUTH, now, now + 3600))}"


def _open_link(stack: Stack, link: str, headers: dict[str, str]) -> httpx2.Response:
    """Open a link to the authenticate host through Envoy, as the browser would after a redirect."""
    url = urlsplit(link)
    assert url.netloc == f"{AUTH}:{stack.envoy_port}"
    with stack.client(AUTH) as client:
        return client.get(f"{url.path}?{url.query}", headers=headers)


def test_a_cross_site_get_only_asks(secure: Stack) -> None:
    cookie = _seed(secure)
    page = _send(secure, "GET", "/.pomerium/sign_out", cookie, headers=CROSS_SITE)
    assert page.status_code == 200 and "Sign out of <b>second.localhost</b>?" in page.text
    assert '<form method="post" action="/.pomerium/sign_out">' in page.text and _token(page)
    assert "set-cookie" not in page.headers
    assert _opens(secure, cookie)


def test_a_post_without_the_sessions_token_is_403_and_changes_nothing(secure: Stack) -> None:
    cookie, other = _seed(secure), _seed(secure)
    others_token = _token(_send(secure, "GET", "/.pomerium/sign_out", other))
    for fields in ({}, {"csrf_token": "forged"}, {"csrf_token": others_token}):
        refused = _send(secure, "POST", "/.pomerium/sign_out", cookie, headers=CROSS_SITE, data=fields)
        assert refused.status_code == 403 and "nothing was changed" in refused.text, fields
        assert "set-cookie" not in refused.headers and "location" not in refused.headers
    assert _opens(secure, cookie) and _opens(secure, other)


def test_the_confirmed_form_signs_out_and_the_session_no_longer_opens(secure: Stack) -> None:
    cookie = _seed(secure)
    page = _send(secure, "GET", "/.pomerium/sign_out", cookie)
    hop = _send(secure, "POST", "/.pomerium/sign_out", cookie, data={"csrf_token": _token(page)})
    assert hop.status_code == 302
    # The cookie in use, deleted as a __Host- cookie must be: Secure, Path=/, no Domain.
    (deletion,) = hop.headers.get_list("set-cookie")
    assert deletion.startswith(f"{COOKIE}=; Path=/; Max-Age=0;") and "; Secure" in deletion
    assert "Domain=" not in deletion
    link = hop.headers["location"]
    assert link.startswith(secure.url(AUTH, "/.pomerium/sign_out?"))
    done = _open_link(secure, link, {"accept": "text/html"})
    assert done.status_code == 302 and done.headers["location"].startswith(secure.config["idp_provider_url"])
    assert not _opens(secure, cookie)


def test_a_link_authz_signed_signs_out_without_a_page(secure: Stack) -> None:
    cookie = _seed(secure)
    cookie_secret = base64.b64decode(secure.config["cookie_secret"])
    sealed = Sealer(cookie_secret, b"sign-out").seal(SignOutLink(secure.session_of(cookie, HOST).id).to_wire())
    url_key = derive_key(base64.b64decode(secure.config["shared_secret"]), b"authz/signed-url")
    endpoint, landing = secure.url(AUTH, "/.pomerium/sign_out"), secure.url(AUTH, "/.pomerium/signed_out")
    link = signed_url.sign(url_key, endpoint, landing, time.time(), {"pomerium_session": sealed})
    done = _open_link(secure, link, {"cookie": _own_cookie(secure, cookie), **CROSS_SITE})
    assert done.status_code == 302 and done.headers["location"].startswith(secure.config["idp_provider_url"])
    assert any(line.startswith("__Host-_pomerium_authenticate=;") for line in done.headers.get_list("set-cookie"))
    assert not _opens(secure, cookie)


def test_a_link_an_attacker_obtained_never_signs_a_victim_out(secure: Stack) -> None:
    victim = _seed(secure)
    minted = _send(secure, "POST", "/.pomerium/sign_out")  # no session: nothing to confirm, a link naming none
    assert minted.status_code == 302
    answer = _open_link(secure, minted.headers["location"], {"cookie": _own_cookie(secure, victim), **CROSS_SITE})
    assert answer.status_code == 200 and "Sign out of <b>authenticate.localhost</b>?" in answer.text
    assert "set-cookie" not in answer.headers
    assert _opens(secure, victim)


def test_the_discovery_document_never_takes_the_hosts_port(secure: Stack) -> None:
    with httpx2.Client(timeout=10) as raw:
        response = raw.get(
            f"http://127.0.0.1:{secure.envoy_port}/.well-known/pomerium",
            headers={"host": "private.localhost:8444"},
        )
    assert response.status_code == 200
    document = response.json()
    origin = f"http://private.localhost:{secure.envoy_port}"
    assert document == {
        "issuer": f"{origin}/",
        "authentication_callback_endpoint": secure.url(AUTH, "/oauth2/callback"),
        "jwks_uri": f"{origin}/.well-known/pomerium/jwks.json",
    }
    assert "8444" not in response.text


def test_a_cross_site_post_to_the_authenticate_host_changes_nothing(secure: Stack) -> None:
    victim = _seed(secure)
    # SameSite=Lax keeps the victim's cookie out of another site's auto-submitting form.
    with secure.client(AUTH) as client:
        posted = client.post("/.pomerium/sign_out", headers={"accept": "text/html", **CROSS_SITE}, data={})
    assert posted.status_code == 302 and posted.headers["location"] == secure.url(AUTH, "/.pomerium/signed_out")
    assert "set-cookie" not in posted.headers  # the authenticate cookie is not cleared, the IdP not visited
    assert _opens(secure, victim)


def test_no_site_can_frame_a_page_and_no_script_can_run_on_one(secure: Stack) -> None:
    """Every page of authz's, from the sidecar and from the Check: no framing, a CSP that lets only
    the layout's own stylesheet load (by its hash), nosniff; HSTS only over TLS (this stack is plain)."""
    cookie = _seed(secure)
    with secure.client(AUTH) as client:
        auth_page = client.get("/.pomerium/sign_out", headers={"cookie": _own_cookie(secure, cookie)})
    pages = {
        "the authenticate host's sign-out": auth_page,
        "a route host's sign-out": _send(secure, "GET", "/.pomerium/sign_out", cookie),
        "the user page": _send(secure, "GET", "/.pomerium/", cookie),
        "the sign-in redirect page": _send(secure, "GET", "/"),
    }
    nobody = secure.seed_session("nobody.localhost", user_id="u-dora", email="dora@example.com")
    with secure.client("nobody.localhost") as client:  # a route that allows no one
        pages["the 403 page"] = client.get("/", headers={"accept": "text/html", "cookie": f"{COOKIE}={nobody}"})
    with secure.client(AUTH) as client:
        pages["the signed-out page"] = client.get("/.pomerium/signed_out")
        pages["a bad link's page"] = client.get(
            "/.pomerium/sign_in?pomerium_redirect_uri=x", headers={"accept": "text/html"}
        )
    statuses = {name: page.status_code for name, page in pages.items()}
    assert statuses == {**dict.fromkeys(pages, 200), "the sign-in redirect page": 302, "the 403 page": 403,
                        "a bad link's page": 400}  # fmt: skip
    for name, page in pages.items():
        assert page.headers.get("x-frame-options") == "DENY", name
        assert page.headers.get("content-security-policy") == CONTENT_SECURITY_POLICY, name
        assert page.headers.get("x-content-type-options") == "nosniff", name
        assert page.headers.get("referrer-policy") == "no-referrer", name
        assert "strict-transport-security" not in page.headers, name
        assert "<script" not in page.text and not re.search(r"<[^>]*\son[a-z]+\s*=", page.text), name  # no handlers
        styles = re.findall(r"<style>(.*?)</style>", page.text, re.S)
        assert len(styles) == 1 and "style=" not in page.text, name  # one stylesheet, no inline style attribute
        digest = base64.b64encode(hashlib.sha256(styles[0].encode()).digest()).decode()
        assert f"style-src 'sha256-{digest}'" in CONTENT_SECURITY_POLICY, name  # the browser would apply it
