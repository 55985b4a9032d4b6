"""The grant workflow's rules, in process with an injected clock: who may decide, durations
within bounds, state changes, the audit trail, the notifications and the sweeper."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from authz.check.request import RequestContext
from authz.config import Config
from authz.errors import GrantConflict, GrantForbidden, GrantInvalid, GrantNotFound
from authz.jit import service
from authz.jit.model import Event, Status
from authz.jit.store import MemoryGrantStore
from authz.sessions.session import Session

NOW = 1_800_000_000.0
APPROVERS = [{"allow": {"or": [{"groups": {"has": "admins"}}]}}]


def jit_routes(**jit: Any) -> list[dict[str, Any]]:
    options = {"approvers": APPROVERS, "max_duration": "2h", "default_duration": "30m", **jit}
    return [
        {"id": "app", "from": "http://app.localhost", "to": "http://127.0.0.1:9", "allowed_users": ["carol"],
         "jit": options},
        {"id": "plain", "from": "http://plain.localhost", "to": "http://127.0.0.1:9",
         "allow_any_authenticated_user": True},
    ]  # fmt: skip


def actor(user: str, *groups: str) -> service.Actor:
    session = Session(
        f"s-{user}", user, f"{user}@example.com", user.title(), tuple(groups), {}, int(NOW), int(NOW) + 3600
    )
    request = RequestContext.build(method="POST", host="authenticate.localhost", target="/.pomerium/jit")
    return service.Actor(user, session.email, session, request)


BOB, ALICE, EVE = actor("bob"), actor("alice", "admins"), actor("eve", "eng")
OPERATOR = service.Actor("cli", operator=True)


@pytest.fixture
def config(make_config: Callable[..., Config]) -> Config:
    return make_config(routes=jit_routes(notify_url="https://hooks.example.com/x"))


def _ask(config: Config, store: MemoryGrantStore, who: service.Actor = BOB, **kw: Any) -> Any:
    args = {"route_id": "app", "duration": None, "reason": "incident 7", **kw}
    return service.request_access(config, store, who, args["route_id"], args["duration"], args["reason"], NOW)


def test_request_approve_expire_with_every_step_on_the_record(config: Config) -> None:
    store = MemoryGrantStore()
    grant = _ask(config, store)
    assert (grant.status, grant.duration, grant.user, grant.reason) == (Status.PENDING, 1800, "bob", "incident 7")
    approved = service.approve(config, store, ALICE, grant.id, "10m", NOW + 5)
    assert (approved.status, approved.decided_by, approved.expires_at) == (Status.ACTIVE, "alice", int(NOW) + 5 + 600)
    assert service.expire_due(config, store, NOW + 604) == []
    (expired,) = service.expire_due(config, store, NOW + 605)
    assert expired.status is Status.EXPIRED and store.get(grant.id) == expired
    history = store.history(grant.id)
    assert [(r.event, r.actor) for r in history] == [
        (Event.REQUESTED, "bob"), (Event.APPROVED, "alice"), (Event.EXPIRED, "authz")
    ]  # fmt: skip
    assert history[0].detail == {"reason": "incident 7", "duration": "30m"}
    assert history[1].detail["duration"] == "10m"
    # One notification per event, each with its own id, the grant and a link to the page.
    bodies = [json.loads(d.body) for d in store.due(NOW + 1000)]
    assert [b["event"] for b in bodies] == ["requested", "approved", "expired"]
    assert len({b["id"] for b in bodies}) == 3
    assert bodies[1]["grant"]["status"] == "active" and bodies[1]["actor"] == "alice"
    assert bodies[0]["link"] == "http://authenticate.localhost:8080/.pomerium/jit"
    assert "bob@example.com asks for access to app for 30m" in bodies[0]["text"]


def test_no_notification_without_notify_url(make_config: Callable[..., Config]) -> None:
    config = make_config(routes=jit_routes())
    store = MemoryGrantStore()
    _ask(config, store)
    assert store.due(NOW + 10) == []


def test_who_may_decide(config: Config) -> None:
    store = MemoryGrantStore()
    grant = _ask(config, store)
    for who in (BOB, EVE):  # the requester (not an approver) and another non-approver
        with pytest.raises(GrantForbidden, match="not an approver"):
            service.approve(config, store, who, grant.id, None, NOW)
    admin_bob = actor("bob", "admins")  # an approver may not approve their own request
    with pytest.raises(GrantForbidden, match="own request"):
        service.approve(config, store, admin_bob, grant.id, None, NOW)
    with pytest.raises(GrantForbidden, match="own request"):
        service.reject(config, store, admin_bob, grant.id, NOW)
    with pytest.raises(GrantNotFound):
        service.approve(config, store, ALICE, "no-such-id", None, NOW)
    approved = service.approve(config, store, OPERATOR, grant.id, None, NOW)  # the CLI is the operator
    assert approved.decided_by == "cli" and approved.duration == 1800
    with pytest.raises(GrantConflict, match="only a pending request"):
        service.approve(config, store, ALICE, grant.id, None, NOW)
    with pytest.raises(GrantConflict):
        service.reject(config, store, ALICE, grant.id, NOW)


def test_an_approver_needs_the_call_and_the_session(config: Config) -> None:
    route = config.routes_by_id["app"]
    assert service.approves(ALICE, route, NOW)
    assert not service.approves(service.Actor("alice", session=ALICE.session), route, NOW)  # no request
    assert not service.approves(service.Actor("alice", request=ALICE.request), route, NOW)  # no session
    assert service.approved_routes(config, ALICE, NOW) == ["app"] and service.approved_routes(config, BOB, NOW) == []


def test_durations_and_reasons_are_bounded(make_config: Callable[..., Config]) -> None:
    config = make_config(routes=jit_routes(reason_required=True))
    store = MemoryGrantStore()
    with pytest.raises(GrantInvalid, match="longer than this route allows"):
        _ask(config, store, duration="3h")
    with pytest.raises(GrantInvalid, match="requires a reason"):
        _ask(config, store, reason="  ")
    with pytest.raises(GrantInvalid, match="requires a reason"):
        _ask(config, store, reason=None)
    with pytest.raises(GrantInvalid, match="route must be"):
        _ask(config, store, route_id=7)
    with pytest.raises(GrantNotFound):
        _ask(config, store, route_id="plain")  # a route without jit
    with pytest.raises(GrantNotFound):
        _ask(config, store, route_id="nope")
    grant = _ask(config, store, duration="2h")
    with pytest.raises(GrantConflict, match="already have a pending request"):
        _ask(config, store)
    with pytest.raises(GrantInvalid, match="longer than this route allows"):
        service.approve(config, store, ALICE, grant.id, "121m", NOW)
    assert service.approve(config, store, ALICE, grant.id, "2h", NOW).expires_at == int(NOW) + 7200


def test_revoke(config: Config) -> None:
    store = MemoryGrantStore()
    grant = _ask(config, store)
    with pytest.raises(GrantConflict, match="only an active grant"):
        service.revoke(config, store, ALICE, grant.id, NOW)  # revoking a pending one
    service.approve(config, store, ALICE, grant.id, "1m", NOW)
    with pytest.raises(GrantForbidden):
        service.revoke(config, store, EVE, grant.id, NOW)
    revoked = service.revoke(config, store, ALICE, grant.id, NOW + 10)
    assert revoked.status is Status.REVOKED and revoked.decided_by == "alice"
    with pytest.raises(GrantConflict):
        service.revoke(config, store, ALICE, grant.id, NOW + 11)
    # Its own user may give a grant up; nobody revokes one that has run out.
    again = _ask(config, store)
    service.approve(config, store, ALICE, again.id, "1m", NOW)
    assert service.revoke(config, store, BOB, again.id, NOW + 1).status is Status.REVOKED
    third = _ask(config, store)
    service.approve(config, store, ALICE, third.id, "1m", NOW)
    with pytest.raises(GrantConflict, match="expired"):
        service.revoke(config, store, ALICE, third.id, NOW + 60)


def test_visibility(config: Config) -> None:
    store = MemoryGrantStore()
    mine = _ask(config, store)
    theirs = _ask(config, store, who=EVE)
    assert [g.id for g in service.listing(config, store, BOB, None, NOW)] == [mine.id]
    assert {g.id for g in service.listing(config, store, ALICE, None, NOW)} == {mine.id, theirs.id}
    assert {g.id for g in service.listing(config, store, OPERATOR, "pending", NOW)} == {mine.id, theirs.id}
    assert service.listing(config, store, ALICE, "active", NOW) == []
    with pytest.raises(GrantInvalid, match="status must be one of"):
        service.listing(config, store, ALICE, "approved", NOW)
    with pytest.raises(GrantNotFound):
        service.one(config, store, BOB, theirs.id, NOW)  # never whose it is
    grant, history = service.one(config, store, ALICE, mine.id, NOW)
    assert grant == mine and [r.event for r in history] == [Event.REQUESTED]


def test_expired_is_a_status_before_the_sweeper_records_it(config: Config) -> None:
    store = MemoryGrantStore()
    grant = _ask(config, store)
    service.approve(config, store, ALICE, grant.id, "1m", NOW)
    assert [g.id for g in service.listing(config, store, BOB, "expired", NOW + 60)] == [grant.id]
    assert service.listing(config, store, BOB, "active", NOW + 60) == []
    assert store.get(grant.id).status is Status.ACTIVE  # type: ignore[union-attr]


def test_only_what_the_store_took_is_logged(config: Config, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    caplog.set_level(logging.INFO, logger="authz.jit")
    store = MemoryGrantStore()
    grant = _ask(config, store)
    for _ in range(3):
        with pytest.raises(GrantConflict):
            _ask(config, store)  # refused: a request is already waiting
    service.approve(config, store, ALICE, grant.id, None, NOW)
    with pytest.raises(GrantConflict):
        service.approve(config, store, OPERATOR, grant.id, None, NOW)  # the loser of a race
    lines = [r.getMessage() for r in caplog.records if r.name == "authz.jit"]
    assert lines == ["jit requested", "jit approved"]
    assert [r.event for r in store.history(grant.id)] == [Event.REQUESTED, Event.APPROVED]


def test_open_requests_are_bounded_and_a_working_grant_is_not_asked_again(make_config: Callable[..., Config]) -> None:
    routes = [
        {"id": f"r{n}", "from": f"http://r{n}.localhost", "to": "http://127.0.0.1:9", "allowed_users": ["x"],
         "jit": {"approvers": APPROVERS}}
        for n in range(service.MAX_PENDING + 1)
    ]  # fmt: skip
    config = make_config(routes=routes)
    store = MemoryGrantStore()
    for n in range(service.MAX_PENDING):
        service.request_access(config, store, BOB, f"r{n}", None, None, NOW)
    with pytest.raises(GrantConflict, match="10 requests waiting"):
        service.request_access(config, store, BOB, f"r{service.MAX_PENDING}", None, None, NOW)
    (first,) = [g for g in store.grants(routes=["r0"])]
    service.approve(config, store, ALICE, first.id, "1m", NOW)
    with pytest.raises(GrantConflict, match="already have access to this route until"):
        service.request_access(config, store, BOB, "r0", None, None, NOW + 1)
    assert service.request_access(config, store, BOB, "r0", None, None, NOW + 60).status is Status.PENDING


def test_a_status_listing_is_not_cut_by_newer_grants(config: Config) -> None:
    store = MemoryGrantStore()
    old = _ask(config, store)
    service.approve(config, store, ALICE, old.id, "1h", NOW)
    for n in range(1001):  # a flood of newer requests from other users
        who = service.Actor(f"u{n}", f"u{n}@example.com")
        service.request_access(config, store, who, "app", None, "x", NOW + 1 + n)
    assert [g.id for g in service.listing(config, store, OPERATOR, "active", NOW + 2000)] == [old.id]
    assert len(service.listing(config, store, OPERATOR, None, NOW + 2000)) == 1000  # the cap, newest first


def test_notification_text_is_one_line_and_escaped_for_chat(config: Config) -> None:
    assert service.chat_text("<!channel> hi\n\n*alice approved* <https://evil|x> & co") == (
        "&lt;!channel&gt; hi *alice approved* &lt;https://evil|x&gt; &amp; co"
    )
    store = MemoryGrantStore()
    _ask(config, store, reason="<!here> urgent\nalice approved bob")
    (delivery,) = store.due(NOW + 1)
    text = json.loads(delivery.body)["text"]
    assert "\n" not in text and "<!here>" not in text and "&lt;!here&gt; urgent alice approved bob" in text


def test_a_grant_id_never_reads_as_a_command_line_option() -> None:
    """`authz grants approve <id>`: an id starting with `-` was taken for an option (1 in 64 before)."""
    from authz.jit.service import new_grant_id

    ids = {new_grant_id() for _ in range(2000)}
    assert len(ids) == 2000 and not any(i.startswith("-") for i in ids)
