"""The token refresher: what each IdP answer does to a session, and how retries back off (clock pinned)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import httpx2
import pytest

from authz.config import Config
from authz.identity.claims import merge_identity, new_session
from authz.identity.oidc import Tokens
from authz.identity.refresher import FIRST_RETRY, MAX_RETRY, Backoff, Outcome, refresh_loop, refresh_one, refresh_pass
from authz.runtime.holder import RuntimeHolder
from authz.runtime.state import Runtime
from authz.sessions.session import Session
from authz.sessions.stores import MemoryStore, SQLiteStore
from tests.identity.fake_idp import SECRET, START, FakeIdp

NOW = START
OWNER = "worker-1"


@dataclass
class Setup:
    idp: FakeIdp
    rt: Runtime
    session: Session


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


def refreshed_tokens(**extra: Any) -> Callable[[httpx2.Request], httpx2.Response]:
    """A token endpoint that grants a refresh of `rt-N` (and nothing else) with `at-N+1` and `rt-N+1`."""

    def answer(request: httpx2.Request) -> httpx2.Response:
        form = parse_qs(request.content.decode())
        token = form.get("refresh_token", [""])[0]
        if form.get("grant_type") != ["refresh_token"] or not token.startswith("rt-"):
            return httpx2.Response(400, json={"error": "invalid_grant"})
        n = int(token.removeprefix("rt-")) + 1
        body = {"access_token": f"at-{n}", "refresh_token": f"rt-{n}", "token_type": "Bearer", "expires_in": 300,
                **extra}  # fmt: skip
        return httpx2.Response(200, json=body)

    return answer


def refused(error: str, status: int = 400) -> Callable[[httpx2.Request], httpx2.Response]:
    return lambda request: httpx2.Response(status, json={"error": error})


@pytest.fixture
def setup(make_config: Callable[..., Config]) -> Setup:
    """A session signed in 50 minutes ago whose access token expires in 30 s: due for a refresh.

    Its ID token names the group `admins`, its userinfo named `eng`: sign-in united them.
    """
    idp = FakeIdp(now=NOW - 3000)
    signed_in_id_token = idp.id_token(groups=["admins"], email="u@example.com", name="U")
    idp.now = NOW
    rt = Runtime.build(idp.config(make_config), MemoryStore(), oidc=idp.client(make_config))
    claims = {"iss": "x", "sub": "u", "email": "u@example.com", "name": "U", "groups": ["admins"]}
    info = {"sub": "u", "email": "u@example.com", "groups": ["eng"]}
    tokens = Tokens("at-1", signed_in_id_token, "rt-1", int(NOW + 30))
    session = new_session("sid-1", merge_identity(claims, info), tokens, NOW - 3000, 4 * 3600)
    assert session.groups == ("admins", "eng")
    rt.store.put(session)
    idp.token = refreshed_tokens()
    return Setup(idp, rt, session)


async def _refresh(s: Setup, session: Session | None = None, owner: str = OWNER, now: float = NOW) -> str:
    assert s.rt.oidc is not None
    try:
        return str(await refresh_one(s.rt, s.rt.oidc, session or s.session, owner, now))
    finally:
        await s.rt.oidc.close()


def _logged(caplog: pytest.LogCaptureFixture) -> str:
    """Every message and structured field the refresher logged, as one string to search."""
    return "\n".join(f"{r.levelname} {r.getMessage()} {getattr(r, 'fields', {})}" for r in caplog.records)


# -- bug 1: only invalid_grant ends a session ---------------------------------------------------------


def test_invalid_grant_ends_the_session(setup: Setup, caplog: pytest.LogCaptureFixture) -> None:
    setup.idp.token = refused("invalid_grant")
    with caplog.at_level(logging.INFO, "authz.refresh"):
        assert _run(_refresh(setup)) == "ended"
    assert setup.rt.store.get("sid-1", NOW) is None
    assert "rt-1" not in _logged(caplog) and "at-1" not in _logged(caplog)


@pytest.mark.parametrize(
    ("error", "status", "hint"),
    [
        ("invalid_client", 401, "idp_client_secret"),
        ("unauthorized_client", 400, "idp_client_id"),
        ("unsupported_grant_type", 400, "refresh_token grant"),
        ("invalid_scope", 400, "idp_scopes"),
        ("invalid_request", 400, "idp_provider_url"),
        ("something_new", 400, "idp_client_secret"),
    ],
)
def test_an_operator_fault_keeps_the_session_and_is_logged_loudly(
    setup: Setup, caplog: pytest.LogCaptureFixture, error: str, status: int, hint: str
) -> None:
    """A wrong or rotated idp_client_secret must not sign everyone out as their tokens come due."""
    setup.idp.token = refused(error, status)
    with caplog.at_level(logging.INFO, "authz.refresh"):
        assert _run(_refresh(setup)) == "retry"
    assert setup.rt.store.get("sid-1", NOW) == setup.session  # kept, tokens untouched
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and error in errors[0].getMessage() and hint in errors[0].getMessage()
    logged = _logged(caplog)
    assert SECRET not in logged and "rt-1" not in logged and "at-1" not in logged


@pytest.mark.parametrize(
    "answer",
    [
        lambda request: httpx2.Response(503, text="down for maintenance"),
        lambda request: httpx2.Response(500, json={"error": "server_error"}),
        lambda request: (_ for _ in ()).throw(httpx2.ConnectError("refused")),
        lambda request: (_ for _ in ()).throw(httpx2.ReadTimeout("slow")),
    ],
    ids=["503", "500 with error", "unreachable", "timeout"],
)
def test_an_unavailable_idp_keeps_the_session(
    setup: Setup, caplog: pytest.LogCaptureFixture, answer: Callable[[httpx2.Request], httpx2.Response]
) -> None:
    setup.idp.token = answer
    with caplog.at_level(logging.INFO, "authz.refresh"):
        assert _run(_refresh(setup)) == "retry"
    assert setup.rt.store.get("sid-1", NOW) == setup.session
    assert [r.levelname for r in caplog.records] == ["WARNING"]


# -- bug 3: one merge rule at sign-in and at refresh ----------------------------------------------------


@pytest.mark.parametrize(
    ("userinfo_groups", "expected"),
    [
        (None, ("admins",)),  # userinfo says nothing about groups
        ([], ("admins",)),  # userinfo's groups are now empty
        (["eng"], ("admins", "eng")),  # as at sign-in
        (["ops", "eng"], ("admins", "ops", "eng")),  # new groups from userinfo are united, as sign-in would
    ],
)
def test_groups_from_the_stored_id_token_survive_a_refresh(
    setup: Setup, userinfo_groups: list[str] | None, expected: tuple[str, ...]
) -> None:
    info: dict[str, Any] = {"sub": "u", "email": "u@example.com"}
    if userinfo_groups is not None:
        info["groups"] = userinfo_groups
    setup.idp.userinfo = info
    assert _run(_refresh(setup)) == "refreshed"
    after = setup.rt.store.get("sid-1", NOW)
    assert after is not None and after.groups == expected
    assert after.id_token == setup.session.id_token  # the IdP sent no new ID token
    assert after.claims["groups"] == (userinfo_groups if userinfo_groups is not None else ["admins"])


def test_a_new_id_token_from_the_refresh_is_verified_and_its_claims_used(setup: Setup) -> None:
    """OpenID Connect Core §12.2: no nonce, everything else as at sign-in; its groups replace the old ID token's."""
    new_id_token = setup.idp.id_token(groups=["admins", "sre"], name="U2", nonce=None)
    setup.idp.token = refreshed_tokens(id_token=new_id_token)
    setup.idp.userinfo = {"sub": "u", "groups": ["eng"]}
    assert _run(_refresh(setup)) == "refreshed"
    after = setup.rt.store.get("sid-1", NOW)
    assert after is not None
    assert after.id_token == new_id_token and after.groups == ("admins", "sre", "eng") and after.name == "U2"


@pytest.mark.parametrize(
    "claims",
    [{"sub": "mallory"}, {"aud": "another-client"}, {"iss": "https://evil.example.com"}, {"exp": int(NOW) - 3600}],
    ids=["another subject", "another audience", "another issuer", "expired"],
)
def test_a_new_id_token_that_fails_verification_ends_the_session(setup: Setup, claims: dict[str, Any]) -> None:
    setup.idp.token = refreshed_tokens(id_token=setup.idp.id_token(**claims))
    assert _run(_refresh(setup)) == "ended"
    assert setup.rt.store.get("sid-1", NOW) is None


def test_userinfo_naming_another_subject_ends_the_session(setup: Setup) -> None:
    """The sign-in rule (OpenID Connect Core §5.3.2) applies at refresh too."""
    setup.idp.userinfo = {"sub": "mallory", "groups": ["admins"]}
    assert _run(_refresh(setup)) == "ended"
    assert setup.rt.store.get("sid-1", NOW) is None


# -- bug 5: the refresher itself --------------------------------------------------------------------------


def test_refreshed_tokens_are_stored(setup: Setup) -> None:
    setup.idp.userinfo = {"sub": "u", "email": "u@example.com", "groups": ["eng"]}
    assert _run(_refresh(setup)) == "refreshed"
    after = setup.rt.store.get("sid-1", NOW)
    assert after is not None
    assert (after.access_token, after.refresh_token, after.token_expires_at) == ("at-2", "rt-2", int(NOW) + 300)
    assert (after.email, after.groups) == ("u@example.com", ("admins", "eng"))
    assert after.expires_at == setup.session.expires_at  # a refresh renews tokens, not the session
    assert setup.rt.store.due_for_refresh(NOW + 60) == []


def test_a_deleted_session_is_busy(setup: Setup) -> None:
    setup.rt.store.delete("sid-1")
    assert _run(_refresh(setup)) == "busy"
    assert setup.idp.hits.get("/token") is None


def test_a_session_refreshed_meanwhile_by_another_worker_is_busy(setup: Setup) -> None:
    stale = setup.session
    setup.rt.store.put(Session(**{**_fields(stale), "refresh_token": "rt-9"}))
    assert _run(_refresh(setup, stale)) == "busy"
    assert setup.idp.hits.get("/token") is None


def test_a_lease_held_by_another_worker_is_busy(setup: Setup) -> None:
    assert setup.rt.store.try_lease("sid-1", "worker-2", NOW + 30, NOW)
    assert _run(_refresh(setup)) == "busy"
    assert setup.idp.hits.get("/token") is None
    assert setup.rt.store.get("sid-1", NOW) == setup.session


@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_a_session_revoked_while_the_idp_answers_stays_ended(
    setup: Setup, store: str, tmp_path: Any, make_config: Callable[..., Config]
) -> None:
    if store == "sqlite":
        setup.rt.store.close()
        setup.rt = Runtime.build(
            setup.rt.config, SQLiteStore(tmp_path / "s.db", secret=b"k" * 32), oidc=setup.idp.client(make_config)
        )
        setup.rt.store.put(setup.session)
    grant = refreshed_tokens()
    revoked: list[str] = []

    def token(request: httpx2.Request) -> httpx2.Response:
        assert setup.rt.store.delete_user("u") == 1  # `authz sessions revoke --user u`, or a sign-out
        return grant(request)

    def revoke(request: httpx2.Request) -> httpx2.Response:
        revoked.append(parse_qs(request.content.decode())["token"][0])
        return httpx2.Response(200)

    setup.idp.token, setup.idp.revoke = token, revoke
    setup.idp.userinfo = {"sub": "u", "email": "u@example.com", "groups": ["eng"]}
    assert _run(_refresh(setup)) == "ended"
    assert setup.rt.store.get("sid-1", NOW) is None and list(setup.rt.store.sessions()) == []
    assert revoked == ["rt-2", "at-2"]  # what the IdP just issued is revoked too


def _fields(session: Session) -> dict[str, Any]:
    return {name: getattr(session, name) for name in Session.__slots__}


@pytest.mark.parametrize("down", ["/userinfo", "/jwks"])
def test_new_tokens_are_stored_even_when_the_claims_cannot_be_refreshed(setup: Setup, down: str) -> None:
    """The IdP may have spent the old refresh token: dropping the new one would end the session later."""
    setup.idp.token = refreshed_tokens(id_token=setup.idp.id_token(groups=["sre"], nonce=None))
    setup.idp.down.add(down)
    assert _run(_refresh(setup)) == "refreshed"
    after = setup.rt.store.get("sid-1", NOW)
    assert after is not None and (after.access_token, after.refresh_token) == ("at-2", "rt-2")
    # The claims, and the ID token they came from, stay as they were until the next refresh.
    assert (after.groups, after.id_token) == (setup.session.groups, setup.session.id_token)


# -- back-off (bug 1): exponential, capped, process-wide, reset by an answer; the clock is passed in ---------


def test_backoff_doubles_to_the_cap_and_an_answer_resets_it() -> None:
    backoff = Backoff()
    delays = [backoff.fault("s", NOW) for _ in range(8)]
    assert delays == [10, 20, 40, 80, 160, 300, 300, 300] and (FIRST_RETRY, MAX_RETRY) == (10, 300)
    assert backoff.paused(NOW + 299) and not backoff.paused(NOW + 300)
    backoff.answered("s")
    assert not backoff.paused(NOW) and backoff.fault("s", NOW) == 10


def _due_sessions(setup: Setup, count: int) -> list[str]:
    """`count` due sessions, sid-1 (the setup's) the most urgent, each with its own refresh token."""
    for i in range(2, count + 1):
        setup.rt.store.put(Session(**{**_fields(setup.session), "id": f"sid-{i}", "refresh_token": f"rt-{i * 10}",
                                      "token_expires_at": int(NOW) + 30 + i}))  # fmt: skip
    return [f"sid-{i}" for i in range(1, count + 1)]


def test_a_failing_idp_gets_one_request_per_delay_not_one_per_session(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    """A mistyped idp_client_secret: every session is kept, and the IdP is not hammered."""
    sids = _due_sessions(setup, 3)
    setup.idp.token = refused("invalid_client", 401)
    backoff = Backoff()

    async def passes(*times: float) -> list[dict[str, Outcome]]:
        return [await refresh_pass(setup.rt, OWNER, backoff, lambda t=t: NOW + t) for t in times]

    with caplog.at_level(logging.INFO, "authz.refresh"):
        outcomes = _run(passes(0, 5, 9.9, 10, 29.9, 30))
    assert outcomes == [{"sid-1": "retry"}, {}, {}, {"sid-2": "retry"}, {}, {"sid-3": "retry"}]
    assert setup.idp.hits["/token"] == 3
    assert [r.levelname for r in caplog.records] == ["ERROR"] * 3
    assert "retrying in 10s" in caplog.records[0].getMessage()
    assert "retrying in 40s" in caplog.records[2].getMessage()
    assert all(setup.rt.store.get(sid, NOW + 30) is not None for sid in sids)

    setup.idp.token = refreshed_tokens()  # the operator fixed the secret
    assert _run(passes(69.9)) == [{}]
    assert _run(passes(70)) == [{"sid-1": "refreshed", "sid-2": "refreshed", "sid-3": "refreshed"}]
    setup.idp.token = lambda request: httpx2.Response(502)
    assert _run(passes(80)) == [{}]  # nothing is due any more
    assert not backoff.paused(NOW + 80)


def test_one_session_the_idp_keeps_refusing_does_not_starve_the_others(setup: Setup) -> None:
    _due_sessions(setup, 3)
    grant = refreshed_tokens()

    def answer(request: httpx2.Request) -> httpx2.Response:
        if b"refresh_token=rt-1&" in request.content + b"&":
            return httpx2.Response(400, json={"error": "invalid_request"})
        return grant(request)

    setup.idp.token = answer
    backoff = Backoff()

    async def passes(*times: float) -> list[dict[str, Outcome]]:
        return [await refresh_pass(setup.rt, OWNER, backoff, lambda t=t: NOW + t) for t in times]

    first, second, third = _run(passes(0, 10, 20))
    assert first == {"sid-1": "retry"}
    assert second == {"sid-2": "refreshed", "sid-3": "refreshed", "sid-1": "retry"}  # the others go first
    assert third == {}  # sid-1 waits out its own, longer delay (20 s after its second fault)
    assert setup.rt.store.get("sid-1", NOW) == setup.session


def test_the_loop_refreshes_with_the_current_runtime_and_a_new_client_starts_afresh(
    setup: Setup, make_config: Callable[..., Config]
) -> None:
    """The first client's invalid_client pauses refreshes; a new client (reloaded config) is tried at once."""
    fixed = FakeIdp(now=NOW)
    rt2 = Runtime.build(fixed.config(make_config), setup.rt.store, oidc=fixed.client(make_config))
    holder = RuntimeHolder(setup.rt)

    async def go() -> None:
        stop = asyncio.Event()
        grant = refreshed_tokens()

        def swap(request: httpx2.Request) -> httpx2.Response:
            holder.swap(rt2)  # the operator fixes idp_client_secret and reloads
            return httpx2.Response(401, json={"error": "invalid_client"})

        def granted(request: httpx2.Request) -> httpx2.Response:
            stop.set()
            return grant(request)

        setup.idp.token, fixed.token = swap, granted
        await asyncio.wait_for(refresh_loop(holder, stop, interval=0, clock=lambda: NOW), 5)
        for rt in (setup.rt, rt2):
            assert rt.oidc is not None
            await rt.oidc.close()

    _run(go())
    after = setup.rt.store.get("sid-1", NOW)
    assert after is not None and after.refresh_token == "rt-2"
    assert (setup.idp.hits["/token"], fixed.hits["/token"]) == (1, 1)
