"""The user page, /.pomerium/user and sign-out, in process."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from authz.signing import signed_url

from .conftest import APP, AUTH, ISSUER, Web, path_of, set_cookie

pytestmark = pytest.mark.anyio


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
    assert "<title>Signed in &middot; authz</title>" in page.text and 'name="viewport"' in page.text
    assert bare.text == page.text


async def test_user_page_without_a_session_signs_in_first(web: Web) -> None:
    async with web.client() as client:
        page = await client.get(f"{APP}/.pomerium/")
    assert page.status_code == 302
    location = page.headers["location"]
    assert location.startswith(f"{AUTH}/.pomerium/sign_in?")
    signed = signed_url.verify(web.rt.url_key, web.rt.sign_in_endpoint, urlsplit(location).query, web.clock())
    assert signed.target == f"{APP}/.pomerium/"


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


async def test_route_sign_out_clears_the_cookie_and_continues_signed(web: Web) -> None:
    token = web.seed("app.localhost")
    async with web.client() as client:
        response = await client.post(f"{APP}/.pomerium/sign_out", headers={"cookie": f"_pomerium={token}"})
    assert response.status_code == 302 and set_cookie(response, "_pomerium") == ""
    location = response.headers["location"]
    endpoint = f"{AUTH}/.pomerium/sign_out"
    assert location.startswith(endpoint + "?")
    signed = signed_url.verify(web.rt.url_key, endpoint, urlsplit(location).query, web.clock())
    assert signed.target == f"{AUTH}/.pomerium/signed_out" and "pomerium_session" in signed.extra


async def test_signed_sign_out_ends_the_session_everywhere(web: Web) -> None:
    token = web.seed("app.localhost")
    own = web.seed("authenticate.localhost")
    async with web.client() as client:
        hop = await client.get(f"{APP}/.pomerium/sign_out", headers={"cookie": f"_pomerium={token}"})
        done = await client.get(path_of(hop.headers["location"]), headers={"cookie": f"_pomerium_authenticate={own}"})
        after = await client.get(f"{APP}/.pomerium/user", headers={"cookie": f"_pomerium={token}"})
        after_own = await client.get("/.pomerium/sign_out", headers={"cookie": f"_pomerium_authenticate={own}"})
    assert done.status_code == 302 and set_cookie(done, "_pomerium_authenticate") == ""
    end = urlsplit(done.headers["location"])
    assert f"{end.scheme}://{end.netloc}{end.path}" == f"{ISSUER}/end"
    query = parse_qs(end.query)
    assert query["post_logout_redirect_uri"] == [f"{AUTH}/.pomerium/signed_out"] and query["id_token_hint"] == ["idt"]
    assert sorted(web.idp.revoked) == ["at", "at", "rt", "rt"]  # both sessions' tokens
    assert after.status_code == 401
    assert after_own.status_code == 302 and after_own.headers["location"] == f"{AUTH}/.pomerium/signed_out"


async def test_bare_get_asks_and_post_signs_out(web: Web) -> None:
    own = web.seed("authenticate.localhost")
    cookie = {"cookie": f"_pomerium_authenticate={own}"}
    async with web.client() as client:
        ask = await client.get("/.pomerium/sign_out", headers=cookie)
        head = await client.head("/.pomerium/sign_out", headers=cookie)
        nobody = await client.get("/.pomerium/sign_out")
        post = await client.post("/.pomerium/sign_out", headers=cookie, data={"ignored": "x"})
        again = await client.get("/.pomerium/sign_out", headers=cookie)
    assert ask.status_code == 200 and '<form method="post">' in ask.text and "Sign out of every site" in ask.text
    assert head.status_code == 200 and head.content == b""
    assert nobody.status_code == 302 and nobody.headers["location"] == f"{AUTH}/.pomerium/signed_out"
    assert post.status_code == 302 and post.headers["location"].startswith(f"{ISSUER}/end?")
    assert again.status_code == 302  # the session is gone: nothing to confirm


async def test_a_forged_sign_out_link_is_refused(web: Web) -> None:
    endpoint = f"{AUTH}/.pomerium/sign_out"
    forged = signed_url.sign(web.rt.url_key, endpoint, f"{AUTH}/.pomerium/signed_out", web.clock(),
                             {"pomerium_session": "not-sealed"})  # fmt: skip
    tampered = signed_url.sign(b"another key", endpoint, f"{AUTH}/.pomerium/signed_out", web.clock())
    async with web.client() as client:
        bad_payload = await client.get(path_of(forged), headers={"accept": "application/json"})
        bad_signature = await client.get(path_of(tampered), headers={"accept": "application/json"})
    assert bad_payload.status_code == 400 and bad_payload.json()["detail"] == "the sign-out link is invalid"
    assert bad_signature.status_code == 400


async def test_signed_out_page(web: Web) -> None:
    async with web.client() as client:
        page = await client.get("/.pomerium/signed_out")
    assert page.status_code == 200 and "You are signed out." in page.text
    assert "<h1>Signed out</h1>" in page.text
