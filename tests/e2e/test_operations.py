"""Metrics and decision logs of a running `authz serve` (two workers) behind the real Envoy.

Values move as Checks and sign-ins happen (scraped over HTTP, parsed with prometheus-client's
parser, summed across both workers); each worker shows its config's hash; the Grafana dashboard
asks only for metrics that exist; the decision line and Envoy's access line of a denial share the
request id of its 403 page; and no log line of the run holds the session cookie, the IdP's code,
its tokens or the assertion.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest

from authz.config.load import load_config
from authz.dev.stack import wait_until

from .conftest import METRICS_AUTH, Samples, Stack, _teardown, grpc_pass_only, launch_metered, scrape, total
from .loopback import browser, idp_login

pytestmark = [pytest.mark.e2e, grpc_pass_only("what metrics and logs count")]
DASHBOARD = Path(__file__).resolve().parents[2] / "grafana" / "authz-dashboard.json"


@pytest.fixture(scope="module")
def ops(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, str]]:
    running, url = launch_metered(tmp_path_factory.mktemp("ops"))
    yield running, url
    _teardown(running)


def test_the_scrape_needs_its_credentials(ops: tuple[Stack, str]) -> None:
    _, url = ops
    assert httpx2.get(url, timeout=10).status_code == 401
    assert httpx2.get(url, auth=(METRICS_AUTH[0], "wrong"), timeout=10).status_code == 401


def test_checks_move_the_counters_of_both_workers(ops: tuple[Stack, str]) -> None:
    stack, url = ops
    before = scrape(url)
    with stack.client("public.localhost") as client:
        assert [client.get("/").status_code for _ in range(30)] == [200] * 30
    with stack.client("nobody.localhost") as client:
        denied = [client.get("/", headers={"accept": "application/json"}).status_code for _ in range(7)]
    assert denied == [403] * 7

    def moved(samples: Samples) -> float:
        return total(samples, "authz_checks_total", route="public", decision="allow") - total(
            before, "authz_checks_total", route="public", decision="allow"
        )

    # Each worker writes its Checks' counts to its file once a second: the sum is there within that.
    wait_until(lambda: moved(scrape(url)) >= 30, 5, "30 allows counted")
    after = scrape(url)
    assert moved(after) == 30
    assert (
        total(after, "authz_checks_total", route="nobody", decision="deny")
        - total(before, "authz_checks_total", route="nobody", decision="deny")
        == 7
    )
    assert (
        total(after, "authz_check_duration_seconds_count", decision="allow")
        - total(before, "authz_check_duration_seconds_count", decision="allow")
        == 30
    )
    # Both workers answered some of them: each wrote its own file, the scrape added them up.
    per_worker = [v for (n, ls), v in after.items() if n == "authz_checks_total" and ("route", "public") in ls]
    assert sum(per_worker) >= 30


def test_each_worker_shows_the_hash_of_its_config(ops: tuple[Stack, str]) -> None:
    stack, url = ops
    digest = load_config(stack.config_path).digest
    hashes = {dict(ls)["worker"]: v for (n, ls), v in scrape(url).items() if n == "authz_config_hash"}
    assert hashes == {"0": int(digest[:13], 16), "1": int(digest[:13], 16)}
    assert total(scrape(url), "authz_store_up", store="session") == 1
    assert total(scrape(url), "authz_build_info") == 1


def test_the_dashboard_asks_only_for_metrics_that_exist(ops: tuple[Stack, str]) -> None:
    _, url = ops
    names = {name for name, _ in scrape(url)}
    exprs = [t["expr"] for panel in json.loads(DASHBOARD.read_text())["panels"] for t in panel["targets"]]
    asked = {m for expr in exprs for m in re.findall(r"\bauthz_[a-z_]+", expr)}
    assert len(asked) >= 14
    assert sorted(asked - names) == []


def test_metrics_are_never_served_on_a_route_host(ops: tuple[Stack, str]) -> None:
    stack, _ = ops
    for host in ("public.localhost", "authenticate.localhost"):
        answer = stack.get(host, "/metrics")
        assert "authz_checks_total" not in answer.text


def _decisions(stack: Stack) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in stack.authz.output().splitlines() if '"logger":"authz.decision"' in line]
    return [entry for entry in lines if entry.get("message") == "authorize check"]


def _access_lines(stack: Stack) -> list[dict[str, object]]:
    found = []
    for line in stack.envoy.output().splitlines():
        if '"logger":"envoy.access"' in line:
            found.append(json.loads(line))
    return found


def test_a_denial_is_found_by_its_request_id_in_both_logs(ops: tuple[Stack, str]) -> None:
    stack, _ = ops
    answer = stack.get("nobody.localhost", "/private/thing?code=hush", headers={"accept": "application/json"})
    assert answer.status_code == 403
    request_id = answer.json()["request_id"]
    assert request_id and answer.headers["x-request-id"] == request_id
    wait_until(lambda: any(e["request-id"] == request_id for e in _decisions(stack)), 5, "the decision line")
    (line,) = [e for e in _decisions(stack) if e["request-id"] == request_id]
    assert line["decision"] == "deny" and line["status"] == 403 and line["envoy-route-id"] == "nobody"
    assert line["path"] == "/private/thing" and line["method"] == "GET" and line["ip"] == "127.0.0.1"
    assert isinstance(line["latency-us"], int) and line["latency-us"] >= 0
    wait_until(lambda: any(e["request-id"] == request_id for e in _access_lines(stack)), 10, "Envoy's access line")
    (access,) = [e for e in _access_lines(stack) if e["request-id"] == request_id]
    assert access["status"] == 403 and access["path"] == "/private/thing" and access["details"] == "ext_authz_denied"


def test_sign_in_moves_its_counters_and_no_log_line_holds_a_secret(ops: tuple[Stack, str]) -> None:
    stack, url = ops
    before = scrape(url)
    with browser() as client:
        page = client.get(stack.url("private.localhost", "/dash?x=1"))
        landed = idp_login(client, page, "alice")
        assert landed.status_code == 200
        steps = [urlsplit(str(r.url)) for r in landed.history]
        (callback,) = [s for s in steps if s.path == "/oauth2/callback"]
        code = parse_qs(callback.query)["code"][0]
        cookie = client.cookies.get("_pomerium", domain="private.localhost")
        assert cookie
        for _ in range(3):
            assert client.get(stack.url("private.localhost", "/x?token=querysecret")).status_code == 200
        assertion = stack.upstream.last().one("x-pomerium-jwt-assertion")
    after = scrape(url)
    assert total(after, "authz_sign_ins_total", outcome="ok") - total(before, "authz_sign_ins_total", outcome="ok") == 1
    assert (
        total(after, "authz_idp_requests_total", endpoint="token", outcome="ok")
        - total(before, "authz_idp_requests_total", endpoint="token", outcome="ok")
        == 1
    )
    assert total(after, "authz_idp_request_duration_seconds_count", endpoint="token") >= 1
    session = stack.session_of(cookie, "private.localhost")
    wait_until(lambda: sum(e.get("user") == session.user_id for e in _decisions(stack)) >= 3, 5, "allow lines")
    allowed = [e for e in _decisions(stack) if e.get("user") == session.user_id]
    assert {e["email"] for e in allowed} == {"alice@example.com"} and allowed[-1]["path"] == "/x"
    secrets_ = {
        "session cookie": cookie,
        "authorization code": code,
        "access token": session.access_token,
        "ID token": session.id_token,
        "refresh token": session.refresh_token,
        "assertion": assertion or "",
        "query value": "querysecret",
    }
    logs = {"authz": stack.authz.output(), "envoy": stack.envoy.output()}
    for what, secret in secrets_.items():
        assert len(secret) >= 8, what
        for name, text in logs.items():
            assert secret not in text, f"the {what} is in {name}'s log"
