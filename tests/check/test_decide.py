"""The decide step alone: facts in, outcome out; pure, so it is tested with plain values."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from authz.check.credentials import Credentials
from authz.check.decide import decide
from authz.check.facts import Action, Facts, Outcome
from authz.check.request import RequestContext
from authz.config import Config
from authz.config.model import Route
from authz.sessions.session import Session

NOW = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
NO_CREDENTIALS = Credentials([], False, False, None)
ACCEPT = {"accept": True}
ANN = Session("sid", "ann", "ann@example.com", groups=("ops",))


@pytest.fixture
def routes(make_config: Callable[..., Config]) -> dict[str, Route]:
    def route(rid: str, **extra: object) -> dict[str, object]:
        return {"id": rid, "from": f"http://{rid}.localhost", "to": "http://127.0.0.1:9", **extra}

    config = make_config(
        routes=[
            route("public", allow_public_unauthenticated_access=True),
            route("domain", allowed_domains=["example.com"]),
            route("nobody"),
            route(
                "deny-ops", policy=[{"allow": {"or": [{"accept": True}]}, "deny": {"or": [{"groups": {"has": "ops"}}]}}]
            ),
            route(
                "deny-needs-session",
                policy={"allow": {"or": [{"accept": True}]}, "deny": {"or": [{"email": {"is": "x@y"}}]}},
            ),
        ]
    )
    return dict(config.routes_by_id)


def facts(route: Route | None, session: Session | None = None, method: str = "GET") -> Facts:
    req = RequestContext.build(method=method, host="h.localhost", target="/p", route_id=route.id if route else "gone")
    return Facts(req, route, NO_CREDENTIALS, session, NOW)


def test_unknown_route_is_404() -> None:
    assert decide(facts(None)) == Outcome(Action.DENY, 404, ("route-not-found",))


def test_public_route_allows_anyone(routes: dict[str, Route]) -> None:
    outcome = decide(facts(routes["public"]))
    assert (outcome.action, outcome.status, outcome.reasons) == (Action.ALLOW, 200, ("accept",))


def test_a_criterion_needing_a_session_without_one_means_login(routes: dict[str, Route]) -> None:
    outcome = decide(facts(routes["domain"]))
    assert (outcome.action, outcome.reasons) == (Action.LOGIN, ("user-unauthenticated",))


def test_a_deny_criterion_needing_a_session_forces_login_even_when_allow_matched(routes: dict[str, Route]) -> None:
    # Pomerium's order: user-unauthenticated on either side sends the user to sign in first.
    assert decide(facts(routes["deny-needs-session"])).action is Action.LOGIN


def test_allow_with_its_reasons(routes: dict[str, Route]) -> None:
    outcome = decide(facts(routes["domain"], ANN))
    assert (outcome.action, outcome.reasons) == (Action.ALLOW, ("domain-ok",))
    assert outcome.verdict is not None and outcome.verdict.allow


def test_deny_beats_allow_and_gives_deny_reasons(routes: dict[str, Route]) -> None:
    outcome = decide(facts(routes["deny-ops"], ANN))
    assert (outcome.action, outcome.status, outcome.reasons) == (Action.DENY, 403, ("groups-ok",))


def test_nothing_allowed_gives_allow_reasons(routes: dict[str, Route]) -> None:
    other = Session("sid", "bob", "bob@example.org")
    assert decide(facts(routes["domain"], other)).reasons == ("domain-unauthorized",)
    assert decide(facts(routes["nobody"], other)).action is Action.DENY


def test_decide_reads_no_clock(routes: dict[str, Route], monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    def boom() -> float:
        raise AssertionError("decide read the clock")

    monkeypatch.setattr(time, "time", boom)
    monkeypatch.setattr(time, "monotonic", boom)
    decide(facts(routes["domain"], ANN))


_CLOSURE = """
import json, sys
import authz.check.decide
print(json.dumps(sorted(m for m in sys.modules if m == "authz" or m.startswith("authz."))))
"""


def test_decide_imports_only_the_policy_and_plain_data() -> None:
    out = subprocess.run([sys.executable, "-c", _CLOSURE], capture_output=True, text=True, check=True)
    loaded = json.loads(out.stdout)
    allowed = {"authz", "authz.check", "authz.check.decide", "authz.check.facts"}
    outside = [m for m in loaded if m not in allowed and not m.startswith("authz.policy")]
    assert outside == [], f"decide pulls in {outside}"
    assert "authz.policy.ast" in loaded
