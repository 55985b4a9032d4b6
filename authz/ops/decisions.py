"""The decision log: one line per Check, JSON (or text), never a token, a cookie, a code or a query.

    {"time": 1796414400.123, "level": "info", "logger": "authz.decision", "message": "authorize check",
     "request-id": "…", "envoy-route-id": "grafana", "host": "grafana.example.com", "method": "GET",
     "path": "/d/abc", "ip": "203.0.113.7", "user": "…", "email": "ada@example.com",
     "decision": "deny", "status": 403, "reasons": ["email-unauthorized"], "latency-us": 87}

The fields between `message` and `decision` are Pomerium's `authorize_log_fields` (config/ops.py
says which exist and which are refused); `decision`, `status`, `reasons` and `latency-us` are the
evaluation's result and always there. Allows are sampled (`authorize_log_sample_rate`); every
other decision is logged, up to `authorize_log_rate_limit` lines a second, and the lines over it
are counted (`authz_decision_log_dropped_total`) and summed up in one warning line once the limit
lets lines through again.

Lines are written with one `write(2)` each, so lines from the Check threads never interleave.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from authz.config.model import LogSettings
from authz.ops.metrics import NO_METRICS, Recorder, decision_of

if TYPE_CHECKING:
    from authz.check.answer import Answer
    from authz.check.request import RequestContext

MAX_VALUE = 512  # a logged header or path longer than this is cut (a log line is not a data channel)
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_HEAD = {"level": "info", "logger": "authz.decision", "message": "authorize check"}
_TEXT_HEAD = frozenset(("time", *_HEAD))
_HEAD_JSON = _encode(_HEAD)[1:-1]
_quote = json.encoder.encode_basestring  # C-accelerated; keeps non-ASCII as is, escapes the rest


def _cut(value: str) -> str:
    return value if len(value) <= MAX_VALUE else value[:MAX_VALUE] + "…"


def _path(req: RequestContext, ans: Answer) -> str:
    """The path as sent, without the query string (codes, tokens) or a fragment."""
    path = req.raw_path
    if "?" in path or "#" in path:
        path = path.partition("?")[0].partition("#")[0]
    return path if len(path) <= MAX_VALUE else _cut(path)


# The selectable fields (names as Pomerium's `authorize_log_fields`); `headers.<name>` is built
# per config (refusals are at load).
_FIELDS: dict[str, Callable[[RequestContext, Answer], str]] = {
    "request-id": lambda req, ans: req.request_id,
    "envoy-route-id": lambda req, ans: ans.route_id or req.route_id,
    "host": lambda req, ans: _cut(req.host),
    "method": lambda req, ans: req.method,
    "path": _path,
    "ip": lambda req, ans: req.source_ip,
    "user": lambda req, ans: ans.user,
    "email": lambda req, ans: ans.email,
}


def _header(name: str) -> Callable[[RequestContext, Answer], str]:
    return lambda req, ans: _cut(req.headers.get(name, ""))


def text_value(value: object) -> str:
    """A value for a text line: bare when plain, else JSON-quoted (no line breaks, no spoofed fields)."""
    text = value if isinstance(value, str) else _encode(value)
    if text and all(c.isalnum() or c in "-_.:/@,[]" for c in text):
        return text
    return _encode(text)


class DecisionLog:
    """Writes the decision lines of one config (a reload builds a new one)."""

    def __init__(
        self,
        settings: LogSettings,
        metrics: Recorder = NO_METRICS,
        write: Callable[[bytes], object] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.fields = settings.fields
        self.getters = tuple(
            (name, _FIELDS[name] if name in _FIELDS else _header(name[len("headers.") :])) for name in settings.fields
        )
        self.keys = tuple((_quote(name) + ":", getter) for name, getter in self.getters)  # JSON keys, quoted once
        self.sample_rate = settings.sample_rate
        self.text = settings.format == "text"
        self.limit = float(settings.rate_limit)  # lines a second for non-allows; 0: no limit
        self.metrics = metrics
        self.write = write or (lambda data: os.write(2, data))
        self.clock = clock
        self._tokens = self.limit
        self._refilled = clock()
        self._dropped = 0
        self._lock = threading.Lock()

    def record(self, req: RequestContext, ans: Answer, seconds: float) -> None:
        """Log one Check's decision, unless sampling or the rate limit leaves it out."""
        if ans.allowed:
            if self.sample_rate < 1.0 and random.random() >= self.sample_rate:  # noqa: S311 - sampling, not a secret
                return
            decision = "allow"
        else:
            decision = decision_of(False, ans.status)
            if self.limit and not self._admit(decision):
                return
        if self.text:
            entry: dict[str, object] = {"time": round(self.clock(), 3), **_HEAD}
            for name, getter in self.getters:
                entry[name] = getter(req, ans)
            entry.update(
                decision=decision, status=ans.status, reasons=ans.reasons, **{"latency-us": int(seconds * 1e6)}
            )
            self._emit(entry)
            return
        # JSON by hand: what json.dumps would write for the same entry, in a third of the time
        # (every string value goes through the json module's own escaping).
        fields = "".join([key + _quote(getter(req, ans)) + "," for key, getter in self.keys])
        reasons = ",".join([_quote(reason) for reason in ans.reasons])
        line = (
            f'{{"time":{self.clock():.3f},{_HEAD_JSON},{fields}"decision":"{decision}","status":{ans.status},'
            f'"reasons":[{reasons}],"latency-us":{int(seconds * 1e6)}}}\n'
        )
        with contextlib.suppress(OSError):  # a closed or full stderr must never fail a Check
            self.write(line.encode("utf-8", "replace"))

    def _admit(self, decision: str) -> bool:
        """Take a token from the bucket (refilled at `limit` a second, holding a second's worth)."""
        with self._lock:
            now = self.clock()
            self._tokens = min(self.limit, self._tokens + (now - self._refilled) * self.limit)
            self._refilled = now
            if self._tokens < 1.0:
                self._dropped += 1
                dropped = True
            else:
                self._tokens -= 1.0
                dropped, count, self._dropped = False, self._dropped, 0
        if dropped:
            self.metrics.log_dropped(decision)
            return False
        if count:
            self._emit(
                {"time": round(now, 3), "level": "warning", "logger": "authz.decision",
                 "message": "decision log lines dropped by authorize_log_rate_limit", "dropped": count}
            )  # fmt: skip
        return True

    def _emit(self, entry: dict[str, object]) -> None:
        if self.text:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(float(entry["time"])))  # type: ignore[arg-type]
            head = f"{stamp}Z {str(entry['level']).upper()} {entry['logger']}: {entry['message']}"
            rest = " ".join(f"{k}={text_value(v)}" for k, v in entry.items() if k not in _TEXT_HEAD)
            line = f"{head} {rest}\n"
        else:
            line = _encode(entry) + "\n"
        with contextlib.suppress(OSError):  # a closed or full stderr must never fail a Check
            self.write(line.encode("utf-8", "replace"))
