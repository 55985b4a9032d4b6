"""The grant workflow: request, approve, reject, revoke, expire — who may, and what is recorded.

Every entry point (the JSON API, the pages, the operator CLI, the sweeper) goes through these
functions, so the rules hold everywhere: only a route's approvers decide (the CLI is the operator
and is not subject to `approvers`), nobody approves their own request, a duration is never over
the route's `max_duration`, and every change writes its audit record, a log line and (with
`notify_url`) its notification in the same store write as the change itself.
"""

from __future__ import annotations

import json
import logging
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from authz.check.request import RequestContext
from authz.config.model import Config, Route
from authz.errors import GrantConflict, GrantForbidden, GrantInvalid, GrantNotFound
from authz.jit.model import (
    CLI_ACTOR,
    JIT_PAGE,
    SWEEPER_ACTOR,
    Delivery,
    Event,
    Grant,
    Record,
    Status,
    clean_reason,
    format_duration,
    parse_request_duration,
    rfc3339,
)
from authz.jit.store import GrantStore
from authz.policy.ast import PolicyInput
from authz.sessions.session import Session

log = logging.getLogger("authz.jit")


@dataclass(frozen=True, slots=True)
class Actor:
    """Who makes a call: a signed-in user (with the call's request, for `approvers`), or the operator CLI."""

    user: str
    email: str = ""
    session: Session | None = None
    request: RequestContext | None = None
    operator: bool = False  # the CLI: not subject to `approvers`, recorded as `cli`


def new_grant_id() -> str:
    """96 random bits, in hex: an id never starts with `-`, which a command line reads as an option."""
    return secrets.token_hex(12)


def jit_route(config: Config, route_id: str) -> Route:
    """The route with this id that has `jit`; GrantNotFound otherwise."""
    route = config.routes_by_id.get(route_id)
    if route is None or route.jit is None:
        raise GrantNotFound(f"no route {route_id!r} with just-in-time access")
    return route


def approves(actor: Actor, route: Route, now: float) -> bool:
    """Whether `actor` is an approver of `route`: the operator always; a user when the route's
    `approvers` policy allows their session and this call's request."""
    if actor.operator:
        return True
    if route.jit is None or actor.session is None or actor.request is None:
        return False
    inp = PolicyInput(actor.request, actor.session, datetime.fromtimestamp(now, UTC))
    return route.jit.approvers.evaluate(inp).allowed


def approved_routes(config: Config, actor: Actor, now: float) -> list[str]:
    """The ids of the routes `actor` approves."""
    return [r.id for r in config.routes if r.jit is not None and approves(actor, r, now)]


MAX_PENDING = 10  # requests one user may have waiting at once, over all routes


def chat_text(value: str) -> str:
    """A user's words inside a chat message: on one line (a line break could fake a second message)
    and with `&`, `<`, `>` escaped as Slack's mrkdwn wants (else `<!channel>` pings everyone and
    `<https://x|label>` disguises a link)."""
    one_line = " ".join(value.split())
    return one_line.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _notification(config: Config, route: Route, event: Event, grant: Grant, actor: str, now: float) -> Delivery | None:
    if route.jit is None or route.jit.notify_url is None:
        return None
    event_id = str(uuid.uuid4())
    link = f"{config.authenticate_service_url}{JIT_PAGE}"
    who = chat_text(grant.email or grant.user)
    text = {
        Event.REQUESTED: f"{who} asks for access to {route.id} for {format_duration(grant.duration)}"
        + (f': "{chat_text(grant.reason)}"' if grant.reason else ""),
        Event.APPROVED: f"{chat_text(actor)} approved {who}'s access to {route.id} until {rfc3339(grant.expires_at)}",
        Event.REJECTED: f"{chat_text(actor)} rejected {who}'s request for access to {route.id}",
        Event.REVOKED: f"{chat_text(actor)} revoked {who}'s access to {route.id}",
        Event.EXPIRED: f"{who}'s access to {route.id} expired",
    }[event]
    body = {
        "id": event_id,
        "event": str(event),
        "time": rfc3339(now),
        "actor": actor,
        "grant": grant.to_json(now),
        "link": link,
        "text": f"{text} ({link})",  # Slack's incoming webhooks show `text`
    }
    return Delivery(event_id, route.id, json.dumps(body, separators=(",", ":")), 0, now)


def _record(
    config: Config, route: Route, event: Event, grant: Grant, actor: str, now: float
) -> tuple[Record, Delivery | None]:
    detail: dict[str, object] = {}
    if event is Event.REQUESTED:
        detail = {"reason": grant.reason, "duration": format_duration(grant.duration)}
    elif event is Event.APPROVED:
        detail = {"duration": format_duration(grant.duration), "expires_at": rfc3339(grant.expires_at)}
    elif event is Event.EXPIRED:
        detail = {"expires_at": rfc3339(grant.expires_at)}
    return Record(grant.id, route.id, event, actor, int(now), detail), _notification(
        config, route, event, grant, actor, now
    )


def _logged(record: Record, grant: Grant) -> None:
    """The event's log line, once the store has taken it (a refused change logs nothing)."""
    fields = {"event": str(record.event), "grant": grant.id, "route": grant.route, "user": grant.user,
              "actor": record.actor}  # fmt: skip
    log.info("jit %s", record.event, extra={"fields": fields})


def _actor_name(actor: Actor) -> str:
    return CLI_ACTOR if actor.operator else actor.user


def request_access(
    config: Config,
    store: GrantStore,
    actor: Actor,
    route_id: object,
    duration: object,
    reason: object,
    now: float,
    new_id: Callable[[], str] = new_grant_id,
) -> Grant:
    """A new pending grant for `actor` on the route; `duration` None takes the route's default."""
    if not isinstance(route_id, str):
        raise GrantInvalid("route must be a route id (a string)")
    route = jit_route(config, route_id)
    assert route.jit is not None
    try:
        seconds = (
            route.jit.default_duration if duration is None else parse_request_duration(duration, route.jit.max_duration)
        )
        text = "" if reason is None else clean_reason(reason)
    except ValueError as exc:
        raise GrantInvalid(str(exc)) from None
    if route.jit.reason_required and not text:
        raise GrantInvalid("this route requires a reason")
    mine = store.grants(user=actor.user, status=Status.PENDING, now=now)
    if len(mine) >= MAX_PENDING:
        raise GrantConflict(f"you already have {MAX_PENDING} requests waiting; wait for a decision first")
    working = [g for g in store.active(route.id, actor.user) if g.works_at(now)]
    if working:
        until = rfc3339(max(g.expires_at for g in working))
        raise GrantConflict(f"you already have access to this route until {until}")
    grant = Grant(new_id(), route.id, actor.user, actor.email, Status.PENDING, text, seconds, int(now))
    record, delivery = _record(config, route, Event.REQUESTED, grant, actor.user, now)
    if not store.add(grant, record, delivery):
        raise GrantConflict("you already have a pending request for this route")
    _logged(record, grant)
    return grant


def _decidable(config: Config, store: GrantStore, actor: Actor, grant_id: str, now: float) -> tuple[Grant, Route]:
    """A grant `actor` may decide on: it exists on a jit route they approve, and is not their own."""
    # Someone who is not an approver learns only that the id exists (ids are unguessable).
    grant = store.get(grant_id)
    if grant is None:
        raise GrantNotFound("no such grant")
    route = jit_route(config, grant.route)
    if not approves(actor, route, now):
        raise GrantForbidden("you are not an approver of this route")
    if not actor.operator and grant.user == actor.user:
        raise GrantForbidden("you cannot decide on your own request")
    return grant, route


def _changed(store: GrantStore, expected: Status, grant: Grant, record: Record, delivery: Delivery | None) -> Grant:
    if not store.change(expected, grant, record, delivery):
        raise GrantConflict(f"the grant is no longer {expected}")
    _logged(record, grant)
    return grant


def approve(config: Config, store: GrantStore, actor: Actor, grant_id: str, duration: object, now: float) -> Grant:
    """Approve a pending grant for `duration` (default: what was asked, within the route's maximum)."""
    grant, route = _decidable(config, store, actor, grant_id, now)
    assert route.jit is not None
    if grant.status is not Status.PENDING:
        raise GrantConflict(f"only a pending request can be approved; this one is {grant.status_at(now)}")
    try:
        seconds = (
            min(grant.duration, route.jit.max_duration)
            if duration is None
            else parse_request_duration(duration, route.jit.max_duration)
        )
    except ValueError as exc:
        raise GrantInvalid(str(exc)) from None
    name = _actor_name(actor)
    active = replace(
        grant,
        status=Status.ACTIVE,
        duration=seconds,
        decided_by=name,
        decided_at=int(now),
        expires_at=int(now) + seconds,
    )
    return _changed(store, Status.PENDING, active, *_record(config, route, Event.APPROVED, active, name, now))


def reject(config: Config, store: GrantStore, actor: Actor, grant_id: str, now: float) -> Grant:
    """Reject a pending grant."""
    grant, route = _decidable(config, store, actor, grant_id, now)
    if grant.status is not Status.PENDING:
        raise GrantConflict(f"only a pending request can be rejected; this one is {grant.status_at(now)}")
    name = _actor_name(actor)
    rejected = replace(grant, status=Status.REJECTED, decided_by=name, decided_at=int(now))
    return _changed(store, Status.PENDING, rejected, *_record(config, route, Event.REJECTED, rejected, name, now))


def revoke(config: Config, store: GrantStore, actor: Actor, grant_id: str, now: float) -> Grant:
    """End an active grant now: an approver of its route, or its own user giving it up."""
    grant = store.get(grant_id)
    if grant is None:
        raise GrantNotFound("no such grant")
    route = jit_route(config, grant.route)
    if grant.user != actor.user and not approves(actor, route, now):
        raise GrantForbidden("you are not an approver of this route")
    if grant.status_at(now) is not Status.ACTIVE:
        raise GrantConflict(f"only an active grant can be revoked; this one is {grant.status_at(now)}")
    name = _actor_name(actor)
    revoked = replace(grant, status=Status.REVOKED, decided_by=name, decided_at=int(now))
    return _changed(store, Status.ACTIVE, revoked, *_record(config, route, Event.REVOKED, revoked, name, now))


def expire_due(config: Config, store: GrantStore, now: float) -> list[Grant]:
    """Record every active grant whose time is up as expired (the sweeper: access already ended
    at `expires_at`, whatever is recorded)."""
    done = []
    for grant in store.expiring(now):
        route = config.routes_by_id.get(grant.route)
        expired = replace(grant, status=Status.EXPIRED)
        if route is None or route.jit is None:  # the route lost jit: record it all the same, tell no one
            record, delivery = Record(grant.id, grant.route, Event.EXPIRED, SWEEPER_ACTOR, int(now), {}), None
        else:
            record, delivery = _record(config, route, Event.EXPIRED, expired, SWEEPER_ACTOR, now)
        if store.change(Status.ACTIVE, expired, record, delivery):
            _logged(record, expired)
            done.append(expired)
    return done


def visible(config: Config, actor: Actor, grant: Grant, now: float) -> bool:
    """Requesters see their own grants; approvers those of the routes they approve; the operator all."""
    if actor.operator or grant.user == actor.user:
        return True
    route = config.routes_by_id.get(grant.route)
    return route is not None and approves(actor, route, now)


def listing(config: Config, store: GrantStore, actor: Actor, status: str | None, now: float) -> list[Grant]:
    """The grants `actor` may see, newest first, optionally of one status (as of `now`)."""
    wanted: Status | None = None
    if status is not None:
        try:
            wanted = Status(status)
        except ValueError:
            raise GrantInvalid(f"status must be one of {', '.join(s.value for s in Status)}") from None
    if actor.operator:
        return store.grants(status=wanted, now=now)
    routes = approved_routes(config, actor, now)
    found = store.grants(user=actor.user, status=wanted, now=now)
    if routes:
        seen = {g.id for g in found}
        found += [g for g in store.grants(routes=routes, status=wanted, now=now) if g.id not in seen]
        found.sort(key=lambda g: (g.created_at, g.id), reverse=True)
    return found


def one(config: Config, store: GrantStore, actor: Actor, grant_id: str, now: float) -> tuple[Grant, list[Record]]:
    """A grant `actor` may see, with its history; GrantNotFound otherwise (never whose it is)."""
    grant = store.get(grant_id)
    if grant is None or not visible(config, actor, grant, now):
        raise GrantNotFound("no such grant")
    return grant, store.history(grant_id)
