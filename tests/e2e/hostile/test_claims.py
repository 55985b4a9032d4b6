"""What the IdP says about a user, attacked through the real Envoy and the real IdP (classes 2, 11).

Class 2: an email counts only when the IdP vouches for it and it is one address. `eve` signs in
with Alice's address marked unverified, `trent` with `email_verified: "false"`, `trudy` with
`trudy@evil.example@example.com`: none passes an email or domain rule, and none is asserted upstream
as that email.

Class 11: claim content never breaks a user or fools an upstream. `grace` has groups with a comma,
a line break, NUL and a lone surrogate; `many` has 1,500 groups. Both still get through, with the
assertion and the comma-joined claim headers agreeing on what they carry.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

import httpx2
import pytest
from joserfc import jwt as jose_jwt
from joserfc.jwk import KeySet

from authz.dev.stack import idp_available
from authz.signing.assertion import GROUPS_BUDGET

from ..conftest import Stack, _launch, _teardown
from ..loopback import browser, idp_login
from ..upstream import Seen

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(idp_available() is not None, reason=f"local IdP unavailable: {idp_available()}"),
]

ANYONE = "anyone.localhost"  # any signed-in user; identity headers passed
EMAIL_RULE = "emailrule.localhost"  # policy: email is alice@example.com
USERS = "users.localhost"  # allowed_users: alice@example.com
DOMAIN_RULE = "domainrule.localhost"  # policy: domain is example.com
PRIVATE = "private.localhost"  # allowed_domains: example.com (the stack's own route)
FILTERED = "filtered.localhost"  # jwt_groups_filter on the route


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = _launch(
        tmp_path_factory.mktemp("claims"),
        extra_routes=[
            {
                "id": "anyone",
                "from": f"http://{ANYONE}",
                "allow_any_authenticated_user": True,
                "pass_identity_headers": True,
            },
            {
                "id": "emailrule",
                "from": f"http://{EMAIL_RULE}",
                "policy": {"allow": {"or": [{"email": {"is": "alice@example.com"}}]}},
            },
            {"id": "users", "from": f"http://{USERS}", "allowed_users": ["alice@example.com"]},
            {
                "id": "domainrule",
                "from": f"http://{DOMAIN_RULE}",
                "policy": {"allow": {"or": [{"domain": {"is": "example.com"}}]}},
            },
            {
                "id": "filtered",
                "from": f"http://{FILTERED}",
                "allow_any_authenticated_user": True,
                "pass_identity_headers": True,
                "jwt_groups_filter": ["ops", "x,admins", "sales"],
            },
        ],
    )
    yield running
    _teardown(running)


@contextmanager
def _signed_in(stack: Stack, user: str) -> Iterator[httpx2.Client]:
    """A browser that has signed in as `user` at the IdP (through ANYONE, which admits anyone)."""
    with browser() as client:
        page = client.get(stack.url(ANYONE, "/"))
        assert "/interaction/" in str(page.url), page.text[:300]
        landed = idp_login(client, page, user)
        assert landed.status_code == 200 and str(landed.url) == stack.url(ANYONE, "/"), landed.text[:300]
        yield client


def _assertion(stack: Stack, seen: Seen) -> dict[str, object]:
    keys = KeySet.import_key_set(stack.get(ANYONE, "/.well-known/pomerium/jwks.json").json())
    return dict(jose_jwt.decode(seen.one("x-pomerium-jwt-assertion") or "", keys, algorithms=["ES256"]).claims)


@pytest.mark.parametrize("user", ["eve", "trent", "trudy"])
def test_an_email_the_idp_does_not_vouch_for_opens_no_email_or_domain_rule(stack: Stack, user: str) -> None:
    with _signed_in(stack, user) as client:
        seen = stack.upstream.last()
        claims = _assertion(stack, seen)
        # Upstreams such as Grafana pick the account by email: the impostor gets none.
        assert claims["sub"] == user and claims["email"] == ""
        assert seen.one("x-pomerium-claim-email") == ""
        stack.upstream.clear()
        for host in (EMAIL_RULE, USERS, DOMAIN_RULE, PRIVATE):
            denied = client.get(stack.url(host, "/"))
            assert denied.status_code == 403, (host, denied.text[:200])
            assert "has not verified the email address" in denied.text, host
        assert stack.upstream.requests == []
        api = client.get(stack.url(EMAIL_RULE, "/"), headers={"accept": "application/json"})
        assert api.status_code == 403 and "not verified" in json.loads(api.text)["detail"]


def test_a_vouched_email_still_opens_its_rules(stack: Stack) -> None:
    with _signed_in(stack, "alice") as client:
        for host in (EMAIL_RULE, USERS, DOMAIN_RULE, PRIVATE):
            assert client.get(stack.url(host, "/")).status_code == 200, host
        assert _assertion(stack, stack.upstream.last())["email"] == "alice@example.com"


def test_group_names_an_upstream_could_misread_are_left_out_everywhere(stack: Stack) -> None:
    with _signed_in(stack, "grace") as client:
        seen = stack.upstream.last()
        assert _assertion(stack, seen)["groups"] == ["ops", "dev"]
        assert seen.one("x-pomerium-claim-groups") == "ops,dev"  # never `x,admins` read as `admins`
        # The route's filter: only the groups it names, and never the unsafe one it names.
        assert client.get(stack.url(FILTERED, "/")).status_code == 200
        seen = stack.upstream.last()
        assert _assertion(stack, seen)["groups"] == ["ops"] and seen.one("x-pomerium-claim-groups") == "ops"


def test_a_user_in_1500_groups_gets_through_with_the_groups_that_fit(stack: Stack) -> None:
    with _signed_in(stack, "many") as client:
        seen = stack.upstream.last()
        claims = _assertion(stack, seen)
        groups = claims["groups"]
        assert isinstance(groups, list) and 100 < len(groups) < 1500 and claims["groups_truncated"] is True
        assert groups == [f"group-{i:04d}-of-a-large-directory" for i in range(len(groups))]
        assert seen.one("x-pomerium-claim-groups") == ",".join(groups)
        carried = sum(len(v) for name, values in seen.headers.items() if name.startswith("x-pomerium") for v in values)
        assert carried <= GROUPS_BUDGET
        # Every request of that user, not only the first.
        assert client.get(stack.url(ANYONE, "/again")).status_code == 200
