"""Sign-in, sessions and sign-out through a real Envoy against the real oidc-provider."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx2
import pytest
from joserfc import jwt as jose_jwt
from joserfc.jwk import KeySet

from authz.dev.stack import idp_available
from authz.sessions.sealing import derive_key
from authz.signing import signed_url

from .conftest import Stack
from .loopback import browser, forms, idp_login

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(idp_available() is not None, reason=f"local IdP unavailable: {idp_available()}"),
]


@pytest.fixture
def client() -> Iterator[httpx2.Client]:
    with browser() as c:
        yield c


def sign_in(stack: Stack, client: httpx2.Client, host: str = "private.localhost", path: str = "/dash?x=1",
            user: str = "alice") -> httpx2.Response:  # fmt: skip
    page = client.get(stack.url(host, path))
    assert page.status_code == 200 and "/interaction/" in str(page.url), page.text[:300]
    assert "Demo accounts (any password): <b>alice</b>" in page.text  # the dev IdP's form names them
    return idp_login(client, page, user)


def _claims(stack: Stack, token: str) -> dict[str, object]:
    keys = KeySet.import_key_set(stack.get("private.localhost", "/.well-known/pomerium/jwks.json").json())
    return dict(jose_jwt.decode(token, keys, algorithms=["ES256"]).claims)


def _set_cookies(response: httpx2.Response, name: str) -> list[str]:
    out = []
    for step in [*response.history, response]:
        out += [c for c in step.headers.get_list("set-cookie") if c.startswith(f"{name}=")]
    return out


def test_login_lands_on_the_original_url_with_the_idp_identity(stack: Stack, client: httpx2.Client) -> None:
    landed = sign_in(stack, client)
    assert landed.status_code == 200 and str(landed.url) == stack.url("private.localhost", "/dash?x=1")
    seen = stack.upstream.last()
    assert seen.path == "/dash?x=1"
    claims = _claims(stack, seen.one("x-pomerium-jwt-assertion") or "")
    assert claims["sub"] == "alice" and claims["email"] == "alice@example.com"
    assert claims["name"] == "Alice Example" and claims["groups"] == ["engineering", "admins"]
    assert seen.one("x-access-token")  # ${pomerium.access_token} is the IdP's token
    assert seen.one("cookie") is None  # the session cookie never reaches the upstream
    (cookie,) = _set_cookies(landed, "_pomerium")
    attributes = [a.strip() for a in cookie.split(";")[1:]]
    assert attributes == ["Path=/", "Max-Age=50400", "HttpOnly", "SameSite=Lax"]
    steps = [urlsplit(str(r.url)) for r in landed.history]
    assert any(s.path == "/oauth2/callback" and s.hostname == "authenticate.localhost" for s in steps)


def test_idp_request_uses_pkce_nonce_and_query_mode(stack: Stack, client: httpx2.Client) -> None:
    page = client.get(stack.url("private.localhost", "/"))
    (authorize,) = [r for r in page.history if urlsplit(str(r.url)).path == "/auth"]
    query = parse_qs(urlsplit(str(authorize.url)).query)
    assert query["code_challenge_method"] == ["S256"] and len(query["code_challenge"][0]) == 43
    assert query["nonce"][0] and query["state"][0] and query["response_mode"] == ["query"]
    assert set(query["scope"][0].split()) == {"openid", "profile", "email", "offline_access"}
    (csrf,) = [c for r in page.history for c in r.headers.get_list("set-cookie") if c.startswith("_pomerium_csrf_")]
    assert "HttpOnly" in csrf and "Max-Age=600" in csrf


def test_second_host_signs_in_without_the_idp(stack: Stack, client: httpx2.Client) -> None:
    sign_in(stack, client)
    second = client.get(stack.url("second.localhost", "/other"))
    assert second.status_code == 200 and str(second.url) == stack.url("second.localhost", "/other")
    idp_port = urlsplit(stack.config["idp_provider_url"]).port
    assert all(urlsplit(str(r.url)).port != idp_port for r in second.history)
    claims = _claims(stack, stack.upstream.last().one("x-pomerium-jwt-assertion") or "")
    assert claims["email"] == "alice@example.com" and claims["aud"] == "second.localhost"


def test_user_page_and_json(stack: Stack, client: httpx2.Client) -> None:
    sign_in(stack, client)
    user = client.get(stack.url("private.localhost", "/.pomerium/user")).json()
    assert (user["email"], user["name"], user["groups"]) == (
        "alice@example.com",
        "Alice Example",
        ["engineering", "admins"],
    )
    assert not {"iss", "aud", "exp", "iat", "jti"} & set(user)
    page = client.get(stack.url("private.localhost", "/.pomerium/"))
    assert "Alice Example" in page.text and "engineering, admins" in page.text and "Sign out" in page.text
    with stack.client("private.localhost") as anonymous:
        assert anonymous.get("/.pomerium/user").status_code == 401
        assert anonymous.get("/.pomerium/").status_code == 302


def test_sign_out_ends_every_host_and_the_old_cookie_is_dead(stack: Stack, client: httpx2.Client) -> None:
    sign_in(stack, client)
    client.get(stack.url("second.localhost", "/"))
    old = client.cookies.get("_pomerium", domain="private.localhost")
    assert old
    session = stack.session_of(old, "private.localhost")
    ask = client.get(stack.url("private.localhost", "/.pomerium/sign_out"))
    assert ask.status_code == 200 and "Sign out of <b>private.localhost</b>?" in ask.text  # a GET only asks
    assert client.get(stack.url("second.localhost", "/"), follow_redirects=False).status_code == 200
    (confirm,) = forms(ask.text)
    assert confirm["method"] == "post" and confirm["fields"]["csrf_token"]  # type: ignore[index]
    logout = client.post(ask.url.join(str(confirm["action"])), data=confirm["fields"])  # type: ignore[arg-type]
    idp_port = urlsplit(stack.config["idp_provider_url"]).port
    (end,) = [r for r in [*logout.history, logout] if urlsplit(str(r.url)).path == "/session/end"]
    query = parse_qs(urlsplit(str(end.url)).query)
    assert query["post_logout_redirect_uri"] == [stack.url("authenticate.localhost", "/.pomerium/signed_out")]
    assert query["id_token_hint"][0]
    if urlsplit(str(logout.url)).port == idp_port:  # oidc-provider's confirmation form
        (form,) = forms(logout.text)
        logout = client.post(logout.url.join(str(form["action"])), data={**form["fields"], "logout": "yes"})  # type: ignore[dict-item]
    assert logout.status_code == 200
    assert str(logout.url).partition("?")[0] == stack.url("authenticate.localhost", "/.pomerium/signed_out")
    assert f'<a href="{stack.url("private.localhost", "/")}">Sign in again</a>' in logout.text  # the way back
    stack.upstream.clear()
    no_redirects = {"follow_redirects": False}
    for host in ("private.localhost", "second.localhost"):
        assert client.get(stack.url(host, "/"), **no_redirects).status_code == 302  # type: ignore[arg-type]
    replay = stack.get("private.localhost", "/", headers={"cookie": f"_pomerium={old}"})
    assert replay.status_code == 302
    assert stack.upstream.requests == []
    # The refresh token was revoked at the IdP.
    token_endpoint = f"{stack.config['idp_provider_url']}/token"
    refused = client.post(token_endpoint, data={"grant_type": "refresh_token", "refresh_token": session.refresh_token},
                          auth=("authz", stack.config["idp_client_secret"]))  # fmt: skip
    assert refused.status_code == 400, (refused.status_code, refused.text[:300])
    assert "invalid_grant" in refused.text, refused.text[:300]


def _stop_before(client: httpx2.Client, url: str, path: str) -> httpx2.Response:
    """Follow redirects by hand until the next hop would be `path`; return the response holding it."""
    response = client.get(url, follow_redirects=False)
    while response.is_redirect:
        location = response.headers["location"]
        if urlsplit(location).path == path:
            return response
        response = client.get(response.url.join(location), follow_redirects=False)
    raise AssertionError(f"never redirected to {path}")


def _callback_url(stack: Stack, client: httpx2.Client) -> str:
    """Run the login up to the IdP's redirect to /oauth2/callback, without following it."""
    page = client.get(stack.url("private.localhost", "/"))
    (form,) = [f for f in forms(page.text) if "login" in f["fields"]]  # type: ignore[operator]
    fields = {**form["fields"], "login": "alice", "password": "x"}  # type: ignore[dict-item]
    response = client.post(page.url.join(str(form["action"])), data=fields, follow_redirects=False)
    while response.is_redirect:
        location = str(response.url.join(response.headers["location"]))
        if urlsplit(location).path == "/oauth2/callback":
            return location
        response = client.get(location, follow_redirects=False)
    raise AssertionError("the IdP never redirected back")


def test_callback_without_the_csrf_cookie_is_refused(stack: Stack, client: httpx2.Client) -> None:
    callback = _callback_url(stack, client)
    with browser() as other:
        response = other.get(callback)
    assert response.status_code == 400 and "CSRF" in response.text


def test_replayed_state_and_code_are_refused(stack: Stack, client: httpx2.Client) -> None:
    callback = _callback_url(stack, client)
    csrf = [(c.name, c.value, c.domain) for c in client.cookies.jar if c.name.startswith("_pomerium_csrf_")]
    assert client.get(callback).status_code == 200
    assert not any(c.name.startswith("_pomerium_csrf_") for c in client.cookies.jar)  # cleared after use
    for name, value, domain in csrf:  # an attacker replaying the whole request, cookie included
        client.cookies.set(name, value or "", domain=domain)
    replay = client.get(callback)
    assert replay.status_code == 400 and "already used" in replay.text


def test_replayed_code_with_a_fresh_state_is_refused(stack: Stack) -> None:
    with browser() as first:
        callback = _callback_url(stack, first)
        used = parse_qs(urlsplit(callback).query)["code"][0]
        assert first.get(callback).status_code == 200
    with browser() as second:
        fresh = urlsplit(_callback_url(stack, second))
        state = parse_qs(fresh.query)["state"][0]
        replay = second.get(f"{stack.url('authenticate.localhost', '/oauth2/callback')}?"
                            f"{urlencode({'code': used, 'state': state})}")  # fmt: skip
    assert replay.status_code == 400 and "invalid_grant" in replay.text


def test_denied_user_can_switch_accounts(stack: Stack, client: httpx2.Client) -> None:
    page = client.get(stack.url("private.localhost", "/"))
    denied = idp_login(client, page, "mallory")
    assert denied.status_code == 403 and "mallory@evil.test" in denied.text and "/.pomerium/sign_out" in denied.text


def test_forged_state_is_refused(stack: Stack, client: httpx2.Client) -> None:
    callback = urlsplit(_callback_url(stack, client))
    query = parse_qs(callback.query)
    state = query["state"][0]
    forged = state[:-3] + ("AAA" if not state.endswith("AAA") else "BBB")
    params = urlencode({"code": query["code"][0], "state": forged})
    url = f"{stack.url('authenticate.localhost', '/oauth2/callback')}?{params}"
    response = client.get(url)
    assert response.status_code == 400 and "state" in response.text
    assert client.get(stack.url("authenticate.localhost", "/oauth2/callback?code=abc")).status_code == 400


def test_replayed_handoff_is_refused(stack: Stack, client: httpx2.Client) -> None:
    landed = sign_in(stack, client)
    (handoff,) = [str(r.url) for r in landed.history if urlsplit(str(r.url)).path == "/.pomerium/callback/"]
    with browser() as thief:
        response = thief.get(handoff)
    # Another browser lacks the login binding; the same browser's binding was spent on the way.
    assert response.status_code == 400 and "not started in this browser" in response.text
    assert "_pomerium" not in thief.cookies
    again = client.get(handoff)
    assert again.status_code == 400 and "set-cookie" not in again.headers


def test_idp_errors_are_clear_pages(stack: Stack) -> None:
    denied = stack.get("authenticate.localhost", "/oauth2/callback?error=access_denied&error_description=nope")
    assert denied.status_code == 401 and "access_denied" in denied.text
    other = stack.get("authenticate.localhost", "/oauth2/callback?error=server_error")
    assert other.status_code == 400 and "server_error" in other.text
    assert "<script" not in stack.get("authenticate.localhost", "/oauth2/callback?error=<script>x</script>").text


def _signed_sign_in(stack: Stack, target: str, issued: float | None = None) -> str:
    key = derive_key(base64.b64decode(stack.config["shared_secret"]), b"authz/signed-url")
    endpoint = stack.url("authenticate.localhost", "/.pomerium/sign_in")
    return signed_url.sign(key, endpoint, target, time.time() if issued is None else issued)


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example.com/",
        "http://evil.example.com/",
        "//evil.example.com/",
        "http://private.localhost@evil.example.com/",
        "http://private.localhost:1@evil.example.com/",
        "http://evil.example.com\\@private.localhost/",
        "http://evil.example.com%2F@private.localhost/",
        "http://evil.example.com%23.private.localhost/",
        "http://private.localhost/\r\nSet-Cookie: x=1",
        "http://private.localhost\t/",
        "javascript:alert(document.cookie)",
        "data:text/html,hi",
        "http://unknown.localhost/",
        "http://authenticate.localhost/",
        "https://private.localhost/",
        "/relative/path",
    ],
)
def test_off_site_targets_end_on_a_safe_page(stack: Stack, target: str) -> None:
    response = stack.get(
        "authenticate.localhost", urlsplit(_signed_sign_in(stack, target))._replace(scheme="", netloc="").geturl()
    )
    assert response.status_code == 400
    assert "location" not in response.headers


def test_unsigned_altered_and_expired_sign_in_links(stack: Stack) -> None:
    good = urlsplit(_signed_sign_in(stack, stack.url("private.localhost", "/")))
    path = f"/.pomerium/sign_in?{good.query}"
    assert stack.get("authenticate.localhost", path).status_code == 302  # to the IdP
    altered = path.replace("private.localhost", "second.localhost")
    unsigned = f"/.pomerium/sign_in?{urlencode({'pomerium_redirect_uri': stack.url('private.localhost', '/')})}"
    expired = urlsplit(_signed_sign_in(stack, stack.url("private.localhost", "/"), time.time() - 3600)).query
    for bad in (altered, unsigned, f"/.pomerium/sign_in?{expired}"):
        assert stack.get("authenticate.localhost", bad).status_code == 400
    assert stack.get("private.localhost", path).status_code == 404  # sign_in only on the authenticate host
    assert stack.get("authenticate.localhost", "/.pomerium/callback/").status_code == 404


def test_programmatic_login(stack: Stack, client: httpx2.Client) -> None:
    login = stack.get("private.localhost", "/.pomerium/api/v1/login?pomerium_redirect_uri=http://localhost:9/cb")
    assert login.status_code == 200 and login.headers["content-type"].startswith("text/plain")
    assert (
        stack.get(
            "private.localhost", "/.pomerium/api/v1/login?pomerium_redirect_uri=http://evil.example.com/"
        ).status_code
        == 400
    )
    page = client.get(login.text)
    (form,) = [f for f in forms(page.text) if "login" in f["fields"]]  # type: ignore[operator]
    fields = {**form["fields"], "login": "bob", "password": "x"}  # type: ignore[dict-item]
    response = client.post(page.url.join(str(form["action"])), data=fields, follow_redirects=False)
    while response.is_redirect and not response.headers["location"].startswith("http://localhost:9/cb"):
        response = client.get(response.url.join(response.headers["location"]), follow_redirects=False)
    token = parse_qs(urlsplit(response.headers["location"]).query)["pomerium_jwt"][0]
    with stack.client("private.localhost") as api:
        allowed = api.get("/api", headers={"authorization": f"Pomerium {token}", "accept": "application/json"})
    assert allowed.status_code == 200
    assert _claims(stack, stack.upstream.last().one("x-pomerium-jwt-assertion") or "")["email"] == "bob@example.com"
