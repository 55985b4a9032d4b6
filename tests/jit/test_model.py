"""Grant values: durations both ways, the expiry instant, and the API's shape."""

from __future__ import annotations

import re

import pytest

from authz.jit.model import Grant, Status, clean_reason, format_duration, parse_request_duration, rfc3339

NOW = 1_800_000_000


@pytest.mark.parametrize(("seconds", "text"), [(0, "0s"), (1, "1s"), (90, "1m30s"), (1800, "30m"), (5400, "1h30m"),
                                               (86400, "24h"), (3661, "1h1m1s")])  # fmt: skip
def test_format_duration(seconds: int, text: str) -> None:
    assert format_duration(seconds) == text
    if seconds:
        assert parse_request_duration(text, 10**9) == seconds


@pytest.mark.parametrize(
    ("value", "message"),
    [("0s", "at least 1s"), ("500ms", "at least 1s"), ("2h", "longer than this route allows (1h)"),
     ("soon", "invalid duration"), (30, "must be a string"), (None, "must be a string"), ("-5m", "invalid duration")],
)  # fmt: skip
def test_a_bad_duration_says_why(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_request_duration(value, 3600)


def test_the_maximum_itself_is_allowed() -> None:
    assert parse_request_duration("1h", 3600) == 3600
    assert parse_request_duration("90.5s", 3600) == 90  # whole seconds


def test_reasons_are_bounded_text() -> None:
    assert clean_reason("  on call\nincident 7\t ") == "on call\nincident 7"
    for bad, message in (("x" * 1001, "longer than 1000"), ("a\x00b", "control"), ("\ud800", "control"), (5, "string")):
        with pytest.raises(ValueError, match=message):
            clean_reason(bad)


def test_a_grant_works_until_the_second_it_expires() -> None:
    grant = Grant("g", "app", "bob", "bob@x", Status.ACTIVE, "", 60, NOW, "alice", NOW, NOW + 60)
    assert grant.works_at(NOW + 59.999)
    assert not grant.works_at(NOW + 60)
    assert grant.status_at(NOW + 59) is Status.ACTIVE and grant.status_at(NOW + 60) is Status.EXPIRED
    pending = Grant("g", "app", "bob", "bob@x", Status.PENDING, "", 60, NOW)
    assert not pending.works_at(NOW) and pending.status_at(NOW + 10**6) is Status.PENDING


def test_the_api_shape() -> None:
    pending = Grant("g1", "app", "bob", "bob@example.com", Status.PENDING, "why", 1800, NOW)
    assert pending.to_json(NOW) == {
        "id": "g1", "route": "app", "user": "bob", "email": "bob@example.com", "status": "pending", "reason": "why",
        "created_at": "2027-01-15T08:00:00Z", "duration": "30m",
    }  # fmt: skip
    active = Grant("g1", "app", "bob", "bob@example.com", Status.ACTIVE, "why", 60, NOW, "alice", NOW + 5, NOW + 65)
    shown = active.to_json(NOW + 10)
    assert shown["status"] == "active" and shown["expires_at"] == rfc3339(NOW + 65) == "2027-01-15T08:01:05Z"
    assert shown["decided_by"] == "alice" and shown["decided_at"] == "2027-01-15T08:00:05Z"
    assert active.to_json(NOW + 65)["status"] == "expired"
    assert Grant.from_row(active.to_row()) == active


def test_reasons_refuse_invisible_formatting() -> None:
    for hidden in ("\u202etxt.exe", "a\u2028b", "a\u200bb", "\u0085"):
        with pytest.raises(ValueError, match="control or invisible"):
            clean_reason(hidden)
    assert clean_reason("caf\u00e9 \u2013 na\u00efve \u2713") == "caf\u00e9 \u2013 na\u00efve \u2713"


def test_durations_are_ascii_and_errors_short() -> None:
    for exotic in ("\u0663\u0660m", "\uff11h"):  # Arabic-Indic and fullwidth digits
        with pytest.raises(ValueError, match="invalid duration"):
            parse_request_duration(exotic, 10**6)
    with pytest.raises(ValueError) as info:
        parse_request_duration("1h" * 3000, 3600)
    assert len(str(info.value)) < 200
