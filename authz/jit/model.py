"""Just-in-time access as values: a grant, its status, and the audit records of what happened to it.

A grant moves `pending` → `active` (approved) or `rejected`; `active` → `revoked` or `expired`.
Nothing else: every change is a compare-and-set on the status it expects, so two approvers, or an
approver and the sweeper, never both win. An active grant works while `now < expires_at` — the
clock decides, not the recorded status, so it stops to the second even before the sweeper records
the expiry.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from authz.schema.reader import parse_duration


class Status(StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    REJECTED = "rejected"
    REVOKED = "revoked"
    EXPIRED = "expired"


class Event(StrEnum):
    """What happened to a grant: one audit record and (with `notify_url`) one notification each."""

    REQUESTED = "requested"
    APPROVED = "approved"
    REJECTED = "rejected"
    REVOKED = "revoked"
    EXPIRED = "expired"


JIT_PAGE = "/.pomerium/jit"  # on the authenticate host: requests, approvals and the audit trail
CLI_ACTOR = "cli"  # decided_by for the operator CLI (break-glass without a browser)
SWEEPER_ACTOR = "authz"  # the expiry, recorded by whichever worker holds the sweeper lease
MAX_REASON = 1000  # characters of a request's reason kept (a longer one is refused)
_UNITS = (("h", 3600), ("m", 60), ("s", 1))
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
_HIDDEN = frozenset({"Cf", "Zl", "Zp", "Co", "Cn"})  # format (bidi overrides), separators, unassigned


def format_duration(seconds: int) -> str:
    """Whole seconds as a Go-style duration: 1800 → `30m`, 5400 → `1h30m`, 0 → `0s`."""
    if seconds <= 0:
        return "0s"
    parts = []
    for unit, size in _UNITS:
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def parse_request_duration(text: object, maximum: float) -> int:
    """A wanted duration (Go-style, `90s`, `1h30m`) as whole seconds, at least 1 and at most
    `maximum`; ValueError with a message fit for the requester otherwise."""
    if not isinstance(text, str):
        raise ValueError("duration must be a string such as '30m' or '1h30m'")
    seconds = parse_duration(text)
    if seconds < 1:
        raise ValueError("duration must be at least 1s")
    if seconds > maximum:
        raise ValueError(
            f"duration {text.strip()[:40]} is longer than this route allows ({format_duration(int(maximum))})"
        )
    return int(seconds)


def clean_reason(text: object) -> str:
    """A requester's reason: a string of at most MAX_REASON characters without control or format
    characters (line breaks and tabs allowed; no bidirectional overrides, no line or paragraph
    separators, which disguise text on pages and in chat), stripped; ValueError otherwise."""
    if not isinstance(text, str):
        raise ValueError("reason must be a string")
    if len(text) > MAX_REASON:
        raise ValueError(f"reason is longer than {MAX_REASON} characters")
    if _CONTROL.search(text) or any(unicodedata.category(c) in _HIDDEN for c in text if not c.isascii()):
        raise ValueError("reason contains control or invisible formatting characters")
    return text.strip()


def rfc3339(at: float) -> str:
    """A UTC time as RFC 3339 with a `Z`, to the second."""
    return datetime.fromtimestamp(int(at), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class Grant:
    """One request for access to one route by one user, and what became of it."""

    id: str
    route: str
    user: str
    email: str
    status: Status
    reason: str
    duration: int  # seconds: what was asked for, then (once approved) what was granted
    created_at: int
    decided_by: str = ""
    decided_at: int = 0
    expires_at: int = 0  # set when approved; the grant works while now < expires_at

    def works_at(self, now: float) -> bool:
        """Whether this grant lets its user in at `now` (the clock decides, not the recorded status)."""
        return self.status is Status.ACTIVE and now < self.expires_at

    def status_at(self, now: float) -> Status:
        """The status as of `now`: an active grant past `expires_at` is expired even before the
        sweeper has recorded it."""
        if self.status is Status.ACTIVE and now >= self.expires_at:
            return Status.EXPIRED
        return self.status

    def to_json(self, now: float) -> dict[str, Any]:
        """The API's shape: times as RFC 3339 UTC, the duration Go-style, decisions once made."""
        out: dict[str, Any] = {
            "id": self.id,
            "route": self.route,
            "user": self.user,
            "email": self.email,
            "status": str(self.status_at(now)),
            "reason": self.reason,
            "created_at": rfc3339(self.created_at),
            "duration": format_duration(self.duration),
        }
        if self.decided_by:
            out["decided_by"] = self.decided_by
            out["decided_at"] = rfc3339(self.decided_at)
        if self.expires_at:
            out["expires_at"] = rfc3339(self.expires_at)
        return out

    def to_row(self) -> dict[str, Any]:
        """Every field as a JSON value, for a store."""
        return {
            "id": self.id, "route": self.route, "user": self.user, "email": self.email,
            "status": str(self.status), "reason": self.reason, "duration": self.duration,
            "created_at": self.created_at, "decided_by": self.decided_by, "decided_at": self.decided_at,
            "expires_at": self.expires_at,
        }  # fmt: skip

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Grant:
        return cls(**{**row, "status": Status(row["status"])})


@dataclass(frozen=True, slots=True)
class Record:
    """One audit record: who did what to which grant, when, and why (append-only)."""

    grant: str
    route: str
    event: Event
    actor: str  # a user id, `cli`, or `authz` (the sweeper)
    at: int
    detail: dict[str, Any] = field(default_factory=dict)  # reason, duration, expires_at, …

    def to_json(self) -> dict[str, Any]:
        return {"grant": self.grant, "route": self.route, "event": str(self.event), "actor": self.actor,
                "at": rfc3339(self.at), **({"detail": self.detail} if self.detail else {})}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Delivery:
    """A notification waiting in the store's outbox until its endpoint accepts it (at least once)."""

    id: str  # the event id a receiver de-duplicates on
    route: str
    body: str  # the JSON to POST, fixed when the event happened
    attempts: int = 0
    next_at: float = 0.0
