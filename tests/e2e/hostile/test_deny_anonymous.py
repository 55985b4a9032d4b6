"""Deny rules cannot be escaped by staying anonymous (class 7), through the real Envoy.

The route allows everyone (`accept`) and denies one email. Without a session the deny rule cannot
be judged, so the answer is sign-in (302 for a browser, 401 for a program), never the upstream.
"""

from __future__ import annotations

import http.client
from collections.abc import Iterator

import pytest

from ..conftest import Stack, _launch, _teardown

pytestmark = pytest.mark.e2e

HOST = "denyanon.localhost"
POLICY = {"allow": {"or": [{"accept": True}]}, "deny": {"or": [{"email": {"is": "blocked@example.com"}}]}}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = _launch(
        tmp_path_factory.mktemp("deny-anonymous"),
        extra_routes=[{"id": "denyanon", "from": f"http://{HOST}", "policy": POLICY}],
    )
    yield running
    _teardown(running)


def _get(stack: Stack, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
    conn = http.client.HTTPConnection("127.0.0.1", stack.envoy_port, timeout=10)
    try:
        conn.request("GET", "/report", headers={"Host": f"{HOST}:{stack.envoy_port}", **headers})
        response = conn.getresponse()
        response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}
    finally:
        conn.close()


def test_an_anonymous_request_is_sent_to_sign_in_not_through(stack: Stack) -> None:
    browser, headers = _get(stack, {"Accept": "text/html"})
    assert browser == 302 and "/.pomerium/sign_in" in headers["location"]
    program, _ = _get(stack, {"Accept": "application/json"})
    assert program == 401
    # Forged credentials, a planted identity header, a method override: still no way around.
    forged = {"Accept": "application/json", "Authorization": "Pomerium not-a-session",
              "X-Pomerium-Claim-Email": "ann@example.com", "Cookie": "_pomerium=forged"}  # fmt: skip
    assert _get(stack, forged)[0] == 401
    assert stack.upstream.requests == []


def test_the_denied_user_is_denied_and_others_pass(stack: Stack) -> None:
    blocked = stack.seed_session(HOST, user_id="u-blocked", email="blocked@example.com")
    assert _get(stack, {"Cookie": f"_pomerium={blocked}", "Accept": "application/json"})[0] == 403
    assert stack.upstream.requests == []
    other = stack.seed_session(HOST, user_id="u-ann", email="ann@example.com")
    assert _get(stack, {"Cookie": f"_pomerium={other}"})[0] == 200
    assert stack.upstream.last().path == "/report"
