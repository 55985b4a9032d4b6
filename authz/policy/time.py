"""Time criteria that Pomerium keeps for its paid editions: `date`, `day_of_week`, `time_of_day`.

`after` is inclusive and `before` exclusive. `date` and `day_of_week` default to UTC;
`time_of_day` needs an IANA `timezone` and compares the local wall-clock time of `now` there,
so a skipped hour at spring-forward never occurs and both passes of a repeated hour count.
A `time_of_day` range whose `after` is later than its `before` crosses midnight.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from authz.errors import Problem
from authz.policy.ast import PolicyInput, Result, outcomes
from authz.policy.reasons import Reason
from authz.schema.reader import describe, suggest

DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_DAY_INDEX = {**{d: i for i, d in enumerate(DAYS)}, **{d[:3]: i for i, d in enumerate(DAYS)}}
_TWELVE_HOUR = re.compile(r"^(\d{1,2})(?::(\d{2}))?\s*([AaPp][Mm])$")
_TWENTY_FOUR = re.compile(r"^(\d{1,2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?$")


_DATE = outcomes(Reason.DATE_OK, Reason.DATE_UNAUTHORIZED)
_DAY_OF_WEEK = outcomes(Reason.DAY_OF_WEEK_OK, Reason.DAY_OF_WEEK_UNAUTHORIZED)
_TIME_OF_DAY = outcomes(Reason.TIME_OF_DAY_OK, Reason.TIME_OF_DAY_UNAUTHORIZED)


def _verdict(ok: bool, results: tuple[Result, Result]) -> Result:
    return results[0] if ok else results[1]


def parse_zone(value: Any, path: str, problems: list[Problem]) -> tzinfo | None:
    if not isinstance(value, str) or not value:
        problems.append(Problem(path, f"expected an IANA time zone name such as Europe/Berlin, got {describe(value)}"))
        return None
    if value.upper() == "UTC":
        return UTC
    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        problems.append(Problem(path, f"unknown time zone {value!r} (use an IANA name such as America/New_York)"))
        return None


def parse_instant(value: Any, zone: tzinfo, path: str, problems: list[Problem]) -> datetime | None:
    """ISO 8601 date or date-time; an offset in the value wins, else `zone` applies."""
    if isinstance(value, date) and not isinstance(value, datetime):
        value = value.isoformat()
    if not isinstance(value, str):
        problems.append(Problem(path, f"expected an ISO 8601 date or date-time, got {describe(value)}"))
        return None
    text = value.strip()
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            parsed = datetime.combine(date.fromisoformat(text), time(0, 0))
        else:
            parsed = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        problems.append(Problem(path, f"invalid ISO 8601 date-time {value!r} (e.g. 2026-01-31T17:00:00Z)"))
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=zone)


def parse_clock(value: Any, path: str, problems: list[Problem]) -> time | None:
    """`15:04`, `15:04:05`, `15:04:05.999999999`, `3:04 PM`, `3:04PM`, `3 PM`, `3PM`."""
    if not isinstance(value, str):
        problems.append(Problem(path, f"expected a time of day such as '9:00' or '5 PM', got {describe(value)}"))
        return None
    text = value.strip()
    if match := _TWELVE_HOUR.match(text):
        hour, minute = int(match.group(1)), int(match.group(2) or 0)
        if 1 <= hour <= 12 and minute < 60:
            hour = hour % 12 + (12 if match.group(3).lower() == "pm" else 0)
            return time(hour, minute)
    elif match := _TWENTY_FOUR.match(text):
        hour, minute, second = int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)
        micro = int((match.group(4) or "0").ljust(9, "0")[:6])
        if hour < 24 and minute < 60 and second < 60:
            return time(hour, minute, second, micro)
    problems.append(Problem(path, f"invalid time of day {value!r} (use 15:04, 15:04:05, 3:04 PM or 3PM)"))
    return None


def _keys(value: Any, path: str, problems: list[Problem], allowed: tuple[str, ...]) -> dict[str, Any] | None:
    if not isinstance(value, dict):
        problems.append(Problem(path, f"expected an object with {', '.join(allowed)}, got {describe(value)}"))
        return None
    ok = True
    for key in value:
        if key not in allowed:
            problems.append(
                Problem(f"{path}.{key}", f"unknown key{suggest(str(key), allowed)} (known: {', '.join(allowed)})")
            )
            ok = False
    return value if ok else None


@dataclass(frozen=True, slots=True)
class DateRange:
    after: datetime | None
    before: datetime | None
    name = "date"

    def evaluate(self, inp: PolicyInput) -> Result:
        now = inp.now
        ok = (self.after is None or now >= self.after) and (self.before is None or now < self.before)
        return _verdict(ok, _DATE)


def parse_date(value: Any, sub: str, path: str, problems: list[Problem]) -> DateRange | None:
    data = _keys(value, path, problems, ("after", "before", "timezone"))
    if data is None:
        return None
    zone = parse_zone(data["timezone"], f"{path}.timezone", problems) if "timezone" in data else UTC
    if zone is None:
        return None
    if "after" not in data and "before" not in data:
        problems.append(Problem(path, "set after, before or both"))
        return None
    after = parse_instant(data["after"], zone, f"{path}.after", problems) if "after" in data else None
    before = parse_instant(data["before"], zone, f"{path}.before", problems) if "before" in data else None
    if ("after" in data and after is None) or ("before" in data and before is None):
        return None
    if after is not None and before is not None and after >= before:
        problems.append(Problem(path, "after must be earlier than before"))
        return None
    return DateRange(after, before)


@dataclass(frozen=True, slots=True)
class DayOfWeek:
    days: frozenset[int]
    zone: tzinfo
    name = "day_of_week"

    def evaluate(self, inp: PolicyInput) -> Result:
        return _verdict(inp.now.astimezone(self.zone).weekday() in self.days, _DAY_OF_WEEK)


def _parse_days(text: str, path: str, problems: list[Problem]) -> frozenset[int] | None:
    spec = text.strip().lower()
    if spec == "*":
        return frozenset(range(7))
    days: set[int] = set()
    for part in (p.strip() for p in spec.split(",")):
        first, dash, last = part.partition("-")
        names = [first.strip(), last.strip()] if dash else [first]
        indexes = []
        for day in names:
            if day not in _DAY_INDEX:
                problems.append(
                    Problem(path, f"unknown day {day!r}{suggest(day, _DAY_INDEX)} (mon..sun or full names)")
                )
                return None
            indexes.append(_DAY_INDEX[day])
        if dash:
            start, end = indexes
            days.update((start + i) % 7 for i in range((end - start) % 7 + 1))  # ranges wrap: fri-mon
        else:
            days.add(indexes[0])
    return frozenset(days)


def parse_day_of_week(value: Any, sub: str, path: str, problems: list[Problem]) -> DayOfWeek | None:
    zone: tzinfo | None = UTC
    spec = value
    if isinstance(value, dict):
        data = _keys(value, path, problems, ("is", "timezone"))
        if data is None:
            return None
        if "timezone" in data:
            zone = parse_zone(data["timezone"], f"{path}.timezone", problems)
        spec = data.get("is")
        path = f"{path}.is"
    if not isinstance(spec, str) or not spec.strip():
        problems.append(Problem(path, f"expected days such as 'mon-fri' or 'mon,wed,fri', got {describe(spec)}"))
        return None
    days = _parse_days(spec, path, problems)
    return DayOfWeek(days, zone) if days is not None and zone is not None else None


@dataclass(frozen=True, slots=True)
class TimeOfDay:
    after: time | None
    before: time | None
    zone: tzinfo
    name = "time_of_day"

    def evaluate(self, inp: PolicyInput) -> Result:
        local = inp.now.astimezone(self.zone).time().replace(tzinfo=None)
        after, before = self.after, self.before
        if after is not None and before is not None and after > before:
            ok = local >= after or local < before  # crosses midnight
        else:
            ok = (after is None or local >= after) and (before is None or local < before)
        return _verdict(ok, _TIME_OF_DAY)


def parse_time_of_day(value: Any, sub: str, path: str, problems: list[Problem]) -> TimeOfDay | None:
    data = _keys(value, path, problems, ("after", "before", "timezone"))
    if data is None:
        return None
    if "timezone" not in data:
        problems.append(Problem(path, "timezone is required (an IANA name such as America/Phoenix)"))
        return None
    zone = parse_zone(data["timezone"], f"{path}.timezone", problems)
    if "after" not in data and "before" not in data:
        problems.append(Problem(path, "set after, before or both"))
        return None
    after = parse_clock(data["after"], f"{path}.after", problems) if "after" in data else None
    before = parse_clock(data["before"], f"{path}.before", problems) if "before" in data else None
    if zone is None or ("after" in data and after is None) or ("before" in data and before is None):
        return None
    if after is not None and after == before:
        problems.append(Problem(path, "after and before are equal: the range is empty"))
        return None
    return TimeOfDay(after, before, zone)
