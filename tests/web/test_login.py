"""Sign-in in process: the signed link, the IdP callback's refusals, the handoff, programmatic login."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx2
import pytest

from authz.sessions import stores
from authz.sessions.payloads import Handoff
from authz.sessions.stores import MemoryStore
from authz.signing import signed_url
from authz.web.login import HANDOFF_LIFETIME, STATE_MAX_AGE, auth_cookie

from .conftest import APP, AUTH, ISSUER, Web, path_of, set_cookie

pytestmark = pytest.mark.anyio
HTML = {"accept": "text/html"}


async def _to_idp(web: Web, client: httpx2.AsyncClient, target: str = f"{APP}/dash?x=1") -> tuple[str, str, str]:
    """Follow a signed sign-in link to the IdP: (authorization URL, CSRF cookie name, its value)."""
    response = await client.get(web.sign_in_link(target))
    assert response.status_code == 302, response.text
    (line,) = response.headers.get_list("set-cookie")
    name, _, rest = line.partition("=")
    return response.headers["location"], name, rest.partition(";")[0]


async def _callback(
    web: Web, client: httpx2.AsyncClient, query: str, cookie: str | None, **headers: str
) -> httpx2.Response:
    sent = {"cookie": cookie} if cookie else {}
    return await client.get(f"/oauth2/callback?{query}", headers={**sent, **headers})


async def test_a_signed_link_goes_to_the_idp_with_state_nonce_and_pkce(web: Web) -> None:
    async with web.client() as client:
        location, name, _ = await _to_idp(web, client)
        response = await client.get(web.sign_in_link())
    url = urlsplit(location)
    query = parse_qs(url.query)
    assert f"{url.scheme}://{url.netloc}{url.path}" == f"{ISSUER}/auth"
    assert query["code_challenge_method"] == ["S256"] and len(query["code_challenge"][0]) == 43
    assert query["state"][0] and query["nonce"][0] and query["response_mode"] == ["query"]
    assert query["redirect_uri"] == [f"{AUTH}/oauth2/callback"]
    assert name.startswith("_pomerium_csrf_")
    (line,) = response.headers.get_list("set-cookie")
    assert line.endswith("Path=/; Max-Age=600; HttpOnly; SameSite=Lax")
    assert response.headers["cache-control"] == "no-store"


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example.com/",
        "http://evil.example.com/",
        "//evil.example.com/",
        "http://app.localhost@evil.example.com/",
        "http://evil.example.com\\@app.localhost/",
        "http://app.localhost/\r\nSet-Cookie: x=1",
        "javascript:alert(document.cookie)",
        "http://unknown.localhost/",
        "http://authenticate.localhost/",
        "https://app.localhost/",
        "/relative/path",
    ],
)
async def test_off_site_targets_are_400(web: Web, target: str) -> None:
    async with web.client() as client:
        response = await client.get(path_of(web.sign_in_link(target)))
    assert response.status_code == 400 and "location" not in response.headers


async def test_unsigned_altered_and_expired_links_are_400(web: Web) -> None:
    good = web.sign_in_link(f"{APP}/")
    altered = good.replace("app.localhost", "other.localhost")
    unsigned = f"/.pomerium/sign_in?{urlencode({'pomerium_redirect_uri': f'{APP}/'})}"
    async with web.client() as client:
        assert (await client.get(path_of(good))).status_code == 302
        assert (await client.get(path_of(altered))).status_code == 400
        assert (await client.get(unsigned)).status_code == 400
        web.clock.now += signed_url.LIFETIME + signed_url.LEEWAY + 1
        expired = await client.get(path_of(good), headers={"accept": "application/json"})
    assert expired.status_code == 400 and expired.json()["detail"] == "the link has expired"


async def test_sign_in_end_to_end_through_the_handoff(web: Web) -> None:
    async with web.client() as client:
        location, name, csrf = await _to_idp(web, client)
        web.clock.now += 20  # the user types a password
        back = await _callback(web, client, web.idp.authorize(location), f"{name}={csrf}")
        assert back.status_code == 302, back.text
        own = set_cookie(back, "_pomerium_authenticate")
        assert own and set_cookie(back, name) == ""  # the CSRF cookie is cleared after use
        handoff = back.headers["location"]
        assert handoff.startswith(f"{APP}/.pomerium/callback/?pomerium_handoff=")
        bound = web.bindings[-1]
        landed = await client.get(handoff, headers={"cookie": bound})
        assert landed.status_code == 302 and landed.headers["location"] == f"{APP}/dash?x=1"
        cookie = set_cookie(landed, "_pomerium")
        line, used = landed.headers.get_list("set-cookie")
        assert line.endswith("Path=/; Max-Age=50400; HttpOnly; SameSite=Lax")
        assert used.startswith(bound.partition("=")[0] + "=; Path=/; Max-Age=0")  # the binding is spent
        user = await client.get(f"{APP}/.pomerium/user", headers={"cookie": f"_pomerium={cookie}"})
        # A second host signs in from the authenticate host's session, without the IdP.
        hits = dict(web.idp.hits)
        second = await client.get(
            web.sign_in_link("http://other.localhost:8080/"), headers={"cookie": f"_pomerium_authenticate={own}"}
        )
    assert user.status_code == 200
    claims = user.json()
    assert (claims["sub"], claims["email"], claims["name"], claims["groups"]) == (
        "alice",
        "alice@example.com",
        "Alice",
        ["eng"],
    )
    assert second.status_code == 302 and second.headers["location"].startswith(
        "http://other.localhost:8080/.pomerium/callback/?"
    )
    assert web.idp.hits == hits


async def test_callback_refusals(web: Web) -> None:
    async with web.client() as client:
        location, name, csrf = await _to_idp(web, client)
        query = web.idp.authorize(location)
        state = parse_qs(query)["state"][0]
        code = parse_qs(query)["code"][0]
        forged = urlencode({"code": code, "state": state[:-3] + ("AAA" if not state.endswith("AAA") else "BBB")})
        _, other_name, other_csrf = await _to_idp(web, client)  # another sign-in's cookie
        cases = {
            "forged state": (forged, f"{name}={csrf}", "the sign-in state is invalid"),
            "no code": (urlencode({"state": state}), f"{name}={csrf}", "lacks its code or state"),
            "no CSRF cookie": (query, None, "missing or wrong CSRF cookie"),
            "another sign-in's CSRF cookie": (query, f"{other_name}={other_csrf}", "missing or wrong CSRF cookie"),
            "a CSRF cookie under the right name but from another sign-in": (
                query,
                f"{name}={other_csrf}",
                "missing or wrong CSRF cookie",
            ),
        }
        answers = {}
        for case, (q, cookie, _) in cases.items():
            answers[case] = await _callback(web, client, q, cookie, accept="application/json")
        first = await _callback(web, client, query, f"{name}={csrf}")
        replay = await _callback(web, client, query, f"{name}={csrf}", accept="application/json")
    for case, (_, _, detail) in cases.items():
        assert answers[case].status_code == 400, case
        assert detail in answers[case].json()["detail"], case
    assert first.status_code == 302
    assert replay.status_code == 400 and replay.json()["detail"] == "this sign-in link was already used"


async def test_an_old_state_is_refused(web: Web) -> None:
    async with web.client() as client:
        location, name, csrf = await _to_idp(web, client)
        web.clock.now += STATE_MAX_AGE + 1
        late = await _callback(web, client, web.idp.authorize(location), f"{name}={csrf}", accept="application/json")
    assert late.status_code == 400 and "took too long" in late.json()["detail"]


async def test_idp_errors(web: Web) -> None:
    async with web.client() as client:
        denied = await client.get("/oauth2/callback?error=access_denied&error_description=nope", headers=HTML)
        other = await client.get("/oauth2/callback?error=server_error", headers={"accept": "application/json"})
        script = await client.get("/oauth2/callback?error=%3Cscript%3Ex%3C/script%3E", headers=HTML)
    assert denied.status_code == 401 and "access_denied" in denied.text and "idp-access-denied" in denied.text
    assert other.status_code == 400 and other.json()["reasons"] == ["idp-refused"]
    assert script.status_code == 400 and "<script" not in script.text and "&lt;script&gt;" in script.text


async def test_a_token_endpoint_answering_503_is_a_502_page(web: Web) -> None:
    web.idp.token_status = 503
    async with web.client() as client:
        location, name, csrf = await _to_idp(web, client)
        response = await _callback(web, client, web.idp.authorize(location), f"{name}={csrf}", **HTML)
    assert response.status_code == 502, response.text
    assert "identity provider" in response.text and "idp-unavailable" in response.text
    assert "Traceback" not in response.text


async def _handoff_url(web: Web, client: httpx2.AsyncClient) -> str:
    location, name, csrf = await _to_idp(web, client)
    back = await _callback(web, client, web.idp.authorize(location), f"{name}={csrf}")
    assert back.status_code == 302, back.text
    return str(back.headers["location"])


async def test_a_handoff_is_used_once_on_its_own_host_and_expires(web: Web) -> None:
    async with web.client() as client:
        handoff = await _handoff_url(web, client)
        bound = web.bindings[-1]
        json_bound = {"accept": "application/json", "cookie": bound}
        elsewhere = await client.get(handoff.replace(APP, "http://other.localhost:8080"), headers=json_bound)
        unbound = await client.get(handoff, headers={"accept": "application/json"})
        _ = web.sign_in_link()  # another attempt's binding cookie does not redeem this handoff
        wrong = await client.get(handoff, headers={"accept": "application/json", "cookie": web.bindings[-1]})
        first = await client.get(handoff, headers={"cookie": bound})
        replay = await client.get(handoff, headers=json_bound)
        late_url = await _handoff_url(web, client)
        web.clock.now += HANDOFF_LIFETIME + 1
        late = await client.get(late_url, headers={"accept": "application/json", "cookie": web.bindings[-1]})
        junk = await client.get(
            f"{APP}/.pomerium/callback?pomerium_handoff=junk", headers={"accept": "application/json"}
        )
    assert (
        elsewhere.status_code == 400 and elsewhere.json()["detail"] == "the sign-in handoff was issued for another host"
    )
    for refused in (unbound, wrong):
        assert refused.status_code == 400 and "not started in this browser" in refused.json()["detail"]
    assert first.status_code == 302 and set_cookie(first, "_pomerium")
    assert replay.status_code == 400 and replay.json()["detail"] == "this sign-in handoff was already used"
    assert late.status_code == 400 and "expired" in late.json()["detail"]
    assert junk.status_code == 400 and junk.json()["detail"] == "the sign-in handoff is invalid"
    assert "set-cookie" not in replay.headers and "set-cookie" not in elsewhere.headers


async def test_a_handoff_whose_session_was_deleted_is_refused(web: Web) -> None:
    async with web.client() as client:
        handoff = await _handoff_url(web, client)
        token = parse_qs(urlsplit(handoff).query)["pomerium_handoff"][0]
        web.rt.store.delete(Handoff.from_wire(web.rt.handoff.open(token)).session_id)
        response = await client.get(handoff, headers={"accept": "application/json", "cookie": web.bindings[-1]})
    assert response.status_code == 400 and "no longer exists" in response.json()["detail"]


async def test_programmatic_login(web: Web, make_web: Callable[..., Web]) -> None:
    async with web.client() as client:
        login = await client.get(f"{APP}/.pomerium/api/v1/login?pomerium_redirect_uri=http://localhost:9/cb")
        evil = await client.get(f"{APP}/.pomerium/api/v1/login?pomerium_redirect_uri=http://evil.example/")
        missing = await client.get(f"{APP}/.pomerium/api/v1/login")
        assert login.status_code == 200 and login.headers["content-type"] == "text/plain; charset=utf-8"
        query = parse_qs(urlsplit(login.text).query)
        assert query["pomerium_callback_host"] == [f"{APP}/"] and query["pomerium_redirect_uri"] == [
            "http://localhost:9/cb"
        ]
        to_idp = await client.get(path_of(login.text))
        name, _, rest = to_idp.headers["set-cookie"].partition("=")
        back = await _callback(
            web, client, web.idp.authorize(to_idp.headers["location"], "bob"), f"{name}={rest.partition(';')[0]}"
        )
        done = await client.get(back.headers["location"])
    assert evil.status_code == 400 and missing.status_code == 400
    assert back.headers["location"].startswith(f"{APP}/.pomerium/callback/?")
    assert done.status_code == 302 and "set-cookie" not in done.headers
    jwt = parse_qs(urlsplit(done.headers["location"]).query)["pomerium_jwt"][0]
    assert done.headers["location"].startswith("http://localhost:9/cb?pomerium_jwt=")
    assert web.rt.load_session([jwt], "app.localhost", web.clock()) is not None


async def test_an_8kb_return_url_is_kept_server_side_and_lands(web: Web) -> None:
    target = f"{APP}/long?q=" + "a" * 8000
    async with web.client() as client:
        location, name, csrf = await _to_idp(web, client, target)
        state = parse_qs(urlsplit(location).query)["state"][0]
        assert len(state) < 512 and "aaaa" not in state
        back = await _callback(web, client, web.idp.authorize(location), f"{name}={csrf}")
        assert back.status_code == 302 and len(back.headers["location"]) < 1024  # the handoff is small too
        landed = await client.get(back.headers["location"], headers={"cookie": web.bindings[-1]})
    assert landed.status_code == 302 and landed.headers["location"] == target


def _handoff_user(web: Web, response: httpx2.Response) -> str:
    location = response.headers["location"]
    assert response.status_code == 302 and location.startswith(f"{APP}/.pomerium/callback/?"), location
    token = parse_qs(urlsplit(location).query)["pomerium_handoff"][0]
    return Handoff.from_wire(web.rt.handoff.open(token)).user_id


async def test_only_the_authenticate_cookie_of_its_own_pair_is_believed(make_web: Callable[..., Web]) -> None:
    # A sibling site can plant `x=1,__Host-…=<its own session>` (one cookie named `x` to the
    # browser): it must never decide whose session a sign-in hands off.
    web = make_web(cookie_secure=True)
    name = auth_cookie(web.rt)
    assert name.startswith("__Host-")
    attacker = web.seed(web.config.authenticate_host, user="attacker")
    victim = web.seed(web.config.authenticate_host, user="victim")
    async with web.client() as client:
        smuggled = await client.get(
            path_of(web.sign_in_link()),
            headers={"cookie": f"x=1,{name}={attacker}; {name}={victim}; {web.bindings[-1]}"},
        )
        alone = await client.get(path_of(web.sign_in_link()), headers={"cookie": f"x=1,{name}={attacker}"})
    assert _handoff_user(web, smuggled) == "victim"
    assert alone.status_code == 302 and alone.headers["location"].startswith(ISSUER)  # no session: to the IdP


async def test_two_authenticate_cookies_naming_different_users_are_no_session(web: Web) -> None:
    name = auth_cookie(web.rt)
    attacker = web.seed(web.config.authenticate_host, user="attacker")
    victim = web.seed(web.config.authenticate_host, user="victim")
    again = web.seed(web.config.authenticate_host, user="victim")
    async with web.client() as client:
        for pair in ((attacker, victim), (victim, attacker)):
            both = await client.get(
                path_of(web.sign_in_link()), headers={"cookie": f"{name}={pair[0]}; {name}={pair[1]}"}
            )
            assert both.status_code == 302 and both.headers["location"].startswith(ISSUER)
        same = await client.get(path_of(web.sign_in_link()), headers={"cookie": f"{name}={victim}; {name}={again}"})
    assert _handoff_user(web, same) == "victim"


async def test_anonymous_sign_ins_store_nothing_and_long_ones_are_bounded(
    web: Web, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Anyone can get signed sign-in links (every anonymous request to a route gets one): opening
    # them must not fill the store.
    store = web.rt.store
    assert isinstance(store, MemoryStore)
    async with web.client() as client:
        for _ in range(50):
            assert (await client.get(path_of(web.sign_in_link()))).status_code == 302
        assert store._stash == {} and store._once == {}
        monkeypatch.setattr(stores, "MAX_STASHED", 3)
        long_target = f"{APP}/long?q=" + "a" * 4000
        long_ones = [await client.get(path_of(web.sign_in_link(long_target)), headers=HTML) for _ in range(4)]
        short = await client.get(path_of(web.sign_in_link()))
        too_long = await client.get(path_of(web.sign_in_link(long_target * 5)), headers={"accept": "application/json"})
    assert too_long.status_code == 400 and "over 16 KiB" in too_long.json()["detail"]
    assert [r.status_code for r in long_ones] == [302, 302, 302, 503]
    assert "too many sign-ins with very long return URLs" in long_ones[-1].text
    assert short.status_code == 302 and short.headers["location"].startswith(ISSUER)
    assert len(store._stash) == 3


async def test_a_bad_links_page_leads_back_to_its_route_never_elsewhere(web: Web) -> None:
    """On a route host the way back is the route's origin, from config; on the authenticate host
    there is no route to name. Neither comes from the request's query or Referer."""
    html = {"accept": "text/html", "referer": "https://evil.example/"}
    async with web.client() as client:
        on_route = await client.get(
            f"{APP}/.pomerium/callback?pomerium_handoff=junk&next=https://evil.example/", headers=html
        )
        on_auth = await client.get(
            "/.pomerium/sign_in?pomerium_redirect_uri=https%3A%2F%2Fevil.example%2F", headers=html
        )
    assert on_route.status_code == 400 and f'<a href="{APP}/">Sign in</a>' in on_route.text
    assert on_auth.status_code == 400 and "Sign in</a>" not in on_auth.text
    for page in (on_route, on_auth):
        assert "evil" not in page.text
