"""The just-in-time pages in process: the 403 page's request form, and the authenticate host's page
where approvers decide, with CSRF tokens bound to the session."""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import urlsplit

import httpx2
import pytest

from authz.signing import signed_url

from .conftest import APP, AUTH, Web, path_of, set_cookie
from .test_grants_api import alice, bob, with_grants

pytestmark = pytest.mark.anyio
AUTH_HOST = "authenticate.localhost"
_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def web(make_web: Callable[..., Web]) -> Web:
    return with_grants(make_web)


def _token(page: httpx2.Response) -> str:
    return _TOKEN.findall(page.text)[0]


async def test_request_from_the_403_form_then_decide_on_the_page(web: Web) -> None:
    from authz.check.answer import JIT_REQUEST
    from authz.web.csrf import form_token

    cookie = bob(web)
    sid = web.rt.codec.open(cookie["cookie"].partition("=")[2], "app.localhost", web.clock()).session_id
    token = form_token(web.rt.form_key, JIT_REQUEST, "app.localhost", sid)
    async with web.client() as client:
        form = {"csrf_token": token, "route": "app", "reason": "incident 7", "duration": "20m"}
        sent = await client.post(f"{APP}/.pomerium/jit/request", data=form, headers=cookie)
        assert sent.status_code == 200 and "is waiting for an approver" in sent.text and "20m" in sent.text
        assert f"{AUTH}/.pomerium/jit" in sent.text
        # A forged form (no token, another session's token) sends nothing.
        forged = await client.post(f"{APP}/.pomerium/jit/request", data={**form, "csrf_token": "x"}, headers=cookie)
        assert forged.status_code == 403
        other = await client.post(f"{APP}/.pomerium/jit/request", data=form, headers=bob(web))
        assert other.status_code == 403
        assert (await client.post(f"{APP}/.pomerium/jit/request", data=form)).status_code == 401
        again = await client.post(f"{APP}/.pomerium/jit/request", data=form, headers=cookie)
        assert again.status_code == 409 and "already have a pending request" in again.text
        # The approver's page on the authenticate host.
        approver = alice(web)  # one session: the page's token is bound to it
        page = await client.get(f"{AUTH}/.pomerium/jit", headers=approver)
        assert page.status_code == 200 and "Waiting for approval" in page.text and "incident 7" in page.text
        decision = {"csrf_token": _token(page), "grant": re.findall(r'name="grant" value="([^"]+)"', page.text)[0]}
        done = await client.post(f"{AUTH}/.pomerium/jit", data={**decision, "action": "approve", "duration": "10m"},
                                 headers=approver)  # fmt: skip
        assert done.status_code == 303 and done.headers["location"] == f"{AUTH}/.pomerium/jit?done=approve"
        shown = await client.get(f"{AUTH}/.pomerium/jit?done=approve", headers=approver)
        assert "Approved." in shown.text and "Active grants" in shown.text and "Revoke" in shown.text
        assert "approved <code>app</code>" in shown.text  # the audit trail
        # Replayed: the same form again finds nothing pending.
        replay = await client.post(f"{AUTH}/.pomerium/jit", data={**decision, "action": "approve"}, headers=approver)
        assert replay.status_code == 409
        # Forged: another session's token, or a cross-origin POST with the right one.
        forged_decision = await client.post(f"{AUTH}/.pomerium/jit", data={**decision, "action": "revoke"},
                                            headers=alice(web))  # fmt: skip
        assert forged_decision.status_code == 403
        crossed = await client.post(f"{AUTH}/.pomerium/jit", data={**decision, "action": "revoke"},
                                    headers={**approver, "origin": "http://app.localhost:8080"})  # fmt: skip
        assert crossed.status_code == 403
        revoked = await client.post(f"{AUTH}/.pomerium/jit", data={**decision, "action": "revoke"}, headers=approver)
        assert revoked.status_code == 303


async def test_a_requester_sees_only_their_own(web: Web) -> None:
    async with web.client() as client:
        page = await client.get(f"{AUTH}/.pomerium/jit", headers=bob(web, "authenticate.localhost"))
    assert page.status_code == 200 and "Your requests" in page.text and "Waiting for approval" not in page.text


async def test_without_a_session_the_page_signs_in_and_comes_back(web: Web) -> None:
    async with web.client() as client:
        first = await client.get(f"{AUTH}/.pomerium/jit")
        assert first.status_code == 302
        link = first.headers["location"]
        verified = signed_url.verify(web.rt.url_key, web.rt.sign_in_endpoint, urlsplit(link).query, web.clock())
        assert verified.target == f"{AUTH}/.pomerium/jit"
        to_idp = await client.get(path_of(link))
        assert to_idp.status_code == 302
        csrf = [line.partition(";")[0] for line in to_idp.headers.get_list("set-cookie")]
        back = await client.get(f"/oauth2/callback?{web.idp.authorize(to_idp.headers['location'], 'alice')}",
                                headers={"cookie": "; ".join(csrf)})  # fmt: skip
        assert back.status_code == 302 and back.headers["location"] == f"{AUTH}/.pomerium/jit"
        own = set_cookie(back, web.rt.cookies.authenticate)
        assert own
        page = await client.get(f"{AUTH}/.pomerium/jit", headers={"cookie": f"{web.rt.cookies.authenticate}={own}"})
        assert page.status_code == 200 and "Signed in as" in page.text
        # Signed in already: the sign-in link comes straight back.
        again = await client.get(path_of(link), headers={"cookie": f"{web.rt.cookies.authenticate}={own}"})
        assert again.status_code == 302 and again.headers["location"] == f"{AUTH}/.pomerium/jit"
        # Only that exact page: any other authenticate-host URL is not a sign-in target.
        other = signed_url.sign(web.rt.url_key, web.rt.sign_in_endpoint, f"{AUTH}/.pomerium/jit?x=1", web.clock())
        assert (await client.get(path_of(other))).status_code == 400


async def test_an_approver_sees_their_own_request_without_buttons(web: Web) -> None:
    from .test_grants_api import SAME, _cookie

    async with web.client() as client:
        made = await client.post(
            f"{APP}/.pomerium/api/v1/grants", json={"route": "app", "reason": "mine"},
            headers={**_cookie(web, "app.localhost", "root", "root@admins.example"), **SAME},
        )  # fmt: skip
        assert made.status_code == 201
        page = await client.get(f"{AUTH}/.pomerium/jit", headers=_cookie(web, AUTH_HOST, "root", "root@admins.example"))
    assert page.status_code == 200, page.text
    assert "Your own request: another approver decides." in page.text and 'value="approve"' not in page.text
    assert "<td><code>app</code></td><td>pending</td><td>30m</td><td></td>" in page.text  # "Your requests"


async def test_fetch_metadata_decides_and_origin_null_proves_nothing(web: Web) -> None:
    """A browser posts the page's own form with `Origin: null` (the pages' no-referrer policy) and
    `Sec-Fetch-Site: same-origin`; a same-site page's post says `same-site` and is refused."""
    from .test_grants_api import SAME, _cookie

    async with web.client() as client:
        made = await client.post(f"{APP}/.pomerium/api/v1/grants", json={"route": "app", "reason": "r"},
                                 headers={**bob(web), **SAME})  # fmt: skip
        approver = _cookie(web, AUTH_HOST, "alice", "alice@admins.example")
        page = await client.get(f"{AUTH}/.pomerium/jit", headers=approver)
        form = {"csrf_token": _token(page), "grant": made.json()["id"], "action": "approve"}
        for marks in ({"sec-fetch-site": "same-site", "origin": "null"}, {"sec-fetch-site": "cross-site"}):
            refused = await client.post(f"{AUTH}/.pomerium/jit", data=form, headers={**approver, **marks})
            assert refused.status_code == 403
        ok = await client.post(f"{AUTH}/.pomerium/jit", data=form,
                               headers={**approver, "origin": "null", "sec-fetch-site": "same-origin"})  # fmt: skip
        assert ok.status_code == 303
