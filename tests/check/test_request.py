"""The request adapter's path findings (`;` parameters, double encoding) and the route's 400 for them."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from authz.check.request import RequestContext, path_refusal
from authz.config import Config, Route
from authz.errors import BadRequest


def _req(target: str) -> RequestContext:
    return RequestContext.build(method="GET", host="app.localhost", target=target)


@pytest.mark.parametrize(
    ("target", "parameters", "double"),
    [
        ("/plain/path?q=1", False, False),
        ("/x;jsessionid=1/admin", True, False),
        ("/x/..;/admin", True, False),
        ("/x%3Bj=1/admin", True, False),  # decoded `;`: some upstreams split parameters after decoding
        ("/x%3bj=1/admin", True, False),
        ("/x?a;b=1", False, False),  # the query is not the path
        ("/%2561dmin", False, True),  # an upstream decoding twice reads /admin
        ("/a%252e%252e/admin", False, True),
        ("/a%252E%252F", False, True),
        ("/a%2525", False, True),
        ("/100%25", False, False),  # a literal percent sign, nothing to decode twice
        ("/100%25off", False, False),
        ("/100%25g1", False, False),
        ("/x?next=%2561", False, False),
        ("/x;%2561", True, True),
    ],
)
def test_build_records_path_parameters_and_double_encoding(target: str, parameters: bool, double: bool) -> None:
    req = _req(target)
    assert (req.has_path_parameters, req.has_double_encoding) == (parameters, double)


@given(st.text(alphabet="/a%25fF;3bBg?", max_size=24))
def test_double_encoding_is_a_percent_escape_left_after_decoding(tail: str) -> None:
    try:
        req = _req("/" + tail)
    except BadRequest:
        return
    # `%` survives decoding only from `%25`: the raw check equals "the decoded path still has an escape".
    assert req.has_double_encoding == bool(re.search(r"%[0-9a-fA-F]{2}", req.path))
    assert req.has_path_parameters == (";" in req.path)


@pytest.fixture
def route(make_config: Callable[..., Config]) -> Route:
    return make_config().routes[0]


def test_path_refusal_follows_the_route_options(route: Route) -> None:
    both = _req("/x;a=1/%2561dmin")
    assert "';'" in (path_refusal(route, both) or "")
    assert "double-encoded" in (path_refusal(replace(route, allow_path_parameters=True), both) or "")
    assert "';'" in (path_refusal(replace(route, allow_double_encoding=True), both) or "")
    assert path_refusal(replace(route, allow_path_parameters=True, allow_double_encoding=True), both) is None
    assert path_refusal(route, _req("/x/y?a;b=%2561")) is None


def test_the_route_options_parse(make_config: Callable[..., Config]) -> None:
    config = make_config(
        routes=[
            {
                "from": "http://app.localhost",
                "to": "http://127.0.0.1:9000",
                "allow_public_unauthenticated_access": True,
                "allow_path_parameters": True,
                "allow_double_encoding": True,
            }
        ]
    )
    assert path_refusal(config.routes[0], _req("/x;a=1/%2561dmin")) is None


@pytest.mark.parametrize(
    ("forwarded", "hops", "expected"),
    [
        ("10.1.2.3, 127.0.0.1", 1, "10.1.2.3"),  # the balancer's entry, then Envoy's own peer
        ("10.9.9.9, 203.0.113.7, 127.0.0.1", 1, "203.0.113.7"),  # a client's entry never counts
        ("10.9.9.9, 203.0.113.7, 127.0.0.1", 2, "10.9.9.9"),
        ("127.0.0.1", 1, "192.0.2.1"),  # not enough entries: the connection's
        ("not-an-ip, 127.0.0.1", 1, "192.0.2.1"),
        ("", 1, "192.0.2.1"),
    ],
)
def test_trusted_client(forwarded: str, hops: int, expected: str) -> None:
    from authz.check.request import trusted_client

    headers = {"x-forwarded-for": forwarded} if forwarded else {}
    req = RequestContext.build(method="GET", host="h", target="/", headers=headers, source_ip="192.0.2.1")
    assert trusted_client(req, hops).source_ip == expected
