"""Headers that make an upstream read another path, method, host or client never reach it (class 6):
attacks through the real Envoy, on a public and a signed-in route, in any casing and repeated."""

from __future__ import annotations

import http.client
from collections.abc import Iterator

import pytest

from authz.config.load import STRIPPED_REQUEST_HEADERS

from ..conftest import Stack, _launch, _teardown
from ..upstream import Seen

pytestmark = pytest.mark.e2e

GET_ONLY = {"allow": {"and": [{"domain": {"is": "example.com"}}, {"http_method": "GET"}]}}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = _launch(
        tmp_path_factory.mktemp("strip-headers"),
        extra_routes=[
            {
                "id": "keeper",
                "from": "http://keep.localhost",
                "allow_public_unauthenticated_access": True,
                "keep_request_headers": ["X-Forwarded-Prefix"],
            },
            {
                "id": "rewrite",
                "from": "http://rewrite.localhost",
                "host_rewrite": "internal.example",
                "allow_public_unauthenticated_access": True,
            },
            {"id": "get-only", "from": "http://getonly.localhost", "policy": GET_ONLY},
        ],
    )
    yield running
    _teardown(running)


def _send(stack: Stack, host: str, headers: list[tuple[str, str]], method: str = "GET") -> int:
    """One request with exactly these header lines, names cased as given (http.client sends them verbatim)."""
    conn = http.client.HTTPConnection("127.0.0.1", stack.envoy_port, timeout=10)
    try:
        conn.putrequest(method, "/x", skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", host)
        for name, value in headers:
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def _casings(name: str) -> list[str]:
    return [name, name.upper(), "-".join(part.capitalize() for part in name.split("-"))]


def _forged(value: str = "/admin") -> list[tuple[str, str]]:
    """Every stripped header, in three casings, so each arrives at Envoy three times."""
    return [(cased, value) for name in STRIPPED_REQUEST_HEADERS for cased in _casings(name)]


def _arrived(stack: Stack, seen: Seen, hostname: str) -> set[str]:
    """The client's stripped headers that arrived: X-Forwarded-Host counts unless it is the one
    Envoy sets from config (the route's host and port, as the route rewrites Host)."""
    names = set(seen.headers) & set(STRIPPED_REQUEST_HEADERS)
    if seen.one("x-forwarded-host") == f"{hostname}:{stack.envoy_port}":
        names.discard("x-forwarded-host")
    return names


def test_no_stripped_header_reaches_a_public_or_signed_in_upstream(stack: Stack) -> None:
    cookie = stack.seed_session("private.localhost", user_id="u-1", email="ann@example.com")
    port = stack.envoy_port
    for hostname, extra in (("public.localhost", []), ("private.localhost", [("Cookie", f"_pomerium={cookie}")])):
        stack.upstream.clear()
        xfcc = ("X-Forwarded-Client-Cert", 'Hash=00;Subject="CN=admin";URI=spiffe://example.com/admin')
        forged = [*_forged(), ("X-Forwarded-Proto", "https"), ("X-Request-Id", "forged-id"), xfcc]
        assert _send(stack, f"{hostname}:{port}", [*forged, *extra]) == 200, hostname
        seen = stack.upstream.last()
        assert _arrived(stack, seen, hostname) == set(), hostname
        # Envoy's own (use_remote_address): the client's values are replaced, not passed on.
        assert seen.one("x-forwarded-proto") == "http" and seen.one("x-request-id") != "forged-id", hostname
        # A client's claim of a certificate never reaches the app (forward_client_cert_details: SANITIZE).
        assert seen.one("x-forwarded-client-cert") is None, hostname


def test_a_kept_header_arrives_and_the_others_do_not(stack: Stack) -> None:
    assert _send(stack, f"keep.localhost:{stack.envoy_port}", _forged("/prefix")) == 200
    seen = stack.upstream.last()
    assert _arrived(stack, seen, "keep.localhost") == {"x-forwarded-prefix"}
    assert seen.headers["x-forwarded-prefix"] == ["/prefix"] * 3


def test_a_rewritten_host_arrives_as_x_forwarded_host_from_config_never_the_clients(stack: Stack) -> None:
    # Another port in Host and a forged X-Forwarded-Host: the upstream sees the configured origin.
    assert _send(stack, "rewrite.localhost:1", [("X-Forwarded-Host", "evil.example")]) == 200
    seen = stack.upstream.last()
    assert seen.one("host") == "internal.example"
    assert seen.one("x-forwarded-host") == f"rewrite.localhost:{stack.envoy_port}"


def test_a_get_only_policy_is_not_bypassed_by_a_method_override(stack: Stack) -> None:
    cookie = stack.seed_session("getonly.localhost", user_id="u-2", email="bo@example.com")
    host = f"getonly.localhost:{stack.envoy_port}"
    assert _send(stack, host, [("Cookie", f"_pomerium={cookie}")], method="DELETE") == 403
    assert stack.upstream.requests == []
    overrides = [(name, "DELETE") for name in ("X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override")]
    assert _send(stack, host, [("Cookie", f"_pomerium={cookie}"), *overrides]) == 200
    seen = stack.upstream.last()
    assert seen.method == "GET" and _arrived(stack, seen, "getonly.localhost") == set()
