"""Prometheus metrics: what every part of authz counts, behind one small interface.

Callers hold a `Recorder` and call its methods (`check`, `sign_in`, `idp_call`, …); they never
touch prometheus-client. `NO_METRICS` does nothing and is what a Runtime holds when
`metrics_address` is unset, so an unobserved Check pays one empty call.

With several workers every process writes its values to memory-mapped files in one directory
(prometheus-client's multiprocess mode) and the scrape, served by worker 0, merges them: counters
and histograms add up across processes (a restarted worker's counts are kept), and the per-worker
gauges (the config's hash and load time) carry a `worker` label and go when their process does.

Labels are bounded by the config: a route's id (or `unknown` for an id the config does not have),
a decision, the reasons authz knows. Never a user, an email or a path.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import threading
from bisect import bisect_left
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values
from prometheus_client.exposition import generate_latest
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from authz import __version__
from authz.policy.reasons import Reason

UNKNOWN_ROUTE = "unknown"
# Check latency: tens of microseconds (a cached allow) to seconds (a stalled store read).
CHECK_BUCKETS = (
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
# Calls to the identity provider: milliseconds to its timeout.
IDP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
FLUSH_INTERVAL = 1.0  # seconds between a worker's flushes of its Checks' counts (several workers)
DECISIONS = ("allow", "login", "deny", "error")
# The error pages a sign-in can end on: their reasons are the sign-in metric's outcomes.
SIGN_IN_FAULTS = tuple(
    str(r) for r in (Reason.BAD_REQUEST, Reason.INVALID_ID_TOKEN, Reason.IDP_ACCESS_DENIED, Reason.IDP_REFUSED,
                     Reason.IDP_UNAVAILABLE, Reason.IDP_TIMEOUT)
)  # fmt: skip


def decision_of(allowed: bool, status: int) -> str:
    """The decision label of an answer: allow, login (302/401), deny, or error (503)."""
    if allowed:
        return "allow"
    if status in (302, 401):
        return "login"
    return "error" if status >= 500 else "deny"


class Recorder:
    """The metrics interface; this base records nothing (`metrics_address` unset)."""

    enabled = False

    def check(self, route: str, decision: str, reasons: tuple[str, ...], seconds: float) -> None:
        """One Check answered."""

    def session_cache(self, hit: bool) -> None:
        """A Check's session came from the cache (hit) or needed the store (miss)."""

    def store_error(self, store: str) -> None:
        """A read or write of the `sessions` or `grants` store failed."""

    def store_up(self, store: str, up: bool) -> None:
        """Whether the store answered its last reachability probe (/readyz)."""

    def sign_in(self, outcome: str) -> None:
        """A sign-in ended: `ok`, or why it did not."""

    def idp_call(self, endpoint: str, outcome: str, seconds: float) -> None:
        """One call to the identity provider (`discovery`, `jwks`, `token`, `userinfo`, `refresh`, `revoke`)."""

    def refresh(self, outcome: str) -> None:
        """A token refresh ended: `refreshed`, `ended` (the IdP refused: the session ends), or `retry`."""

    def grant(self, state: str) -> None:
        """A just-in-time grant entered `state` (pending, active, rejected, revoked, expired)."""

    def reload(self, result: str) -> None:
        """A config reload: `ok`, `invalid`, or `restart_needed`."""

    def config_loaded(self, config_hash: str, at: float) -> None:
        """The config now in force in this worker, and when it was loaded."""

    def log_dropped(self, decision: str) -> None:
        """A decision log line was dropped by the rate limit."""

    def flush(self) -> None:
        """Pass counts kept per thread on to what a scrape reads."""

    async def flush_loop(self, stop: asyncio.Event) -> None:
        """Flush now and then until `stop` (several workers, each writing its own files)."""


NO_METRICS = Recorder()


def use_multiprocess(directory: str | None) -> None:
    """Make this process write its values to `directory` (shared by all workers), or keep them in
    memory (None); call before building `Metrics`. prometheus-client picks its value class from
    the environment when imported, so it is picked again here, where the choice is known."""
    if directory is None:
        os.environ.pop(MULTIPROCESS_ENV, None)
    else:
        os.environ[MULTIPROCESS_ENV] = directory
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]


# Every metric but the two a Check writes: (key in `Metrics._m`, type, name, help, labels, options, the
# label values whose series exist from the start at 0, so a rate or an alert finds them before the
# first event; a scrape in multiprocess mode lists only written series).
_IDP_ENDPOINTS = ("discovery", "jwks", "token", "userinfo", "refresh", "revoke")
_DECLARED: tuple[tuple[str, type[Any], str, str, tuple[str, ...], dict[str, Any], tuple[tuple[str, ...], ...]], ...] = (
    ("cache", Counter, "authz_session_cache", "Session cache lookups of Checks, by result (hit, miss).",
     ("result",), {}, (("hit",), ("miss",))),
    ("store_errors", Counter, "authz_store_errors", "Failed store operations, by store.",
     ("store",), {}, (("session",), ("grant",))),
    ("store_up", Gauge, "authz_store_up", "1 if the store answered its last reachability probe, else 0.",
     ("store",), {"multiprocess_mode": "mostrecent"}, ()),
    ("sign_ins", Counter, "authz_sign_ins", "Sign-ins that ended, by outcome.",
     ("outcome",), {}, tuple((o,) for o in ("ok", "error", *SIGN_IN_FAULTS))),
    ("idp", Counter, "authz_idp_requests", "Calls to the identity provider, by endpoint and outcome.",
     ("endpoint", "outcome"), {}, tuple((e, "ok") for e in _IDP_ENDPOINTS)),
    ("idp_latency", Histogram, "authz_idp_request_duration_seconds",
     "Time of calls to the identity provider, by endpoint.",
     ("endpoint",), {"buckets": IDP_BUCKETS}, tuple((e,) for e in _IDP_ENDPOINTS)),
    ("refreshes", Counter, "authz_token_refreshes", "IdP token refreshes, by outcome.",
     ("outcome",), {}, (("refreshed",), ("ended",), ("retry",))),
    ("grants", Counter, "authz_jit_grants", "Just-in-time grant changes, by the state entered.",
     ("state",), {}, tuple((s,) for s in ("pending", "active", "rejected", "revoked", "expired"))),
    ("reloads", Counter, "authz_config_reloads", "Config reloads, by result.",
     ("result",), {}, (("ok",), ("invalid",), ("restart_needed",))),
    ("hash", Gauge, "authz_config_hash", "The first 52 bits of the SHA-256 of the config in force, per worker.",
     ("worker",), {"multiprocess_mode": "liveall"}, ()),
    ("loaded", Gauge, "authz_config_load_timestamp_seconds", "When the config in force was loaded, per worker.",
     ("worker",), {"multiprocess_mode": "liveall"}, ()),
    ("dropped", Counter, "authz_decision_log_dropped", "Decision log lines dropped by the rate limit, by decision.",
     ("decision",), {}, tuple((d,) for d in DECISIONS)),
)  # fmt: skip


class _Tally:
    """One thread's running totals of what Checks count. Only its own thread writes them, without
    a lock (prometheus-client takes one per value: a Check would take three); `flush` reads them."""

    __slots__ = ("cache", "checks", "count", "latency", "sums")

    def __init__(self) -> None:
        self.count = 0  # Checks recorded whole (raised last): a flush with no change skips the tally
        self.checks: dict[tuple[str, str, tuple[str, ...]], int] = {}
        self.latency = {d: [0] * (len(CHECK_BUCKETS) + 1) for d in DECISIONS}  # per bucket, +Inf last
        self.sums = dict.fromkeys(DECISIONS, 0.0)
        self.cache = [0, 0]  # misses, hits


class Metrics(Recorder):
    """Every metric of one process, written to its registry or to the multiprocess directory.

    What a Check counts goes to its thread's `_Tally` and reaches prometheus-client on `flush`:
    before every scrape this process serves, and once a second in each worker (`flush_loop`), so
    the merged scrape of several workers is at most that much behind."""

    enabled = True

    def __init__(self, worker: int = 0) -> None:
        self.directory = os.environ.get(MULTIPROCESS_ENV) or None
        self.worker = str(worker)
        # In multiprocess mode the values live in files and the scrape reads those; registering
        # the live objects too would count this process twice.
        self.registry = CollectorRegistry()
        reg = None if self.directory else self.registry
        self._checks = Counter(
            "authz_checks", "Checks answered, by route, decision and reasons.",
            ["route", "decision", "reason"], registry=reg,
        )  # fmt: skip
        self._latency = Histogram(
            "authz_check_duration_seconds", "Time to answer a Check, by decision.",
            ["decision"], buckets=CHECK_BUCKETS, registry=reg,
        )  # fmt: skip
        self._m: dict[str, Any] = {}
        for key, kind, name, text, labels, options, initial in _DECLARED:
            self._m[key] = kind(name, text, labels, registry=reg, **options)
            for values_ in initial:
                self._m[key].labels(*values_)
        info = Gauge(
            "authz_build_info", "authz's version and Python's; always 1.",
            ["version", "python"], registry=reg, multiprocess_mode="max",
        )  # fmt: skip
        info.labels(__version__, platform.python_version()).set(1)
        self._latency_children = {d: self._latency.labels(d) for d in DECISIONS}
        self._local = threading.local()
        self._tallies: list[_Tally] = []
        self._lock = threading.Lock()
        # What `flush` has passed on so far, summed over the tallies.
        self._flushed_checks: dict[tuple[str, str, tuple[str, ...]], int] = {}
        self._flushed_latency = {d: [0] * (len(CHECK_BUCKETS) + 1) for d in DECISIONS}
        self._flushed_sums = dict.fromkeys(DECISIONS, 0.0)
        self._flushed_cache = [0, 0]
        self._seen: list[tuple[int, int, int]] = []

    def _tally(self) -> _Tally:
        tally = _Tally()
        self._local.tally = tally
        with self._lock:
            self._tallies.append(tally)
        return tally

    def check(self, route: str, decision: str, reasons: tuple[str, ...], seconds: float) -> None:
        try:
            tally: _Tally = self._local.tally
        except AttributeError:
            tally = self._tally()
        key = (route, decision, reasons)
        checks = tally.checks
        checks[key] = checks.get(key, 0) + 1
        tally.latency[decision][bisect_left(CHECK_BUCKETS, seconds)] += 1  # `le` includes the bound
        tally.sums[decision] += seconds
        tally.count += 1

    def session_cache(self, hit: bool) -> None:
        try:
            tally: _Tally = self._local.tally
        except AttributeError:
            tally = self._tally()
        tally.cache[hit] += 1

    def flush(self) -> None:
        """Pass what the threads counted since the last flush on to prometheus-client."""
        with self._lock:
            tallies = list(self._tallies)
            seen = [(t.count, t.cache[0], t.cache[1]) for t in tallies]
            if seen == self._seen:  # nothing new: skip walking every route's keys
                return
            self._seen = seen
            checks: dict[tuple[str, str, tuple[str, ...]], int] = {}
            for tally in tallies:
                for key, count in list(tally.checks.items()):  # copied at once: its thread may add keys
                    checks[key] = checks.get(key, 0) + count
            for key, count in checks.items():
                delta = count - self._flushed_checks.get(key, 0)
                if delta:
                    route, decision, reasons = key
                    self._checks.labels(route, decision, ",".join(reasons) or "-").inc(delta)
                    self._flushed_checks[key] = count
            for decision in DECISIONS:
                counts = [sum(column) for column in zip(*(t.latency[decision] for t in tallies), strict=True)]
                total = sum(t.sums[decision] for t in tallies)
                # (the sum too on its own: a flush may have come between a Check's bucket and its sum)
                if counts and (counts != self._flushed_latency[decision] or total != self._flushed_sums[decision]):
                    deltas = [now - then for now, then in zip(counts, self._flushed_latency[decision], strict=True)]
                    _add_observations(self._latency_children[decision], deltas, total - self._flushed_sums[decision])
                    self._flushed_latency[decision], self._flushed_sums[decision] = counts, total
            for hit, label in ((0, "miss"), (1, "hit")):
                count = sum(t.cache[hit] for t in tallies)
                if count != self._flushed_cache[hit]:
                    self._m["cache"].labels(label).inc(count - self._flushed_cache[hit])
                    self._flushed_cache[hit] = count

    async def flush_loop(self, stop: asyncio.Event, interval: float = FLUSH_INTERVAL) -> None:
        """Flush once every `interval` until `stop`, then once more (several workers only: one
        process's scrape flushes it itself)."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
            self.flush()

    def store_error(self, store: str) -> None:
        self._m["store_errors"].labels(store).inc()

    def store_up(self, store: str, up: bool) -> None:
        self._m["store_up"].labels(store).set(1 if up else 0)

    def sign_in(self, outcome: str) -> None:
        self._m["sign_ins"].labels(outcome).inc()

    def idp_call(self, endpoint: str, outcome: str, seconds: float) -> None:
        self._m["idp"].labels(endpoint, outcome).inc()
        self._m["idp_latency"].labels(endpoint).observe(seconds)

    def refresh(self, outcome: str) -> None:
        self._m["refreshes"].labels(outcome).inc()

    def grant(self, state: str) -> None:
        self._m["grants"].labels(state).inc()

    def reload(self, result: str) -> None:
        self._m["reloads"].labels(result).inc()

    def config_loaded(self, config_hash: str, at: float) -> None:
        # A gauge is a float: 52 bits of the hash fit it exactly (13 hex digits).
        self._m["hash"].labels(self.worker).set(int(config_hash[:13], 16))
        self._m["loaded"].labels(self.worker).set(at)

    def log_dropped(self, decision: str) -> None:
        self._m["dropped"].labels(decision).inc()

    def exposition(self) -> bytes:
        """The text a scrape gets: this process's metrics, or every worker's in multiprocess mode."""
        self.flush()
        if self.directory is None:
            return generate_latest(self.registry)
        merged = CollectorRegistry()
        MultiProcessCollector(merged, self.directory)  # type: ignore[no-untyped-call]
        return generate_latest(merged)


def _add_observations(child: Any, counts: list[int], total: float) -> None:
    """Add many observations to a Histogram child at once: `counts[i]` more in bucket i (not
    cumulative, +Inf last) and `total` to the sum. prometheus-client has no public call for this;
    it keeps exactly these values (tests/ops/test_metrics.py compares with `observe`)."""
    for bucket, count in zip(child._buckets, counts, strict=True):
        if count:
            bucket.inc(count)
    child._sum.inc(total)


def forget_process(pid: int) -> None:
    """A worker process ended: its per-worker gauges leave the scrape (its counts stay)."""
    directory = os.environ.get(MULTIPROCESS_ENV)
    if directory:
        mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]


def metric_names(text: str) -> Iterable[str]:
    """The sample names in an exposition (for tests and the dashboard check)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            yield sample.name
