"""`route_checksum`: what Envoy's route is made of, carried per route, checked on every Check."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from authz.check.request import RequestContext
from authz.check.run import check_blocking
from authz.config import Config
from authz.envoy.bootstrap import bootstrap
from authz.runtime.state import Runtime

ROUTE = {
    "id": "app",
    "from": "http://app.localhost",
    "to": "http://127.0.0.1:9000",
    "allow_public_unauthenticated_access": True,
}


def _checksum(make_config: Callable[..., Config], route: dict[str, Any]) -> str:
    return make_config(routes=[route]).routes[0].checksum


def test_the_policy_leaves_it_and_the_envoy_side_changes_it(make_config: Callable[..., Config]) -> None:
    base = _checksum(make_config, ROUTE)
    assert len(base) == 16
    shape = {k: v for k, v in ROUTE.items() if k != "allow_public_unauthenticated_access"}
    policies = [
        {"allowed_domains": ["example.com"]},
        {"policy": {"allow": {"or": [{"email": {"is": "a@example.com"}}]}}},
        {"allow_any_authenticated_user": True, "show_error_details": True},
    ]
    assert {_checksum(make_config, {**shape, **policy}) for policy in policies} == {base}
    changes = [{"prefix": "/api"}, {"to": "http://127.0.0.1:9001"}, {"timeout": "5s"}, {"allow_websockets": True},
               {"remove_request_headers": ["x-a"]}, {"from": "http://other.localhost"}]  # fmt: skip
    assert len({base, *(_checksum(make_config, {**ROUTE, **c}) for c in changes)}) == len(changes) + 1


def test_envoy_sends_it_with_the_route_id(make_config: Callable[..., Config]) -> None:
    config = make_config(routes=[ROUTE])
    text = str(bootstrap(config))
    assert f"'route_checksum': '{config.routes[0].checksum}'" in text
    assert f"'checksum': '{config.routes[0].checksum}'" in text  # route metadata, for the HTTP service


def test_a_check_with_another_checksum_is_404(make_config: Callable[..., Config]) -> None:
    config = make_config(routes=[ROUTE])
    rt = Runtime.build(config)

    def status(checksum: str) -> int:
        req = RequestContext.build(method="GET", host="app.localhost", target="/", route_id="app",
                                   route_checksum=checksum)  # fmt: skip
        return check_blocking(rt, req, time.time()).status

    assert status(config.routes[0].checksum) == 200
    assert status("") == 200  # a platform that sends no checksum (Istio, Contour): the id alone
    assert status("0123456789abcdef") == 404
