"""The grants JSON API in process: the exact shapes, every error, and where cookie-authenticated
decisions are refused (route hosts, cross-origin calls)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx2
import pytest

from authz.jit.store import MemoryGrantStore
from authz.runtime.holder import RuntimeHolder
from authz.runtime.state import Runtime

from .conftest import APP, AUTH, ROUTES, Web

pytestmark = pytest.mark.anyio
API = "/.pomerium/api/v1/grants"
JIT_ROUTE = {
    "id": "app", "from": "http://app.localhost", "to": "http://127.0.0.1:9", "allowed_users": ["nobody"],
    "jit": {"approvers": [{"allow": {"or": [{"email": {"ends_with": "@admins.example"}}]}}],
            "max_duration": "2h", "default_duration": "30m", "reason_required": True},
}  # fmt: skip
SAME = {"content-type": "application/json", "sec-fetch-site": "same-origin"}


def with_grants(make_web: Callable[..., Web]) -> Web:
    """The in-process app with a jit route and a grant store."""
    made = make_web(routes=[JIT_ROUTE, *ROUTES[1:]])
    rt = Runtime.build(made.config, made.rt.store, made.rt.oidc, MemoryGrantStore())
    made.rt, made.holder = rt, RuntimeHolder(rt)
    return made


@pytest.fixture
def web(make_web: Callable[..., Web]) -> Web:
    return with_grants(make_web)


def _cookie(web: Web, host: str, user: str, email: str) -> dict[str, str]:
    name = web.rt.cookies.authenticate if host == web.config.authenticate_host else "_pomerium"
    return {"cookie": f"{name}={web.seed(host, user=user, email=email)}"}


def bob(web: Web, host: str = "app.localhost") -> dict[str, str]:
    return _cookie(web, host, "bob", "bob@example.com")


def alice(web: Web, host: str = "authenticate.localhost") -> dict[str, str]:
    return _cookie(web, host, "alice", "alice@admins.example")


async def _ask(client: httpx2.AsyncClient, web: Web, **body: Any) -> httpx2.Response:
    payload = {"route": "app", "duration": "45m", "reason": "incident 7", **body}
    return await client.post(f"{APP}{API}", json=payload, headers={**bob(web), **SAME})


async def test_the_whole_workflow_in_the_pinned_shapes(web: Web) -> None:
    async with web.client() as client:
        made = await _ask(client, web)
        assert made.status_code == 201 and made.headers["content-type"] == "application/json"
        grant = made.json()
        assert set(grant) == {"id", "route", "user", "email", "status", "reason", "created_at", "duration"}
        assert (grant["route"], grant["user"], grant["email"], grant["status"]) == (
            "app",
            "bob",
            "bob@example.com",
            "pending",
        )
        assert (grant["reason"], grant["created_at"], grant["duration"]) == (
            "incident 7",
            "2027-01-15T08:00:00Z",
            "45m",
        )
        gid = grant["id"]
        mine = await client.get(f"{APP}{API}", headers=bob(web))
        assert mine.status_code == 200 and [g["id"] for g in mine.json()["grants"]] == [gid]
        pending = await client.get(f"{AUTH}{API}?status=pending", headers=alice(web))
        assert [g["id"] for g in pending.json()["grants"]] == [gid]
        web.clock.now += 5
        approved = await client.post(
            f"{AUTH}{API}/{gid}/approve", json={"duration": "1h"}, headers={**alice(web), **SAME}
        )
        assert approved.status_code == 200
        body = approved.json()
        assert body["status"] == "active" and body["expires_at"] == "2027-01-15T09:00:05Z" and body["duration"] == "1h"
        assert body["decided_by"] == "alice"
        shown = await client.get(f"{AUTH}{API}/{gid}", headers=alice(web))
        assert [h["event"] for h in shown.json()["history"]] == ["requested", "approved"]
        assert shown.json()["history"][1] == {
            "grant": gid, "route": "app", "event": "approved", "actor": "alice", "at": "2027-01-15T08:00:05Z",
            "detail": {"duration": "1h", "expires_at": "2027-01-15T09:00:05Z"},
        }  # fmt: skip
        active = await client.get(f"{AUTH}{API}?status=active", headers=alice(web))
        assert [g["id"] for g in active.json()["grants"]] == [gid]
        revoked = await client.request("DELETE", f"{AUTH}{API}/{gid}", headers={**alice(web), **SAME})
        assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"


async def test_reject(web: Web) -> None:
    async with web.client() as client:
        gid = (await _ask(client, web)).json()["id"]
        out = await client.post(f"{AUTH}{API}/{gid}/reject", headers={**alice(web), **SAME})
        assert out.status_code == 200 and out.json()["status"] == "rejected"
        again = await client.post(f"{AUTH}{API}/{gid}/reject", headers={**alice(web), **SAME})
        assert again.status_code == 409 and "only a pending request" in again.json()["error"]


async def test_every_error(web: Web) -> None:
    async with web.client() as client:
        # 401: no session at all, or one that does not open.
        assert (await client.get(f"{APP}{API}")).status_code == 401
        nobody = await client.get(f"{AUTH}{API}", headers={"authorization": "Pomerium not-a-token"})
        assert nobody.status_code == 401 and "sign in first" in nobody.json()["error"]
        # 415: a state change without a JSON body type (an HTML form's, or none).
        form = await client.post(
            f"{APP}{API}", data={"route": "app"}, headers={**bob(web), "sec-fetch-site": "same-origin"}
        )
        assert form.status_code == 415 and form.json() == {"error": "send the body as Content-Type: application/json"}
        plain = await client.request("DELETE", f"{AUTH}{API}/x", headers=alice(web))
        assert plain.status_code == 415
        # 400: the body, the duration, the reason, the status filter.
        for payload, message in (
            (b"{nope", "not valid JSON"),
            (b"[1]", "must be a JSON object"),
        ):
            bad = await client.post(f"{APP}{API}", content=payload, headers={**bob(web), **SAME})
            assert bad.status_code == 400 and message in bad.json()["error"]
        assert "longer than this route allows" in (await _ask(client, web, duration="3h")).json()["error"]
        assert (await _ask(client, web, duration="3h")).status_code == 400
        assert (await _ask(client, web, reason="")).json() == {"error": "this route requires a reason"}
        assert (await _ask(client, web, duration=5)).status_code == 400
        assert (await client.get(f"{APP}{API}?status=approved", headers=bob(web))).status_code == 400
        # 404: unknown route, a route without jit, unknown grant.
        assert (await _ask(client, web, route="nope")).status_code == 404
        assert (await _ask(client, web, route="other")).status_code == 404
        assert (await client.post(f"{AUTH}{API}/nope/approve", headers={**alice(web), **SAME})).status_code == 404
        assert (await client.get(f"{AUTH}{API}/nope", headers=alice(web))).status_code == 404
        # 409: one pending request per route; revoking a pending one; approving twice.
        gid = (await _ask(client, web)).json()["id"]
        assert (await _ask(client, web)).status_code == 409
        assert (await client.request("DELETE", f"{AUTH}{API}/{gid}", headers={**alice(web), **SAME})).status_code == 409
        # 403: not an approver; one's own request (an approver asking too).
        eve = _cookie(web, "authenticate.localhost", "eve", "eve@example.com")
        refused = await client.post(f"{AUTH}{API}/{gid}/approve", headers={**eve, **SAME})
        assert refused.status_code == 403 and refused.json() == {"error": "you are not an approver of this route"}
        root_here = _cookie(web, "app.localhost", "root", "root@admins.example")
        admin = await client.post(
            f"{APP}{API}", json={"route": "app", "reason": "me too"}, headers={**root_here, **SAME}
        )
        root_there = _cookie(web, "authenticate.localhost", "root", "root@admins.example")
        own = await client.post(f"{AUTH}{API}/{admin.json()['id']}/approve", headers={**root_there, **SAME})
        assert own.status_code == 403 and "own request" in own.json()["error"]
        assert (await client.post(f"{AUTH}{API}/{gid}/approve", headers={**alice(web), **SAME})).status_code == 200
        assert (await client.post(f"{AUTH}{API}/{gid}/approve", headers={**alice(web), **SAME})).status_code == 409
        # Someone else's grant is not shown at all.
        assert (await client.get(f"{APP}{API}/{admin.json()['id']}", headers=bob(web))).status_code == 404


async def test_cookie_decisions_only_on_the_authenticate_host_and_same_origin(web: Web) -> None:
    async with web.client() as client:
        gid = (await _ask(client, web)).json()["id"]
        # A script on the route host runs with the approver's route-host cookie: refused there.
        on_app = await client.post(f"{APP}{API}/{gid}/approve", headers={**alice(web, "app.localhost"), **SAME})
        assert on_app.status_code == 403 and "authenticate.localhost:8080/.pomerium/jit" in on_app.json()["error"]
        for verb, path in (("POST", f"{API}/{gid}/reject"), ("DELETE", f"{API}/{gid}")):
            out = await client.request(verb, f"{APP}{path}", headers={**alice(web, "app.localhost"), **SAME})
            assert out.status_code == 403
        # The same cookie call to the authenticate host from another origin (a cross-origin fetch).
        for marks in ({"sec-fetch-site": "same-site"}, {"origin": "http://app.localhost:8080"}, {}):
            headers = {**alice(web), "content-type": "application/json", **marks}
            crossed = await client.post(f"{AUTH}{API}/{gid}/approve", headers=headers)
            assert crossed.status_code == 403 and crossed.json() == {"error": "cross-origin request refused"}
        by_origin = {**alice(web), "content-type": "application/json", "origin": "http://authenticate.localhost:8080"}
        assert (await client.get(f"{AUTH}{API}/{gid}", headers=alice(web))).json()["status"] == "pending"
        assert (await client.post(f"{AUTH}{API}/{gid}/approve", headers=by_origin)).status_code == 200


async def test_a_bearer_token_works_on_any_host(web: Web) -> None:
    async with web.client() as client:
        gid = (await _ask(client, web)).json()["id"]
        cookie = web.seed("app.localhost", user="alice", email="alice@admins.example")
        handle = web.rt.codec.open(cookie, "app.localhost", web.clock())
        token = web.rt.api_codec.seal(handle)  # what a programmatic login hands out
        # A route cookie's value is no bearer token here: a script that can read it (cookie_http_only
        # off, or a host under cookie_domain that is not authz's) must not approve with it.
        stolen = {"authorization": f"Pomerium {cookie}", "content-type": "application/json"}
        refused = await client.post(f"{APP}{API}/{gid}/approve", json={}, headers=stolen)
        assert refused.status_code == 401
        assert (await client.post(f"{AUTH}{API}/{gid}/approve", json={}, headers=stolen)).status_code == 401
        bearer = {"authorization": f"Pomerium {token}", "content-type": "application/json"}
        out = await client.post(f"{APP}{API}/{gid}/approve", json={"duration": "10m"}, headers=bearer)
        assert out.status_code == 200 and out.json()["status"] == "active"
        listed = await client.get(f"{AUTH}{API}", headers={"authorization": f"Pomerium {token}"})
        assert [g["id"] for g in listed.json()["grants"]] == [gid]


async def test_a_route_host_cookie_acts_for_its_user_alone(web: Web) -> None:
    """A script in the app behind a route host rides on the approver's cookie there: it must not
    read the approver's queue, nor file requests for another host's routes."""
    async with web.client() as client:
        gid = (await _ask(client, web)).json()["id"]  # bob's request
        on_route = await client.get(f"{APP}{API}", headers=alice(web, "app.localhost"))
        assert on_route.status_code == 200 and on_route.json() == {"grants": []}
        assert (await client.get(f"{APP}{API}/{gid}", headers=alice(web, "app.localhost"))).status_code == 404
        on_auth = await client.get(f"{AUTH}{API}", headers=alice(web))
        assert [g["id"] for g in on_auth.json()["grants"]] == [gid]
        elsewhere = await client.post(
            "http://other.localhost:8080" + API, json={"route": "app", "reason": "x"},
            headers={**_cookie(web, "other.localhost", "carol", "carol@example.com"), **SAME},
        )  # fmt: skip
        assert elsewhere.status_code == 404 and "on this host" in elsewhere.json()["error"]
