"""Every path authz's web server knows, through the generated Envoy config, on each kind of host:
which answer from authz, which from the upstream, and which not at all. The authenticate host
serves its allow-list (`/.pomerium/…`, `/oauth2/callback`, `/.well-known/pomerium…`) and Envoy
answers 404 to the rest; a route host sends only authz's pages to authz; /healthz and /readyz
answer on `http_address` alone."""

from __future__ import annotations

import time
from typing import Any

import httpx2
import pytest
from starlette.routing import Route

from authz.web.sidecar import Hosts

from .conftest import Stack

pytestmark = pytest.mark.e2e
HEALTH = ("/healthz", "/readyz")


def paths(table: Any) -> set[str]:
    return {r.path.replace("{grant}", "g1") for r in table.routes if isinstance(r, Route)}


# The sidecar's own tables: nothing is listed here by hand that the server could add without the test seeing it.
_HOSTS = Hosts(None, time.time, lambda: True)  # type: ignore[arg-type]  # the tables only; never handles
AUTHENTICATE, ROUTE_HOST, EVERY_HOST = (
    paths(_HOSTS.authenticate_host),
    paths(_HOSTS.route_host),
    paths(_HOSTS.other_host),
)
ALL = AUTHENTICATE | ROUTE_HOST | {"/", "/x", "/oauth2", "/.pomeriumx", "/.well-known/x"}


def _via_envoy(stack: Stack, host: str, path: str) -> httpx2.Response:
    url = f"http://127.0.0.1:{stack.envoy_port}{path}"
    return httpx2.get(url, headers={"host": f"{host}:{stack.envoy_port}"}, timeout=10)


def _from_authz(response: httpx2.Response) -> bool:
    """authz's web server answers every response with its frame and referrer headers; Envoy's own
    direct responses and the recording upstream never do."""
    return response.headers.get("x-frame-options") == "DENY"


def test_the_authenticate_host_serves_its_allow_list_only(stack: Stack) -> None:
    served = {p for p in ALL if p.startswith(("/.pomerium/", "/.well-known/pomerium")) or p == "/oauth2/callback"}
    assert AUTHENTICATE - set(HEALTH) <= served  # every page of the authenticate host is reachable
    for path in sorted(ALL):
        answer = _via_envoy(stack, "authenticate.localhost", path)
        if path in served:
            assert _from_authz(answer), (path, answer.status_code)
        else:
            assert answer.status_code == 404 and not _from_authz(answer), (path, answer.status_code)
    assert stack.upstream.requests == []


def test_a_route_host_sends_only_authzs_pages_to_authz(stack: Stack) -> None:
    """public.localhost is a public route: what is not authz's goes to the upstream."""
    for path in sorted(ALL):
        stack.upstream.clear()
        answer = _via_envoy(stack, "public.localhost", path)
        mine = path in ("/.pomerium", "/.well-known/pomerium") or path.startswith(
            ("/.pomerium/", "/.well-known/pomerium/")
        )
        assert _from_authz(answer) == mine, (path, answer.status_code)
        assert (stack.upstream.requests == []) == mine, path


def test_health_answers_on_http_address_only(stack: Stack) -> None:
    assert set(HEALTH) <= EVERY_HOST
    for path in HEALTH:
        assert httpx2.get(f"http://127.0.0.1:{stack.http_port}{path}", timeout=10).status_code == 200
        assert _via_envoy(stack, "authenticate.localhost", path).status_code == 404
        stack.upstream.clear()
        assert _via_envoy(stack, "public.localhost", path).status_code == 200  # the upstream's own
        assert stack.upstream.last().path == path
