"""Behind a balancer: whose address a `source_ip` rule judges. By default the connection's, never
a client's X-Forwarded-For; with `xff_num_trusted_hops: 1` the entry the balancer appended (the
last), never one a client put before it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .conftest import Stack, _launch, _teardown

pytestmark = pytest.mark.e2e
NET = {"id": "net", "from": "http://net.localhost", "policy": {"allow": {"or": [{"source_ip": "10.0.0.0/8"}]}}}


@pytest.fixture(scope="module")
def behind(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = _launch(tmp_path_factory.mktemp("hops"), xff_num_trusted_hops=1, extra_routes=[NET])
    yield stack
    _teardown(stack)


@pytest.fixture(scope="module")
def direct(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = _launch(tmp_path_factory.mktemp("direct"), extra_routes=[NET])
    yield stack
    _teardown(stack)


def test_with_a_trusted_hop_the_balancers_entry_counts(behind: Stack) -> None:
    assert behind.get("net.localhost", "/", headers={"x-forwarded-for": "10.1.2.3"}).status_code == 200
    # A client's own entry comes before the balancer's: it is never the one that counts.
    forged = behind.get("net.localhost", "/", headers={"x-forwarded-for": "10.9.9.9, 203.0.113.7"})
    assert forged.status_code in (401, 403)
    assert behind.get("net.localhost", "/").status_code in (401, 403)  # no balancer entry: the connection's


def test_by_default_a_client_header_never_counts(direct: Stack) -> None:
    assert direct.get("net.localhost", "/", headers={"x-forwarded-for": "10.1.2.3"}).status_code in (401, 403)
