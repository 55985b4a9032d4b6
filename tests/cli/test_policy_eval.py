"""`authz policy eval`: human and JSON output, `--now`, exit codes 0 (allowed), 3 (not), 1 (error)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

BUSINESS_HOURS = {"after": "9:00", "before": "17:00", "timezone": "Europe/Berlin"}
POLICY = {"allow": {"and": [{"domain": "example.com"}, {"time_of_day": BUSINESS_HOURS}]}}
INPUT = {"request": {"method": "GET", "host": "app.example.com", "path": "/x?y=1"},
         "session": {"user": "u-1", "email": "ann@example.com"}, "now": "2026-01-05T12:00:00Z"}  # fmt: skip


def run(tmp_path: Path, *extra: str, policy: object = POLICY, data: object = INPUT) -> subprocess.CompletedProcess[str]:
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump(policy))
    (tmp_path / "input.yaml").write_text(yaml.safe_dump(data))
    return subprocess.run(
        [sys.executable, "-m", "authz", "policy", "eval", "--policy", str(tmp_path / "policy.yaml"),
         "--input", str(tmp_path / "input.yaml"), *extra],
        capture_output=True, text=True, check=False,
    )  # fmt: skip


def test_allowed_json(tmp_path: Path) -> None:
    out = run(tmp_path, "--json")
    assert out.returncode == 0
    assert json.loads(out.stdout) == {"allow": True, "deny": False, "allowed": True,
                                      "reasons": ["domain-ok", "time-of-day-ok"], "login": False}  # fmt: skip


def test_now_overrides_and_denial_exits_3(tmp_path: Path) -> None:
    out = run(tmp_path, "--json", "--now", "2026-01-05T20:00:00+00:00")
    assert out.returncode == 3
    assert json.loads(out.stdout)["reasons"] == ["time-of-day-unauthorized"]


def test_login_human_output(tmp_path: Path) -> None:
    out = run(tmp_path, data={**INPUT, "session": None})
    assert out.returncode == 3
    assert out.stdout.splitlines()[0] == "LOGIN REQUIRED: user-unauthenticated"


def test_legacy_route_mapping(tmp_path: Path) -> None:
    out = run(tmp_path, "--json", policy={"from": "https://app.example.com", "allowed_users": ["ann@example.com"]})
    assert out.returncode == 0 and json.loads(out.stdout)["reasons"] == ["email-ok"]


def test_errors_exit_1(tmp_path: Path) -> None:
    bad_policy = run(tmp_path, policy={"allow": {"or": [{"emial": "x"}]}})
    assert bad_policy.returncode == 1 and "did you mean 'email'" in bad_policy.stderr
    bad_input = run(tmp_path, data={"request": {"path": "/a%2Fb"}, "sesion": None})
    assert bad_input.returncode == 1
    assert "sesion: unknown key (did you mean 'session'?)" in bad_input.stderr
    assert "request.path" in bad_input.stderr
    bad_now = run(tmp_path, "--now", "yesterday")
    assert bad_now.returncode == 1 and "now: invalid RFC 3339 time" in bad_now.stderr
    assert "Traceback" not in bad_policy.stderr + bad_input.stderr + bad_now.stderr


def test_an_anonymous_request_a_deny_rule_needs_a_session_for_reports_sign_in(tmp_path: Path) -> None:
    """The reasons are the deciding side's: sign-in, not the `accept` that matched."""
    policy = {"allow": {"or": [{"accept": True}]}, "deny": {"or": [{"email": {"is": "blocked@example.com"}}]}}
    out = run(tmp_path, "--json", policy=policy, data={**INPUT, "session": None})
    assert out.returncode == 3
    assert json.loads(out.stdout) == {"allow": True, "deny": False, "allowed": False,
                                      "reasons": ["user-unauthenticated"], "login": True}  # fmt: skip
    human = run(tmp_path, policy=policy, data={**INPUT, "session": None})
    # The first line is the decision and its reasons; the sides' own traces follow.
    assert human.stdout.splitlines()[0] == "LOGIN REQUIRED: user-unauthenticated"
