"""Route matching inside authz (`route_matching: host_path`): the virtual host and route Envoy
would pick, by host and path, for a Check without a route id."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from authz.check.request import RequestContext
from authz.check.routing import RouteTable, path_refusal
from authz.check.run import check_blocking
from authz.config import Config
from authz.errors import ConfigError
from authz.runtime.state import Runtime
from authz.sessions.stores import MemoryStore

TO = "http://127.0.0.1:9"


def _route(rid: str, host: str, **match: Any) -> dict[str, Any]:
    return {"id": rid, "from": f"http://{host}", "to": TO, "allow_public_unauthenticated_access": True, **match}


ROUTES = [
    _route("api", "app.localhost", prefix="/api/"),
    _route("exact", "app.localhost", path="/exact"),
    _route("versioned", "app.localhost", regex="/v[0-9]+/.*"),
    _route("app", "app.localhost"),
    _route("wild-a", "*.wild.localhost", prefix="/a"),
    _route("deep", "*.b.wild.localhost"),
    _route("x-exact", "x.wild.localhost"),  # an exact host after the wildcard that covers it
    _route("y-exact", "y.other.localhost"),  # … and before
    _route("other", "*.other.localhost"),
    _route("ab", "over.localhost", prefix="/ab"),
    _route("a", "over.localhost", prefix="/a"),
    _route("abc", "over.localhost", prefix="/abc"),  # never reached: /ab comes first
    _route("query", "q.localhost", prefix="/find"),
    _route("with-query", "q.localhost", prefix="/search?x"),  # never: Envoy's prefix ignores the query
    _route("case", "case.localhost", path="/Admin"),
]


@pytest.fixture
def table(make_config: Callable[..., Config]) -> RouteTable:
    return RouteTable.build(make_config(routes=ROUTES).routes)


@pytest.mark.parametrize(
    ("host", "path", "expected"),
    [
        ("app.localhost", "/api/x", "api"),
        ("app.localhost", "/api", "app"),  # the prefix is "/api/"
        ("app.localhost", "/exact", "exact"),
        ("app.localhost", "/exact?q=1", "exact"),  # path: the query is not part of it
        ("app.localhost", "/exact/", "app"),
        ("app.localhost", "/v2/x", "versioned"),
        ("app.localhost", "/xv2/x", "app"),  # a full match, not a search
        ("app.localhost", "/v2/x?y", "versioned"),
        ("a.wild.localhost", "/abc", "wild-a"),
        ("a.wild.localhost", "/b", None),  # nothing falls through to another host
        ("q.b.wild.localhost", "/abc", "deep"),  # the longest suffix wins
        ("x.b.wild.localhost", "/", "deep"),
        ("x.wild.localhost", "/a", "x-exact"),  # exact beats wildcard, whatever the order
        ("y.other.localhost", "/", "y-exact"),
        ("z.other.localhost", "/", "other"),
        ("other.localhost", "/", None),  # `*` stands for one character or more
        (".other.localhost", "/", None),
        ("over.localhost", "/abc", "ab"),  # config order, not the longest prefix
        ("over.localhost", "/a", "a"),
        ("q.localhost", "/find?x=1", "query"),  # the query is not part of the path
        ("q.localhost", "/findings", "query"),
        ("q.localhost", "/search?x=1", None),
        ("q.localhost", "/fin", None),
        ("case.localhost", "/Admin", "case"),
        ("case.localhost", "/admin", None),  # paths are case-sensitive
        ("app.localhost.", "/", None),  # a trailing dot is another name
        ("nowhere.localhost", "/", None),
    ],
)
def test_the_route_envoy_would_pick(table: RouteTable, host: str, path: str, expected: str | None) -> None:
    found = table.match(host, path)
    assert (found.id if found else None) == expected


@pytest.mark.parametrize(
    "path",
    ["//x", "/a//b", "/./x", "/a/./b", "/a/.", "/../x", "/a/..", "/a\\b", "/a/b/../c?q"],
)
def test_paths_a_generated_config_would_normalise_are_refused(path: str) -> None:
    assert path_refusal(path) is not None


@pytest.mark.parametrize("path", ["/", "/a.b", "/a/.hidden", "/..x", "/a/b?q=//x", "/v1/x..y"])
def test_normalised_paths_pass(path: str) -> None:
    assert path_refusal(path) is None


def _check(rt: Runtime, host: str, target: str, route_id: str = "") -> int:
    req = RequestContext.build(method="GET", host=host, target=target, scheme="http", route_id=route_id)
    return check_blocking(rt, req, 1_800_000_000.0).status


def test_a_check_without_a_route_id(make_config: Callable[..., Config]) -> None:
    off = Runtime.build(make_config(routes=ROUTES), MemoryStore())
    assert _check(off, "app.localhost", "/api/x") == 404  # matching is off by default
    on = Runtime.build(make_config(routes=ROUTES, route_matching="host_path"), MemoryStore())
    assert _check(on, "APP.localhost:8080", "/api/x") == 200  # upper case and a port, as Envoy ignores them
    assert _check(on, "nowhere.localhost", "/") == 404
    assert _check(on, "app.localhost", "/x", route_id="nope") == 404  # a present, unknown id: never matched
    assert _check(on, "app.localhost", "/x", route_id="api") == 200  # a known id wins over host and path
    assert _check(on, "app.localhost", "/api//x") == 400  # what the generated config would have normalised
    assert _check(on, "app.localhost", "/api/../x") == 400
    assert _check(off, "app.localhost", "/api//x", route_id="api") == 200  # Envoy normalised it already


def test_route_regexes_are_re2(make_config: Callable[..., Config]) -> None:
    with pytest.raises(ConfigError) as info:
        make_config(routes=[_route("r", "r.localhost", regex="(?<=a)b")])
    assert [str(p) for p in info.value.problems] == [
        "routes[0].regex: invalid regular expression (RE2, as Envoy): invalid perl operator: (?<="
    ]
    with pytest.raises(ConfigError, match=r"route_matching: .sometimes. is not one of off, host_path"):
        make_config(route_matching="sometimes")


@pytest.mark.parametrize(
    ("authority", "expected"),
    [
        ("app.localhost:8080", "app.localhost"),
        ("APP.localhost", "app.localhost"),
        ("app.localhost:x.public.example.com", "app.localhost"),  # Envoy cuts at the last colon, digits or not
        ("app.localhost:1,a.wild.localhost", "app.localhost"),
        ("app.localhost:", "app.localhost"),
        ("[::1]:8080", "[::1]"),
        ("[::1]", "[::1]"),
        ("[::1]x", "[::1]x"),
        ("app.localhost.", "app.localhost."),
    ],
)
def test_the_host_envoy_matches_on(authority: str, expected: str) -> None:
    from authz.check.routing import envoy_host

    assert envoy_host(authority) == expected


def test_a_port_that_is_no_port_never_moves_the_route(make_config: Callable[..., Config]) -> None:
    """`admin:x.public.localhost` goes to admin's virtual host in Envoy: authz judges admin's policy."""
    routes = [
        {"id": "admin", "from": "http://admin.localhost", "to": TO, "allowed_users": ["root@example.com"]},
        {"id": "pub", "from": "http://*.public.localhost", "to": TO, "allow_public_unauthenticated_access": True},
    ]
    rt = Runtime.build(make_config(routes=routes, route_matching="host_path"), MemoryStore())
    for host in ("admin.localhost", "admin.localhost:x.public.localhost", "admin.localhost:1,x.public.localhost"):
        assert _check(rt, host, "/") == 302, host  # sign in first: never the public route's allow
    assert _check(rt, "x.public.localhost", "/") == 200
