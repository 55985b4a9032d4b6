"""A route's `jit:` block: defaults, every check with its path, and secrets never echoed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from authz.config import Config
from authz.errors import ConfigError

APPROVERS = [{"allow": {"or": [{"groups": {"has": "admins"}}]}}]


def _routes(jit: Any, **route: Any) -> list[dict[str, Any]]:
    return [{"id": "app", "from": "http://app.localhost", "to": "http://127.0.0.1:1", "allowed_users": ["x"],
             "jit": jit, **route}]  # fmt: skip


def problems(make_config: Callable[..., Config], jit: Any, **route: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        make_config(routes=_routes(jit, **route))
    return [str(p) for p in info.value.problems]


def test_defaults(make_config: Callable[..., Config]) -> None:
    jit = make_config(routes=_routes({"approvers": APPROVERS})).routes[0].jit
    assert jit is not None
    assert (jit.max_duration, jit.default_duration, jit.reason_required) == (8 * 3600, 3600, False)
    assert jit.notify_url is None and jit.notify_secret is None and jit.max_stream_duration == 900
    assert len(jit.approvers.allow) == 1
    short = make_config(routes=_routes({"approvers": APPROVERS, "max_duration": "20m"})).routes[0].jit
    assert short is not None and short.default_duration == 1200  # the default never passes the maximum
    assert make_config().routes[0].jit is None


def test_every_option(make_config: Callable[..., Config], tmp_path: Path) -> None:
    (tmp_path / "hook").write_text("https://hooks.slack.com/services/T0/B0/secretpart\n")
    (tmp_path / "key").write_text("0123456789abcdef0123\n")
    jit = make_config(routes=_routes({
        "approvers": {"allow": {"and": [{"email": {"is": "a@example.com"}}]}}, "max_duration": "4h",
        "default_duration": "45m", "reason_required": True, "notify_url_file": "hook", "notify_secret_file": "key",
        "max_stream_duration": "5m",
    })).routes[0].jit  # fmt: skip
    assert jit is not None and jit.max_duration == 14400 and jit.default_duration == 2700 and jit.reason_required
    assert jit.notify_url is not None and jit.notify_url.value == b"https://hooks.slack.com/services/T0/B0/secretpart"
    assert jit.notify_secret is not None and jit.notify_secret.value == b"0123456789abcdef0123"
    assert jit.max_stream_duration == 300
    assert "secretpart" not in repr(jit)


@pytest.mark.parametrize(
    ("jit", "expected"),
    [
        ({}, "routes[0].jit.approvers: is required: a policy (as `policy`) that says who may approve"),
        ({"approvers": [{"allow": {"or": [{"emial": {"is": "x"}}]}}]}, "routes[0].jit.approvers[0].allow.or[0]"),
        ({"approvers": APPROVERS, "max_duration": "0s"}, "routes[0].jit.max_duration: must be at least 1s"),
        ({"approvers": APPROVERS, "default_duration": "-1m"}, "routes[0].jit.default_duration: invalid duration"),
        ({"approvers": APPROVERS, "max_duration": "1h", "default_duration": "2h"},
         "routes[0].jit.default_duration: must not be longer than max_duration"),
        ({"approvers": APPROVERS, "max_stream_duration": "soon"}, "routes[0].jit.max_stream_duration: invalid"),
        ({"approvers": APPROVERS, "reason_required": "yes"}, "routes[0].jit.reason_required"),
        ({"approvers": APPROVERS, "notify_url": "http://hooks.example.com/x"},
         "routes[0].jit.notify_url: must be https (http only to a loopback address); value not shown"),
        ({"approvers": APPROVERS, "notify_url": "ftp://x"}, "routes[0].jit.notify_url: expected an https URL"),
        ({"approvers": APPROVERS, "notify_url": "https://x", "notify_url_file": "f"},
         "routes[0].jit.notify_url: set either notify_url or notify_url_file, not both"),
        ({"approvers": APPROVERS, "notify_url_file": "missing"}, "routes[0].jit.notify_url_file: cannot read"),
        ({"approvers": APPROVERS, "notify_url": "https://x.example", "notify_secret": "short"},
         "routes[0].jit.notify_secret: must be at least 16 characters (value not shown)"),
        ({"approvers": APPROVERS, "notify_secret": "0123456789abcdefXYZ"},
         "routes[0].jit.notify_secret: signs notifications: set notify_url too"),
        ({"approvers": APPROVERS, "notfy_url": "x"},
         "routes[0].jit.notfy_url: unknown key (did you mean 'notify_url'?)"),
        ("yes", "routes[0].jit: expected a mapping"),
    ],
)  # fmt: skip
def test_problems_have_paths(make_config: Callable[..., Config], jit: Any, expected: str) -> None:
    out = problems(make_config, jit)
    assert any(p.startswith(expected) for p in out), out


def test_a_jit_route_names_its_id(make_config: Callable[..., Config]) -> None:
    route = {"from": "http://app.localhost", "to": "http://127.0.0.1:1", "jit": {"approvers": APPROVERS}}
    with pytest.raises(ConfigError) as info:
        make_config(routes=[route])
    assert [str(p) for p in info.value.problems] == [
        "routes[0].jit: a route with jit must set `id`: the grants API and CLI name routes by it"
    ]


def test_loopback_http_and_secrets_never_echoed(make_config: Callable[..., Config]) -> None:
    jit = make_config(routes=_routes({"approvers": APPROVERS, "notify_url": "http://127.0.0.1:9/hook"})).routes[0].jit
    assert jit is not None and jit.notify_url is not None
    out = problems(make_config, {"approvers": APPROVERS, "notify_url": "http://hooks.example.com/T0/secretpart"})
    assert not any("secretpart" in p for p in out)


def test_a_url_the_http_client_refuses_is_refused_at_load(make_config: Callable[..., Config]) -> None:
    out = problems(make_config, {"approvers": APPROVERS, "notify_url": "https://hooks.exa\u00admple.com/x"})
    assert out == ["routes[0].jit.notify_url: is not a URL the HTTP client accepts (value not shown)"]


def test_streams_longer_than_any_grant_are_a_warning(make_config: Callable[..., Config]) -> None:
    config = make_config(routes=_routes({"approvers": APPROVERS, "max_duration": "10m"}))
    assert any("streams may outlive the longest grant" in w for w in config.warnings)
    quiet = make_config(routes=_routes({"approvers": APPROVERS, "max_duration": "1h"}))
    assert not any("outlive" in w for w in quiet.warnings)
