"""The user page, /.pomerium/user and sign-out, in process."""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import parse_qs, quote, urlencode, urlsplit

import httpx2
import pytest

from authz.sessions.payloads import SignOutLink
from authz.sessions.session import Session, SessionHandle
from authz.signing import signed_url
from authz.web.account import sign_out_token

from .conftest import APP, AUTH, ISSUER, Web, path_of, set_cookie

pytestmark = pytest.mark.anyio
SIGN_OUT = f"{AUTH}/.pomerium/sign_out"
SIGNED_OUT = f"{AUTH}/.pomerium/signed_out"
AUTH_HOST = "authenticate.localhost"
_TOKEN = re.compile(r'<input type="hidden" name="csrf_token" value="([^"]*)">')


def _token(page: httpx2.Response) -> str:
    (token,) = _TOKEN.findall(page.text)
    return token


def _session_id(web: Web, cookie: str, host: str = "app.localhost") -> str:
    codec = web.rt.auth_codec if host == web.config.authenticate_host else web.rt.codec
    return codec.open(cookie, host, web.clock()).session_id


def _alive(web: Web, cookie: str, host: str = "app.localhost") -> bool:
    return web.rt.store.get(_session_id(web, cookie, host), web.clock()) is not None


def _own_cookie(web: Web, route_cookie: str) -> str:
    """The authenticate host's cookie for the session a route cookie names (as one login sets both)."""
    now = int(web.clock())
    handle = SessionHandle(_session_id(web, route_cookie), "u-1", AUTH_HOST, now, now + 3600)
    return web.rt.auth_codec.seal(handle)


async def test_user_page_shows_the_session_escaped(web: Web) -> None:
    cookie = web.seed("app.localhost")
    async with web.client() as client:
        page = await client.get(f"{APP}/.pomerium/", headers={"cookie": f"_pomerium={cookie}"})
        bare = await client.get(f"{APP}/.pomerium", headers={"cookie": f"_pomerium={cookie}"})
    assert page.status_code == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["cache-control"] == "no-store"
    assert "<th>Name</th><td>Dora &lt;Explorer&gt;</td>" in page.text and "<Explorer>" not in page.text
    assert "<td>eng, ops</td>" in page.text and "<td>dora@example.com</td>" in page.text
    assert '<form method="post" action="/.pomerium/sign_out">' in page.text
    assert _token(page) == sign_out_token(web.rt, "app.localhost", _session_id(web, cookie))
    assert "<title>Signed in &middot; authz</title>" in page.text and 'name="viewport"' in page.text
    assert bare.text == page.text


async def test_user_page_without_a_session_signs_in_bound_to_this_browser(web: Web) -> None:
    async with web.client() as client:
        start = await client.get(f"{APP}/.pomerium/")
        assert start.status_code == 302
        location = start.headers["location"]
        assert location.startswith(f"{AUTH}/.pomerium/sign_in?")
        signed = signed_url.verify(web.rt.url_key, web.rt.sign_in_endpoint, urlsplit(location).query, web.clock())
        assert signed.target == f"{APP}/.pomerium/" and signed.extra["pomerium_binding"]
        (binding,) = [line.partition(";")[0] for line in start.headers.get_list("set-cookie")]
        assert binding.startswith("_pomerium_bind_")
        # The whole sign-in: a route-host sign-in without a binding cookie is refused at the handoff.
        to_idp = await client.get(path_of(location))
        csrf = to_idp.headers["set-cookie"].partition(";")[0]
        back = await client.get(
            f"/oauth2/callback?{web.idp.authorize(to_idp.headers['location'])}", headers={"cookie": csrf}
        )
        assert back.status_code == 302, back.text
        landed = await client.get(back.headers["location"], headers={"cookie": binding})
        assert landed.status_code == 302 and landed.headers["location"] == f"{APP}/.pomerium/"
        cookie = set_cookie(landed, "_pomerium")
        page = await client.get(f"{APP}/.pomerium/", headers={"cookie": f"_pomerium={cookie}"})
    assert page.status_code == 200 and "<td>alice@example.com</td>" in page.text


async def test_user_json_by_cookie_or_header(web: Web) -> None:
    token = web.seed("app.localhost")
    async with web.client() as client:
        by_cookie = await client.get(f"{APP}/.pomerium/user", headers={"cookie": f"_pomerium=stale; _pomerium={token}"})
        by_header = await client.get(f"{APP}/.pomerium/user", headers={"authorization": f"Pomerium {token}"})
        anonymous = await client.get(f"{APP}/.pomerium/user")
        other_host = await client.get("http://other.localhost/.pomerium/user", headers={"cookie": f"_pomerium={token}"})
    assert by_cookie.status_code == 200 and by_cookie.json()["email"] == "dora@example.com"
    assert by_cookie.headers["cache-control"] == "no-store"
    assert by_header.json() == by_cookie.json()
    assert anonymous.status_code == 401
    assert anonymous.json() == {"status": 401, "error": "Unauthenticated", "reasons": ["user-unauthenticated"]}
    assert other_host.status_code == 401  # a cookie is only good on the host it names


async def test_a_route_host_get_asks_and_changes_nothing(web: Web) -> None:
    cookie = web.seed("app.localhost")
    sent = {"cookie": f"_pomerium={cookie}", "sec-fetch-site": "cross-site", "referer": "https://evil.example/"}
    async with web.client() as client:
        ask = await client.get(f"{APP}/.pomerium/sign_out", headers=sent)
        head = await client.head(f"{APP}/.pomerium/sign_out", headers=sent)
        nobody = await client.get(f"{APP}/.pomerium/sign_out")
    assert ask.status_code == 200 and ask.headers["cache-control"] == "no-store"
    assert "Sign out of <b>app.localhost</b>?" in ask.text and "<h1>Sign out</h1>" in ask.text
    assert '<form method="post" action="/.pomerium/sign_out">' in ask.text
    assert _token(ask) == sign_out_token(web.rt, "app.localhost", _session_id(web, cookie))
    assert "pomerium_redirect_uri" not in ask.text
    assert head.status_code == 200 and head.content == b""
    assert nobody.status_code == 200 and _token(nobody) == ""  # nothing to bind a token to
    for response in (ask, head, nobody):
        assert "set-cookie" not in response.headers
    assert _alive(web, cookie)


async def test_a_route_host_post_without_the_sessions_token_is_403(web: Web) -> None:
    cookie = web.seed("app.localhost")
    other = web.seed("app.localhost", user="u-2")
    sid = _session_id(web, cookie)
    forged = {
        "missing": {},
        "empty": {"csrf_token": ""},
        "made up": {"csrf_token": "A" * 43},
        "another session's": {"csrf_token": sign_out_token(web.rt, "app.localhost", _session_id(web, other))},
        "another host's": {"csrf_token": sign_out_token(web.rt, "other.localhost", sid)},
        "repeated": {"csrf_token": [sign_out_token(web.rt, "app.localhost", sid)] * 2},
        "non-ASCII": {"csrf_token": "é" * 43},
    }
    headers = {"cookie": f"_pomerium={cookie}", "origin": "https://evil.example"}
    async with web.client() as client:
        answers = {
            name: await client.post(f"{APP}/.pomerium/sign_out", headers=headers, data=fields)
            for name, fields in forged.items()
        }
        as_json = await client.post(f"{APP}/.pomerium/sign_out", headers={**headers, "accept": "application/json"})
        as_query = await client.post(
            f"{APP}/.pomerium/sign_out?csrf_token={sign_out_token(web.rt, 'app.localhost', sid)}", headers=headers
        )
    for name, response in [*answers.items(), ("json", as_json), ("token in the query", as_query)]:
        assert response.status_code == 403, name
        assert "set-cookie" not in response.headers and "location" not in response.headers, name
    page = answers["missing"]
    assert page.headers["content-type"] == "text/html; charset=utf-8" and "<h1>403 Forbidden</h1>" in page.text
    assert "did not come from this site&#39;s sign-out page, so nothing was changed" in page.text
    assert as_json.json()["status"] == 403 and "nothing was changed" in as_json.json()["detail"]
    assert _alive(web, cookie) and _alive(web, other)


async def test_the_confirmed_post_clears_the_cookie_and_continues_signed(web: Web) -> None:
    token = web.seed("app.localhost")
    sent = {"cookie": f"_pomerium={token}; _pomerium_bind_ab12cd34=x; app=1"}
    async with web.client() as client:
        ask = await client.get(f"{APP}/.pomerium/sign_out", headers=sent)
        response = await client.post(f"{APP}/.pomerium/sign_out", headers=sent, data={"csrf_token": _token(ask)})
    assert response.status_code == 302 and set_cookie(response, "_pomerium") == ""
    lines = response.headers.get_list("set-cookie")
    assert lines == [
        "_pomerium=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax; Expires=Thu, 01 Jan 1970 00:00:00 GMT",
        "_pomerium_bind_ab12cd34=; Path=/; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT",
    ]
    location = response.headers["location"]
    assert location.startswith(SIGN_OUT + "?")
    signed = signed_url.verify(web.rt.url_key, SIGN_OUT, urlsplit(location).query, web.clock())
    assert signed.target == SIGNED_OUT
    link = SignOutLink.from_wire(web.rt.signout.open(signed.extra["pomerium_session"]))
    assert link.session_id == _session_id(web, token)


@pytest.mark.parametrize(
    ("settings", "session_line", "auth_line"),
    [
        (  # __Host-: Secure, Path=/, no Domain
            {"cookie_secure": True},
            "__Host-_pomerium=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax; Secure",
            "__Host-_pomerium_authenticate=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax; Secure",
        ),
        (  # the session cookie spans cookie_domain; the authenticate host's stays host-only
            {"cookie_domain": "localhost"},
            "_pomerium=; Path=/; Max-Age=0; Domain=localhost; HttpOnly; SameSite=Lax",
            "_pomerium_authenticate=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax",
        ),
    ],
)
async def test_sign_out_clears_each_cookie_as_it_was_set(
    make_web: Callable[..., Web], settings: dict[str, object], session_line: str, auth_line: str
) -> None:
    web = make_web(**settings)
    names = web.rt.cookies
    route = web.seed("app.localhost")
    own = _own_cookie(web, route)
    expired = "; Expires=Thu, 01 Jan 1970 00:00:00 GMT"
    async with web.client() as client:
        sent = {"cookie": f"{names.session}={route}"}
        ask = await client.get(f"{APP}/.pomerium/sign_out", headers=sent)
        hop = await client.post(f"{APP}/.pomerium/sign_out", headers=sent, data={"csrf_token": _token(ask)})
        done = await client.get(path_of(hop.headers["location"]), headers={"cookie": f"{names.authenticate}={own}"})
    assert hop.headers.get_list("set-cookie") == [session_line + expired]
    assert done.status_code == 302 and done.headers.get_list("set-cookie") == [auth_line + expired]
    assert web.rt.store.get(_session_id(web, route), web.clock()) is None


async def test_a_route_host_post_without_a_session_clears_only_what_it_was_sent(web: Web) -> None:
    async with web.client() as client:
        stale = await client.post(f"{APP}/.pomerium/sign_out", headers={"cookie": "_pomerium=junk"})
        bare = await client.post(f"{APP}/.pomerium/sign_out")  # e.g. SameSite kept the cookie back
    assert stale.status_code == 302 and set_cookie(stale, "_pomerium") == ""
    assert bare.status_code == 302 and "set-cookie" not in bare.headers
    for response in (stale, bare):
        signed = signed_url.verify(web.rt.url_key, SIGN_OUT, urlsplit(response.headers["location"]).query, web.clock())
        assert "pomerium_session" not in signed.extra  # the link names no session


async def test_the_signed_link_ends_the_session_everywhere_without_a_page(web: Web) -> None:
    token = web.seed("app.localhost")
    own = _own_cookie(web, token)
    async with web.client() as client:
        ask = await client.get(f"{APP}/.pomerium/sign_out", headers={"cookie": f"_pomerium={token}"})
        hop = await client.post(
            f"{APP}/.pomerium/sign_out", headers={"cookie": f"_pomerium={token}"}, data={"csrf_token": _token(ask)}
        )
        done = await client.get(path_of(hop.headers["location"]), headers={"cookie": f"_pomerium_authenticate={own}"})
        after = await client.get(f"{APP}/.pomerium/user", headers={"cookie": f"_pomerium={token}"})
    assert done.status_code == 302 and set_cookie(done, "_pomerium_authenticate") == ""
    end = urlsplit(done.headers["location"])
    assert f"{end.scheme}://{end.netloc}{end.path}" == f"{ISSUER}/end"
    query = parse_qs(end.query)
    assert query["post_logout_redirect_uri"] == [SIGNED_OUT] and query["id_token_hint"] == ["idt"]
    assert sorted(web.idp.revoked) == ["at", "rt"]
    assert after.status_code == 401
    # The IdP hands `state` back to the signed-out page: signed by authz, it names the route to go back to.
    async with web.client() as client:
        landed = await client.get(f"/.pomerium/signed_out?{urlencode({'state': query['state'][0]})}")
    assert landed.status_code == 200 and f'<a href="{APP}/">Sign in again</a>' in landed.text


async def test_the_signed_out_page_offers_only_a_way_back_authz_signed_to_a_route(web: Web) -> None:
    now = web.clock()

    def signed(key: bytes, endpoint: str, target: str) -> str:
        return quote(signed_url.sign(key, endpoint, target, now).partition("?")[2])

    state = signed_url.sign(web.rt.url_key, SIGNED_OUT, f"{APP}/", now).partition("?")[2]
    hostile = [
        f"?state={signed(b'another key', SIGNED_OUT, f'{APP}/')}",
        f"?state={signed(web.rt.url_key, SIGNED_OUT, 'https://evil.example/')}",
        f"?state={signed(web.rt.url_key, SIGN_OUT, f'{APP}/')}",  # signed for another endpoint
        f"?state={quote(state.replace('pomerium_issued=', 'pomerium_issued=1'))}",
        "?pomerium_redirect_uri=https%3A%2F%2Fevil.example%2F",
        "?state=https%3A%2F%2Fevil.example%2F",
        f"?state={quote(state)}&state=x",
    ]
    async with web.client() as client:
        good = await client.get(f"/.pomerium/signed_out?state={quote(state)}")
        refused = [await client.get(f"/.pomerium/signed_out{query}", headers={"referer": "https://evil.example/"})
                   for query in hostile]  # fmt: skip
    assert good.status_code == 200 and "Sign in again" in good.text
    for page in refused:
        assert page.status_code == 200 and "Sign in again" not in page.text and "evil" not in page.text


async def test_a_link_naming_another_session_never_signs_the_browser_out(web: Web) -> None:
    victim = web.seed("authenticate.localhost")
    attacker = web.seed("app.localhost", user="mallory")
    async with web.client() as client:
        # The attacker confirms a sign-out of their own session, and of none, and keeps the links.
        ask = await client.get(f"{APP}/.pomerium/sign_out", headers={"cookie": f"_pomerium={attacker}"})
        named = await client.post(
            f"{APP}/.pomerium/sign_out", headers={"cookie": f"_pomerium={attacker}"}, data={"csrf_token": _token(ask)}
        )
        unnamed = await client.post(f"{APP}/.pomerium/sign_out")
        victim_cookie = {"cookie": f"_pomerium_authenticate={victim}"}
        answers = [await client.get(path_of(r.headers["location"]), headers=victim_cookie) for r in (named, unnamed)]
    for answer in answers:
        assert answer.status_code == 200 and "set-cookie" not in answer.headers
        assert "Sign out of <b>authenticate.localhost</b>?" in answer.text
        assert _token(answer) == sign_out_token(web.rt, "authenticate.localhost", _session_id(web, victim, AUTH_HOST))
    assert _alive(web, victim, AUTH_HOST)
    assert not _alive(web, attacker)  # the session the link names did end


async def test_the_authenticate_host_asks_and_its_post_needs_the_token(web: Web) -> None:
    own = web.seed(AUTH_HOST)
    cookie = {"cookie": f"_pomerium_authenticate={own}"}
    async with web.client() as client:
        ask = await client.get("/.pomerium/sign_out", headers=cookie)
        head = await client.head("/.pomerium/sign_out", headers=cookie)
        forged = await client.post("/.pomerium/sign_out", headers=cookie, data={"csrf_token": "x"})
        missing = await client.post("/.pomerium/sign_out", headers=cookie)
        still = _alive(web, own, AUTH_HOST)
        post = await client.post("/.pomerium/sign_out", headers=cookie, data={"csrf_token": _token(ask)})
        again = await client.get("/.pomerium/sign_out", headers=cookie)
        nobody = await client.post("/.pomerium/sign_out")
    assert ask.status_code == 200 and "Sign out of <b>authenticate.localhost</b>?" in ask.text
    assert _token(ask) == sign_out_token(web.rt, AUTH_HOST, _session_id(web, own, AUTH_HOST))
    assert head.status_code == 200 and head.content == b"" and "set-cookie" not in ask.headers
    assert forged.status_code == 403 and missing.status_code == 403 and still
    assert "set-cookie" not in forged.headers and "set-cookie" not in missing.headers
    assert post.status_code == 302 and post.headers["location"].startswith(f"{ISSUER}/end?")
    assert set_cookie(post, "_pomerium_authenticate") == "" and not _alive(web, own, AUTH_HOST)
    assert again.status_code == 200 and _token(again) == ""  # the session is gone: nothing to protect
    # No session of its own (e.g. another site's form: SameSite=Lax keeps the cookie back): nothing
    # is cleared and the IdP's logout is not visited.
    assert nobody.status_code == 302 and nobody.headers["location"] == SIGNED_OUT
    assert "set-cookie" not in nobody.headers


async def test_a_cross_site_sign_out_changes_nothing(web: Web) -> None:
    own = web.seed(AUTH_HOST)
    route = web.seed("app.localhost")
    cross_site = {"origin": "https://evil.example"}  # the browser sends neither Lax cookie
    async with web.client() as client:
        at_auth = await client.post("/.pomerium/sign_out", headers=cross_site, data={"csrf_token": ""})
        at_route = await client.post(f"{APP}/.pomerium/sign_out", headers=cross_site)
        # The route host's hop is a top-level GET: the authenticate cookie rides along and is asked about;
        # without one, nothing ends and the IdP is not visited.
        hop = path_of(at_route.headers["location"])
        asked = await client.get(hop, headers={"cookie": f"_pomerium_authenticate={own}"})
        bare = await client.get(hop)
    assert at_auth.status_code == 302 and at_auth.headers["location"] == SIGNED_OUT
    assert bare.status_code == 302 and bare.headers["location"].partition("?")[0] == SIGNED_OUT
    assert asked.status_code == 200 and "Sign out of <b>authenticate.localhost</b>?" in asked.text
    for response in (at_auth, at_route, asked, bare):
        assert "set-cookie" not in response.headers
    assert _alive(web, own, AUTH_HOST) and _alive(web, route)
    assert web.idp.revoked == []


async def test_a_return_url_on_a_route_is_carried_through_and_nothing_else(web: Web) -> None:
    token = web.seed("app.localhost")
    own = web.seed(AUTH_HOST)
    back = f"{APP}/bye?a=1&b=<2>"
    cookie = {"cookie": f"_pomerium={token}"}
    async with web.client() as client:
        ask = await client.get(f"{APP}/.pomerium/sign_out", params={"pomerium_redirect_uri": back}, headers=cookie)
        fields = {"csrf_token": _token(ask), "pomerium_redirect_uri": back}
        hop = await client.post(f"{APP}/.pomerium/sign_out", headers=cookie, data=fields)
        own_cookie = {"cookie": f"_pomerium_authenticate={own}"}
        own_ask = await client.get("/.pomerium/sign_out", params={"pomerium_redirect_uri": back}, headers=own_cookie)
        refused = []
        for bad in ("https://evil.example/", "http://app.localhost:8444/", f"{AUTH}/", "//evil.example/"):
            for host in (APP, AUTH):
                url = f"{host}/.pomerium/sign_out"
                refused.append(await client.get(url, params={"pomerium_redirect_uri": bad}))
                refused.append(await client.post(url, headers=cookie, data={**fields, "pomerium_redirect_uri": bad}))
    escaped = "http://app.localhost:8080/bye?a=1&amp;b=&lt;2&gt;"
    assert f'<input type="hidden" name="pomerium_redirect_uri" value="{escaped}">' in ask.text
    assert f'name="pomerium_redirect_uri" value="{escaped}"' in own_ask.text
    signed = signed_url.verify(web.rt.url_key, SIGN_OUT, urlsplit(hop.headers["location"]).query, web.clock())
    assert signed.target == back
    assert len(refused) == 16
    for response in refused:
        assert response.status_code == 400 and "set-cookie" not in response.headers, response.request.url
    assert _alive(web, token)


async def test_a_forged_sign_out_link_is_refused(web: Web) -> None:
    forged = signed_url.sign(web.rt.url_key, SIGN_OUT, SIGNED_OUT, web.clock(), {"pomerium_session": "not-sealed"})
    tampered = signed_url.sign(b"another key", SIGN_OUT, SIGNED_OUT, web.clock())
    elsewhere = signed_url.sign(web.rt.url_key, SIGN_OUT, "https://evil.example/", web.clock())
    async with web.client() as client:
        bad_payload = await client.get(path_of(forged), headers={"accept": "application/json"})
        bad_signature = await client.get(path_of(tampered), headers={"accept": "application/json"})
        bad_target = await client.get(path_of(elsewhere), headers={"accept": "application/json"})
    assert bad_payload.status_code == 400 and bad_payload.json()["detail"] == "the sign-out link is invalid"
    assert bad_signature.status_code == 400 and bad_target.status_code == 400


async def test_signed_out_page(web: Web) -> None:
    async with web.client() as client:
        page = await client.get("/.pomerium/signed_out")
    assert page.status_code == 200 and "You are signed out." in page.text
    assert "<h1>Signed out</h1>" in page.text


async def test_claims_utf8_cannot_carry_still_show_the_user_page(web: Web) -> None:
    now = int(web.clock())
    # JSON lets an IdP send "\ud800" (a lone surrogate) in a name or a group.
    web.rt.store.put(Session("s-odd", "u1", "", "Ann\ud800", ("eng\ud800",), {}, now, now + 3600))
    token = web.rt.codec.seal(SessionHandle("s-odd", "u1", "app.localhost", now, now + 3600))
    async with web.client() as client:
        page = await client.get(f"{APP}/.pomerium/", headers={"cookie": f"_pomerium={token}"})
        claims = await client.get(f"{APP}/.pomerium/user", headers={"cookie": f"_pomerium={token}"})
    assert page.status_code == 200 and "eng?" in page.text and "Ann?" in page.text
    assert claims.status_code == 200 and claims.json()["groups"] == ["eng\ud800"]


async def test_a_way_back_to_a_route_no_longer_configured_does_not_stop_the_sign_out(web: Web) -> None:
    token = web.seed("app.localhost")
    own = _own_cookie(web, token)
    session_id = web.rt.codec.open(token, "app.localhost", web.clock()).session_id
    extra = {"pomerium_session": web.rt.signout.seal(SignOutLink(session_id).to_wire()),
             "pomerium_back": "http://removed.localhost:8080/"}  # fmt: skip
    link = signed_url.sign(web.rt.url_key, SIGN_OUT, SIGNED_OUT, web.clock(), extra)
    async with web.client() as client:
        done = await client.get(path_of(link), headers={"cookie": f"_pomerium_authenticate={own}"})
    assert done.status_code == 302 and "state" not in parse_qs(urlsplit(done.headers["location"]).query)
    assert not _alive(web, token)
