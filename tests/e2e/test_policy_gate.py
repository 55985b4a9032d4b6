"""Policy language features through Envoy: a time-limited grant and a path deny that holds."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from .conftest import Stack, _launch, _teardown

pytestmark = pytest.mark.e2e


def test_a_date_limited_grant_expires_without_a_config_change(tmp_path: Path) -> None:
    until = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=6)
    grant = {
        "id": "contractor", "from": "http://contractor.localhost",
        "policy": {"allow": {"and": [{"email": "carol@example.com"}, {"date": {"before": until.isoformat()}}]}},
    }  # fmt: skip
    stack = _launch(tmp_path, extra_routes=[grant])
    try:
        cookie = stack.seed_session("contractor.localhost", user_id="u-carol", email="carol@example.com")
        headers = {"cookie": f"_pomerium={cookie}", "accept": "application/json"}
        assert datetime.now(UTC) < until
        assert stack.get("contractor.localhost", "/", headers=headers).status_code == 200
        time.sleep(max(0.0, (until - datetime.now(UTC)).total_seconds()) + 0.2)
        stack.upstream.clear()
        expired = stack.get("contractor.localhost", "/", headers=headers)
        assert expired.status_code == 403 and expired.json()["reasons"] == ["date-unauthorized"]
        assert stack.upstream.requests == []
    finally:
        _teardown(stack)


@pytest.mark.parametrize(
    "path",
    [
        "/admin",
        "/admin/users",
        "/admin?x=1",
        "/x/../admin",
        "/./admin",
        "//admin",
        "/%61dmin",
        "/adm%69n/x",
        "/%2e%2e/admin",
        "/x/%2e%2e/admin",
        "/admin%2Fx",
        "/admin%5Cx",
        "/public/..%2Fadmin",
        "/public/%2e%2e%2fadmin",
    ],
)
def test_http_path_deny_holds_against_path_variants(stack: Stack, path: str) -> None:
    response = stack.get("paths.localhost", path)
    assert response.status_code in (307, 400, 403), response.status_code
    if response.status_code == 307:  # Envoy unescaped a slash: the redirect lands on the deny too
        location = response.headers["location"]
        target = location if location.startswith("/") else location.split(f":{stack.envoy_port}", 1)[1]
        assert stack.get("paths.localhost", target).status_code == 403
    assert all(not r.path.lower().lstrip("/").startswith("admin") for r in stack.upstream.requests)


def test_http_path_deny_leaves_other_paths(stack: Stack) -> None:
    for path in ("/", "/public/admin", "/x/admin"):
        assert stack.get("paths.localhost", path).status_code == 200
