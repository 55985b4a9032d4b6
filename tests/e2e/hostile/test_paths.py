"""Paths an upstream may read differently from the policy (class 12): attacks through the real Envoy.

What Envoy's normalisation (normalize_path, merge_slashes, UNESCAPE_AND_REDIRECT) leaves alone, and
so what authz must refuse: it never decodes `%25` nor `%3B`, and keeps `;` — and it decodes `%2e`
without resolving the `..;` that results, so `/x/%2e%2e;/admin` reaches the upstream as
`/x/..;/admin`, which Tomcat-style servers read as `/admin`.
"""

from __future__ import annotations

import http.client
import re
import subprocess
from collections.abc import Iterator

import pytest

from authz.dev.stack import find_envoy

from ..conftest import Stack, _launch, _teardown

pytestmark = pytest.mark.e2e

# Each would read as /admin (or under it) to an upstream that decodes twice or drops `;` parameters.
ATTACKS = (
    "/%2561dmin",
    "/x/%252e%252e/admin",
    "/a%252e%252e/admin",
    "/x;jsessionid=1/admin",
    "/x/%2e%2e;/admin",
    "/x%3Bj=1/admin",
    "/x%3bj=1/admin",
    "/%2561dmin;x=1",
)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = _launch(
        tmp_path_factory.mktemp("paths"),
        extra_routes=[
            {
                "id": "lenient",
                "from": "http://lenient.localhost",
                "allow_public_unauthenticated_access": True,
                "allow_path_parameters": True,
                "allow_double_encoding": True,
            },
            {
                "id": "semicolons",
                "from": "http://semicolons.localhost",
                "allow_public_unauthenticated_access": True,
                "allow_path_parameters": True,
            },
        ],
    )
    yield running
    _teardown(running)


def _get(stack: Stack, hostname: str, target: str) -> int:
    """GET `target` byte for byte (http.client sends the path as given)."""
    conn = http.client.HTTPConnection("127.0.0.1", stack.envoy_port, timeout=10)
    try:
        conn.putrequest("GET", target, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", f"{hostname}:{stack.envoy_port}")
        conn.endheaders()
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


@pytest.mark.parametrize("hostname", ["public.localhost", "paths.localhost"])
def test_double_encoding_and_path_parameters_are_400_and_never_reach_the_upstream(stack: Stack, hostname: str) -> None:
    # paths.localhost denies /admin by policy; public.localhost lets everything through.
    refused = {target: _get(stack, hostname, target) for target in ATTACKS}
    assert refused == dict.fromkeys(ATTACKS, 400)
    assert stack.upstream.requests == []


def test_each_option_allows_only_its_own_form(stack: Stack) -> None:
    assert _get(stack, "semicolons.localhost", "/x;jsessionid=1/admin") == 200
    assert _get(stack, "semicolons.localhost", "/x%3Bj=1/admin") == 200
    assert [r.path for r in stack.upstream.requests] == ["/x;jsessionid=1/admin", "/x%3Bj=1/admin"]
    assert _get(stack, "semicolons.localhost", "/%2561dmin") == 400


def test_a_route_that_allows_both_gets_them_as_envoy_normalised_them(stack: Stack) -> None:
    seen = {}
    for target in ATTACKS:
        assert _get(stack, "lenient.localhost", target) == 200, target
        seen[target] = stack.upstream.last().path
    # Envoy decodes unreserved escapes and resolves plain dot-segments; `%25`, `%3B` and `;` stay.
    assert seen == {
        "/%2561dmin": "/%2561dmin",
        "/x/%252e%252e/admin": "/x/%252e%252e/admin",
        "/a%252e%252e/admin": "/a%252e%252e/admin",
        "/x;jsessionid=1/admin": "/x;jsessionid=1/admin",
        "/x/%2e%2e;/admin": "/x/..;/admin",
        "/x%3Bj=1/admin": "/x%3Bj=1/admin",
        "/x%3bj=1/admin": "/x%3bj=1/admin",
        "/%2561dmin;x=1": "/%2561dmin;x=1",
    }


def envoy_version() -> tuple[int, int]:
    """The major and minor version of the Envoy these tests run (`AUTHZ_ENVOY` or the pinned wheel)."""
    out = subprocess.run([find_envoy(), "--version"], capture_output=True, text=True, check=True).stdout
    major, minor = re.search(r"/(\d+)\.(\d+)\.\d+/", out).groups()  # type: ignore[union-attr]
    return int(major), int(minor)


def test_envoy_resolves_dot_segments_that_hold_a_semicolon_before_the_policy(stack: Stack) -> None:
    # Envoy 1.40 reads `..;` and `x;p/..` as dot-segments: the policy sees /admin and denies it.
    # Envoy 1.36 leaves `/x/..;/admin` as it is, and authz refuses its path parameter (400).
    assert _get(stack, "paths.localhost", "/x/..;/admin") == (403 if envoy_version() >= (1, 40) else 400)
    assert _get(stack, "paths.localhost", "/x%3bj=1/../admin") == 403
    assert stack.upstream.requests == []


def test_the_query_is_not_the_path(stack: Stack) -> None:
    assert _get(stack, "public.localhost", "/ok?a;b=%2561dmin&c=%253B") == 200
    assert stack.upstream.last().path == "/ok?a;b=%2561dmin&c=%253B"
