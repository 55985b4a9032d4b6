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

Lines are queued and written by one thread (`LineWriter`), whole lines per `write(2)`, so lines
from the Check threads never interleave and a Check never waits on stderr.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from authz.config.model import LogSettings
from authz.ops.metrics import NO_METRICS, Recorder, decision_of

if TYPE_CHECKING:
    from authz.check.answer import Answer
    from authz.check.request import RequestContext

MAX_VALUE = 512  # characters of one value; more is cut (a log line is not a data channel)
MAX_LINE = 4095  # bytes: under PIPE_BUF, so one write(2) to a pipe is atomic and lines never interleave
# A line over MAX_LINE is built again with values cut shorter, until it fits: (the request's own
# fields, the headers' values), in characters; 0 leaves them out.
_CUTS = ((MAX_VALUE, 128), (MAX_VALUE, 32), (MAX_VALUE, 0), (128, 0), (32, 0))
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_HEAD = {"level": "info", "logger": "authz.decision", "message": "authorize check"}
_TEXT_HEAD = frozenset(("time", *_HEAD))
_HEAD_JSON = _encode(_HEAD)[1:-1]
_quote = json.encoder.encode_basestring  # C-accelerated; keeps non-ASCII as is, escapes the rest
# Line breaks for readers that split on more than \n (Python's splitlines, JavaScript): the json
# module leaves these as they are with ensure_ascii=False; they only ever occur inside strings.
_BREAKS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def _unbroken(text: str) -> str:
    if "\x85" in text or "\u2028" in text or "\u2029" in text:
        return text.translate(_BREAKS)
    return text


def quote(value: object) -> str:
    """A JSON string or value on one line for every reader."""
    return _unbroken(_encode(value))


def _path(req: RequestContext, ans: Answer) -> str:
    """The path as sent, without the query string (codes, tokens) or a fragment."""
    path = req.raw_path
    if "?" in path or "#" in path:
        path = path.partition("?")[0].partition("#")[0]
    return path


# The selectable fields (names as Pomerium's `authorize_log_fields`); `headers.<name>` is built
# per config (refusals are at load). Every value is cut to MAX_VALUE when the line is built.
_FIELDS: dict[str, Callable[[RequestContext, Answer], str]] = {
    "request-id": lambda req, ans: req.request_id,
    "envoy-route-id": lambda req, ans: ans.route_id or req.route_id,
    "host": lambda req, ans: req.host,
    "method": lambda req, ans: req.method,
    "path": _path,
    "ip": lambda req, ans: req.source_ip,
    "user": lambda req, ans: ans.user,
    "email": lambda req, ans: ans.email,
}


def _header(name: str) -> Callable[[RequestContext, Answer], str]:
    return lambda req, ans: req.headers.get(name, "")


def text_value(value: object) -> str:
    """A value for a text line: bare when plain, else JSON-quoted (no line breaks, no spoofed fields)."""
    text = value if isinstance(value, str) else _encode(value)
    if text and all(c.isalnum() or c in "-_.:/@,[]" for c in text):
        return text
    return quote(text)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:  # a short write (a full disk, a signal) goes on from where it stopped
        view = view[os.write(fd, view) :]


class LineWriter:
    """Decision lines queued by the Check threads and written by one thread of its own.

    A write(2) releases the GIL, and in a busy thread pool every release hands the GIL to another
    thread: a write per Check cost about 30 µs of CPU end to end where the line itself costs 5. So
    a Check only appends its line (deque.append: atomic, no lock), and this thread writes what is
    queued every `interval`, whole lines in writes of at most MAX_LINE + 1 bytes (PIPE_BUF: lines
    of several processes on one pipe never interleave). A process that is killed loses at most
    the last `interval` of lines; `flush` (at exit) writes the rest. Past `limit` queued lines
    (stderr blocked) new lines are dropped and counted rather than held in memory."""

    def __init__(self, fd: int = 2, interval: float = 0.05, limit: int = 100_000) -> None:
        self.fd = fd
        self.interval = interval
        self.limit = limit
        self._queue: deque[bytes] = deque()
        self._lock = threading.Lock()  # one writer at a time: the thread, or `flush` at exit
        self._thread: threading.Thread | None = None
        self._started = threading.Lock()

    def put(self, line: bytes) -> bool:
        """Queue one line; False when it was dropped (the queue is full)."""
        if len(self._queue) >= self.limit:
            return False
        self._queue.append(line)
        if self._thread is None:
            self._start()
        return True

    def _start(self) -> None:
        with self._started:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="authz-decision-log", daemon=True)
                self._thread.start()
                atexit.register(self.flush)

    def _run(self) -> None:
        while True:
            time.sleep(self.interval)
            self.flush()

    def flush(self) -> None:
        """Write every queued line now."""
        with self._lock:
            queue, size = self._queue, 0
            chunk: list[bytes] = []
            while queue:
                line = queue.popleft()
                if size + len(line) > MAX_LINE + 1 and chunk:
                    self._write(b"".join(chunk))
                    chunk, size = [], 0
                chunk.append(line)
                size += len(line)
            if chunk:
                self._write(b"".join(chunk))

    def _write(self, data: bytes) -> None:
        with contextlib.suppress(OSError):  # a closed or full stderr must never stop the log thread
            _write_all(self.fd, data)


STDERR = LineWriter()


_Build = Callable[["RequestContext", "Answer", str, float, int, int], bytes]


class DecisionLog:
    """Writes the decision lines of one config (a reload builds a new one)."""

    def __init__(
        self,
        settings: LogSettings,
        metrics: Recorder = NO_METRICS,
        write: Callable[[bytes], object] | None = None,  # False back: the line was dropped
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.fields = settings.fields
        self.getters = tuple(
            (name, _FIELDS[name] if name in _FIELDS else _header(name[len("headers.") :])) for name in settings.fields
        )
        # JSON keys quoted once, and whether the field is a header's (cut first when a line is too long)
        self.keys = tuple((_quote(name) + ":", getter, name.startswith("headers.")) for name, getter in self.getters)
        self.sample_rate = settings.sample_rate
        self.text = settings.format == "text"
        self.limit = float(settings.rate_limit)  # lines a second for non-allows; 0: no limit
        self.metrics = metrics
        self.write = write or STDERR.put
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
        build = self._text if self.text else self._json
        data = build(req, ans, decision, seconds, MAX_VALUE, MAX_VALUE)
        if len(data) > MAX_LINE:
            data = self._fit(build, req, ans, decision, seconds)
        with contextlib.suppress(OSError):  # a closed or full stderr must never fail a Check
            if self.write(data) is False:  # the writer's queue is full: stderr is not read
                self.metrics.log_dropped(decision)

    def _fit(self, build: _Build, req: RequestContext, ans: Answer, decision: str, seconds: float) -> bytes:
        """A line too long for one pipe write: the logged headers are cut first, then dropped, and
        only then the request's own fields; the line says `"cut":true`."""
        for fixed, headers in _CUTS:
            data = build(req, ans, decision, seconds, fixed, headers)
            if len(data) <= MAX_LINE:
                return data
        return build(req, ans, decision, seconds, 0, 0)

    def _json(self, req: RequestContext, ans: Answer, decision: str, seconds: float, fixed: int, headers: int) -> bytes:
        # JSON by hand: what json.dumps would write for the same entry, in a third of the time
        # (every string value goes through the json module's own escaping). `fixed` and `headers`
        # are where the request's fields and the headers' values are cut (0: left out).
        values = []
        for key, getter, header in self.keys:
            cut = headers if header else fixed
            if cut:
                value = getter(req, ans)
                values.append(key + _quote(value if len(value) <= cut else value[:cut] + "…") + ",")
        if fixed < MAX_VALUE or headers < MAX_VALUE:
            values.append('"cut":true,')
        reasons = ",".join([_quote(reason) for reason in ans.reasons])
        line = (
            f'{{"time":{self.clock():.3f},{_HEAD_JSON},{"".join(values)}"decision":"{decision}",'
            f'"status":{ans.status},"reasons":[{reasons}],"latency-us":{int(seconds * 1e6)}}}\n'
        )
        return _unbroken(line).encode("utf-8", "replace")

    def _text(self, req: RequestContext, ans: Answer, decision: str, seconds: float, fixed: int, headers: int) -> bytes:
        entry: dict[str, object] = {"time": round(self.clock(), 3), **_HEAD}
        for name, getter in self.getters:
            cut = headers if name.startswith("headers.") else fixed
            if cut:
                value = getter(req, ans)
                entry[name] = value if len(value) <= cut else value[:cut] + "…"
        if fixed < MAX_VALUE or headers < MAX_VALUE:
            entry["cut"] = True
        entry.update(decision=decision, status=ans.status, reasons=ans.reasons, **{"latency-us": int(seconds * 1e6)})
        return self._line(entry)

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

    def _line(self, entry: dict[str, object]) -> bytes:
        if self.text:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(float(entry["time"])))  # type: ignore[arg-type]
            head = f"{stamp}Z {str(entry['level']).upper()} {entry['logger']}: {entry['message']}"
            rest = " ".join(f"{k}={text_value(v)}" for k, v in entry.items() if k not in _TEXT_HEAD)
            return f"{head} {rest}\n".encode("utf-8", "replace")
        return (quote(entry) + "\n").encode("utf-8", "replace")

    def _emit(self, entry: dict[str, object]) -> None:
        with contextlib.suppress(OSError):  # a closed or full stderr must never fail a Check
            self.write(self._line(entry))
