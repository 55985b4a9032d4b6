"""Every bad policy is a config error with its path and, where it helps, a suggestion."""

from __future__ import annotations

from typing import Any

import pytest

from authz.cli.policy_eval import policy_from
from authz.errors import ConfigError


def errors(policy: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        policy_from(policy)
    return [str(p) for p in info.value.problems]


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (
            {"allow": {"or": [{"emial": "x"}]}},
            "policy.allow.or[0].emial: unknown criterion 'emial' (did you mean 'email'?)",
        ),
        ({"allow": {"or": [{"http_methd": "GET"}]}}, "did you mean 'http_method'?"),
        ({"alow": {"or": [{"accept": True}]}}, "policy.alow: unsupported action (did you mean 'allow'?)"),
        ({"allow": {"xor": [{"accept": True}]}}, "policy.allow.xor: unsupported conditional (did you mean 'or'?)"),
        ({"allow": {"or": {"accept": True}}}, "policy.allow.or: expected a list of criteria"),
        ({"allow": {"or": [{"accept": True, "reject": True}]}}, "exactly one key"),
        (
            {"allow": {"or": [{"email": {"ends_wth": "@x"}}]}},
            "policy.allow.or[0].email.ends_wth: unknown string matcher operator (did you mean 'ends_with'?)",
        ),
        ({"allow": {"or": [{"email": {"in": "a"}}]}}, "policy.allow.or[0].email.in: in requires a list of strings"),
        ({"allow": {"or": [{"email": 5}]}}, "policy.allow.or[0].email: expected a string or a matcher object, got 5"),
        ({"allow": {"or": [{"groups": {"hass": "a"}}]}}, "unknown list matcher operator (did you mean 'has'?)"),
        ({"allow": {"or": [{"accept": False}]}}, "policy.allow.or[0].accept: expected true, got False"),
        ({"allow": {"or": [{"claim": "x"}]}}, "policy.allow.or[0].claim: claim needs a claim name"),
        ({"allow": {"or": [{"email/x": "x"}]}}, "criterion 'email' takes no '/' sub-path"),
        (
            {"allow": {"or": [{"source_ip": "10.0.0.0/33"}]}},
            "policy.allow.or[0].source_ip: invalid IP or CIDR '10.0.0.0/33'",
        ),
        (
            {"allow": {"or": [{"source_ip": ["10.0.0.1", "nope"]}]}},
            "policy.allow.or[0].source_ip[1]: invalid IP or CIDR 'nope'",
        ),
        (
            {"allow": {"or": [{"date": {"before": "2026-13-01"}}]}},
            "policy.allow.or[0].date.before: invalid ISO 8601 date-time",
        ),
        (
            {"allow": {"or": [{"date": {"after": "2026-02-01", "before": "2026-01-01"}}]}},
            "after must be earlier than before",
        ),
        (
            {"allow": {"or": [{"date": {"befor": "2026-01-01"}}]}},
            "policy.allow.or[0].date.befor: unknown key (did you mean 'before'?)",
        ),
        (
            {"allow": {"or": [{"date": {"before": "2026-01-01", "timezone": "Mars/Olympus"}}]}},
            "unknown time zone 'Mars/Olympus'",
        ),
        ({"allow": {"or": [{"time_of_day": {"after": "9:00"}}]}}, "timezone is required"),
        ({"allow": {"or": [{"time_of_day": {"after": "25:00", "timezone": "UTC"}}]}}, "invalid time of day '25:00'"),
        ({"allow": {"or": [{"time_of_day": {"after": "13 PM", "timezone": "UTC"}}]}}, "invalid time of day '13 PM'"),
        (
            {"allow": {"or": [{"time_of_day": {"after": "9:00", "before": "9:00", "timezone": "UTC"}}]}},
            "the range is empty",
        ),
        ({"allow": {"or": [{"time_of_day": {"after": 540, "timezone": "UTC"}}]}}, "expected a time of day"),
        (
            {"allow": {"or": [{"day_of_week": "mon-fry"}]}},
            "policy.allow.or[0].day_of_week: unknown day 'fry' (did you mean",
        ),
        ({"allow": {"or": [{"day_of_week": {"is": "mon", "timezone": "Nowhere"}}]}}, "unknown time zone 'Nowhere'"),
        ({"allow": {"or": [{"client_certificate": {"fingerprint": "abc"}}]}}, "unsupported fingerprint format"),
        ({"allow": {"or": [{"client_certificate": {"spki_hash": "abc"}}]}}, "spki_hash must be a base64 SHA-256 hash"),
        ({"allow": {"or": [{"client_certificate": {"san_ip": "x"}}]}}, "unsupported certificate matcher"),
        ({"allow": {"or": [{"device": {"approved": True}}]}}, "criterion 'device' is a Pomerium feature not supported"),
        ({"allow": {"or": [{"mcp_tool": "x"}]}}, "criterion 'mcp_tool' is a Pomerium feature not supported"),
        ({"allow": {"or": [{"ssh_username": "x"}]}}, "criterion 'ssh_username' is a Pomerium feature not supported"),
        ({"allow": {"or": [{"record": {}}]}}, "criterion 'record' is a Pomerium feature not supported"),
        ("allow everyone", "expected a rule with allow/deny"),
        ({"allow_public_unauthenticated_access": True, "allowed_users": ["a"]}, "cannot be combined"),
        ({"allowed_idp_claims": {"groups": [{"x": 1}]}}, "allowed_idp_claims: claim 'groups'"),
        ({"alowed_users": ["a"]}, "policy.alowed_users: unknown key (did you mean 'allowed_users'?)"),
    ],
)
def test_policy_errors(policy: Any, expected: str) -> None:
    out = errors(policy)
    assert any(expected in line for line in out), out


def test_all_problems_are_reported_at_once() -> None:
    out = errors({"allow": {"or": [{"emial": "x"}, {"source_ip": "bad"}]}, "deny": {"and": [{"date": {}}]}})
    assert len(out) == 3
