"""Just-in-time grants in the whole Check (gather, decide, answer), in process with a pinned clock:
a grant is one more allow rule for its user on its route, deny rules still win, and it stops at
`expires_at` to the second whatever is cached."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest

from authz.check.answer import JIT_REQUEST
from authz.check.gather import Pending
from authz.check.request import RequestContext
from authz.check.run import begin, check_blocking
from authz.config import Config
from authz.jit import service
from authz.jit.store import MemoryGrantStore, SQLiteGrantStore
from authz.runtime.state import Runtime
from authz.sessions.session import Session, SessionHandle
from authz.sessions.stores import MemoryStore, SQLiteStore
from authz.web.csrf import form_token
from tests.jit.test_service import ALICE

NOW = 1_800_000_000.0
JIT = {"approvers": [{"allow": {"or": [{"groups": {"has": "admins"}}]}}], "max_duration": "2h"}
ROUTE = {
    "id": "app", "from": "http://app.localhost", "to": "http://127.0.0.1:9", "pass_identity_headers": True,
    "policy": [{"allow": {"or": [{"email": {"is": "carol@example.com"}}]},
                "deny": {"or": [{"email": {"is": "mallory@example.com"}}]}}],
    "jit": JIT,
}  # fmt: skip


@pytest.fixture
def config(make_config: Callable[..., Config]) -> Config:
    return make_config(routes=[ROUTE])


def sign_in(rt: Runtime, user: str) -> str:
    session = Session(f"s-{user}", user, f"{user}@example.com", "", (), {}, int(NOW), int(NOW) + 86400)
    rt.store.put(session)
    return rt.codec.seal(SessionHandle(session.id, user, "app.localhost", int(NOW), int(NOW) + 86400))


def req(cookie: str | None, accept: str = "application/json") -> RequestContext:
    headers = {"accept": accept, **({"cookie": f"_pomerium={cookie}"} if cookie else {})}
    return RequestContext.build(method="GET", host="app.localhost", target="/", scheme="http", headers=headers,
                                request_id="r-1", route_id="app")  # fmt: skip


def grant_for(rt: Runtime, user: str, duration: str = "1m", at: float = NOW) -> Any:
    assert rt.grants is not None
    asked = service.Actor(user, f"{user}@example.com")
    grant = service.request_access(rt.config, rt.grants, asked, "app", None, "why", at)
    approved = service.approve(rt.config, rt.grants, ALICE, grant.id, duration, at)
    rt.grant_changed(approved)
    return approved


def test_a_grant_lets_its_user_in_until_the_second_it_expires(config: Config) -> None:
    rt = Runtime.build(config, MemoryStore(), grants=MemoryGrantStore())
    bob, eve = sign_in(rt, "bob"), sign_in(rt, "eve")
    denied = check_blocking(rt, req(bob), NOW)
    assert denied.status == 403
    grant = grant_for(rt, "bob", "1m")
    allowed = check_blocking(rt, req(bob), NOW + 1)
    assert allowed.allowed and allowed.reasons == ("jit-grant-ok",)
    assert check_blocking(rt, req(eve), NOW + 1).status == 403  # only bob
    assert check_blocking(rt, req(bob), grant.expires_at - 0.001).allowed  # the instant before
    assert check_blocking(rt, req(bob), grant.expires_at).status == 403  # at expires_at: no sweeper needed
    assert check_blocking(rt, req(None), NOW + 1).status == 401  # and only with his session


def test_deny_rules_still_win(config: Config) -> None:
    rt = Runtime.build(config, MemoryStore(), grants=MemoryGrantStore())
    mallory = sign_in(rt, "mallory")
    grant_for(rt, "mallory")
    out = check_blocking(rt, req(mallory), NOW + 1)
    assert out.status == 403 and out.reasons == ("email-ok",)
    assert "request_access" not in out.body  # a grant could not help: no form either


def test_the_assertion_ends_with_the_grant(config: Config) -> None:
    rt = Runtime.build(config, MemoryStore(), grants=MemoryGrantStore())
    bob, carol = sign_in(rt, "bob"), sign_in(rt, "carol")
    grant = grant_for(rt, "bob", "2m")
    key = rt.config.signing_keys[0].private.public_key()

    def exp(cookie: str, at: float) -> int:
        token = dict(check_blocking(rt, req(cookie), at).headers)["x-pomerium-jwt-assertion"]
        claims = jwt.decode(
            token,
            key,
            algorithms=["ES256"],
            audience="app.localhost",
            options={"verify_exp": False, "verify_iat": False},
        )
        return int(claims["exp"]) - int(at)

    assert exp(bob, NOW + 10) == 110  # min(iat + 5 min, expires_at)
    assert exp(bob, NOW) == 120 and grant.expires_at == int(NOW) + 120
    assert exp(carol, NOW + 10) == 300  # allowed by policy: the usual 5 minutes


def test_revocation_here_takes_effect_on_the_next_request(config: Config) -> None:
    rt = Runtime.build(config, MemoryStore(), grants=MemoryGrantStore())
    bob = sign_in(rt, "bob")
    grant = grant_for(rt, "bob", "1h")
    assert check_blocking(rt, req(bob), NOW + 1).allowed
    assert rt.grants is not None
    rt.grant_changed(service.revoke(rt.config, rt.grants, ALICE, grant.id, NOW + 2))
    assert check_blocking(rt, req(bob), NOW + 3).status == 403


def test_with_sqlite_grants_are_cached_for_the_bound_and_expiry_stays_exact(
    make_config: Callable[..., Config], tmp_path: Path
) -> None:
    store = f"sqlite://{tmp_path / 'authz.db'}"
    config = make_config(routes=[ROUTE], session_store=store, session_cache_ttl="10s")
    here = Runtime.build(config)
    other = Runtime.build(config)  # another worker on the same store
    try:
        bob = sign_in(here, "bob")
        assert isinstance(begin(here, req(bob), NOW), Pending)  # a cold cache reads off the loop
        assert check_blocking(here, req(bob), NOW).status == 403  # … and now remembers "no grant"
        grant = grant_for(other, "bob", "30s", NOW)  # approved in the other worker
        assert check_blocking(here, req(bob), NOW + 9).status == 403  # within the bound: not yet seen
        seen = begin(here, req(bob), NOW + 10)
        assert isinstance(seen, Pending)  # past the bound the store is read again
        assert check_blocking(here, req(bob), NOW + 10).allowed
        assert not isinstance(begin(here, req(bob), NOW + 11), Pending)  # steady state: no I/O
        # Cached, and still it stops at expires_at exactly.
        assert check_blocking(here, req(bob), grant.expires_at - 0.001).allowed
        assert check_blocking(here, req(bob), grant.expires_at).status == 403
    finally:
        here.store.close()
        other.store.close()
        for rt in (here, other):
            if rt.grants is not None:
                rt.grants.close()


def test_the_403_page_offers_a_request_only_where_a_grant_could_help(config: Config) -> None:
    rt = Runtime.build(config, MemoryStore(), grants=MemoryGrantStore())
    bob = sign_in(rt, "bob")
    page = check_blocking(rt, req(bob, "text/html"), NOW)
    assert page.status == 403 and '<form method="post" action="/.pomerium/jit/request"' in page.body
    (token,) = re.findall(r'name="csrf_token" value="([^"]+)"', page.body)
    assert token == form_token(rt.form_key, JIT_REQUEST, "app.localhost", "s-bob")
    assert 'name="route" value="app"' in page.body and 'name="duration" value="1h"' in page.body
    data = check_blocking(rt, req(bob), NOW).body
    assert '"request_access": {"route": "app", "api": "/.pomerium/api/v1/grants"' in data
    mallory = sign_in(rt, "mallory")
    assert "jit/request" not in check_blocking(rt, req(mallory, "text/html"), NOW).body  # a deny rule: no form


def test_a_route_without_jit_reads_no_grants(make_config: Callable[..., Config], tmp_path: Path) -> None:
    plain = {k: v for k, v in ROUTE.items() if k != "jit"}
    config = make_config(routes=[plain], session_store=f"sqlite://{tmp_path / 'a.db'}")
    rt = Runtime.build(config, SQLiteStore(tmp_path / "a.db", secret=config.cookie_secret.value))
    assert rt.grants is None and rt.grant_cache is None
    bob = sign_in(rt, "bob")
    assert check_blocking(rt, req(bob), NOW).status == 403
    rt.store.close()


def test_sqlite_grant_store_beside_the_sessions(make_config: Callable[..., Config], tmp_path: Path) -> None:
    config = make_config(routes=[ROUTE], session_store=f"sqlite://{tmp_path / 'a.db'}")
    rt = Runtime.build(config)
    assert isinstance(rt.grants, SQLiteGrantStore) and rt.grant_cache is not None
    rt.store.close()
    rt.grants.close()
