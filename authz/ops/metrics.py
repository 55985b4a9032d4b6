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

import os
import platform
import threading
from collections.abc import Iterable

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
# The error pages a sign-in can end on: their reasons are the sign-in metric's outcomes.
SIGN_IN_FAULTS = tuple(
    str(r) for r in (Reason.BAD_REQUEST, Reason.INVALID_ID_TOKEN, Reason.IDP_REFUSED, Reason.IDP_UNAVAILABLE,
                     Reason.IDP_TIMEOUT)
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


class Metrics(Recorder):
    """Every metric of one process, written to its registry or to the multiprocess directory."""

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
        self._cache = Counter(
            "authz_session_cache", "Session cache lookups of Checks, by result (hit, miss).", ["result"], registry=reg
        )
        self._store_errors = Counter(
            "authz_store_errors", "Failed store operations, by store.", ["store"], registry=reg
        )
        self._store_up = Gauge(
            "authz_store_up", "1 if the store answered its last reachability probe, else 0.",
            ["store"], registry=reg, multiprocess_mode="mostrecent",
        )  # fmt: skip
        self._sign_ins = Counter("authz_sign_ins", "Sign-ins that ended, by outcome.", ["outcome"], registry=reg)
        self._idp = Counter(
            "authz_idp_requests", "Calls to the identity provider, by endpoint and outcome.",
            ["endpoint", "outcome"], registry=reg,
        )  # fmt: skip
        self._idp_latency = Histogram(
            "authz_idp_request_duration_seconds", "Time of calls to the identity provider, by endpoint.",
            ["endpoint"], buckets=IDP_BUCKETS, registry=reg,
        )  # fmt: skip
        self._refreshes = Counter(
            "authz_token_refreshes", "IdP token refreshes, by outcome.", ["outcome"], registry=reg
        )
        self._grants = Counter(
            "authz_jit_grants", "Just-in-time grant changes, by the state entered.", ["state"], registry=reg
        )
        self._reloads = Counter("authz_config_reloads", "Config reloads, by result.", ["result"], registry=reg)
        self._hash = Gauge(
            "authz_config_hash", "The first 52 bits of the SHA-256 of the config in force, per worker.",
            ["worker"], registry=reg, multiprocess_mode="liveall",
        )  # fmt: skip
        self._loaded = Gauge(
            "authz_config_load_timestamp_seconds", "When the config in force was loaded, per worker.",
            ["worker"], registry=reg, multiprocess_mode="liveall",
        )  # fmt: skip
        self._dropped = Counter(
            "authz_decision_log_dropped", "Decision log lines dropped by the rate limit, by decision.",
            ["decision"], registry=reg,
        )  # fmt: skip
        info = Gauge(
            "authz_build_info", "authz's version and Python's; always 1.",
            ["version", "python"], registry=reg, multiprocess_mode="max",
        )  # fmt: skip
        info.labels(__version__, platform.python_version()).set(1)
        # Series that exist from the start, at 0: a dashboard or an alert on a rate finds them
        # before the first event (and a scrape in multiprocess mode lists only written series).
        for outcome in ("ok", *SIGN_IN_FAULTS):
            self._sign_ins.labels(outcome)
        for endpoint in ("discovery", "jwks", "token", "userinfo", "refresh", "revoke"):
            self._idp.labels(endpoint, "ok")
            self._idp_latency.labels(endpoint)
        for outcome in ("refreshed", "ended", "retry"):
            self._refreshes.labels(outcome)
        for state in ("pending", "active", "rejected", "revoked", "expired"):
            self._grants.labels(state)
        for result in ("ok", "invalid", "restart_needed"):
            self._reloads.labels(result)
        for store in ("session", "grant"):
            self._store_errors.labels(store)
        # The hot path's children, found by one dict read instead of `labels()` (its checks and lock).
        self._check_children: dict[tuple[str, str, tuple[str, ...]], Counter] = {}
        self._latency_children = {d: self._latency.labels(d) for d in ("allow", "login", "deny", "error")}
        self._hits, self._misses = self._cache.labels("hit"), self._cache.labels("miss")
        self._dropped_children = {d: self._dropped.labels(d) for d in ("allow", "login", "deny", "error")}
        self._lock = threading.Lock()

    def check(self, route: str, decision: str, reasons: tuple[str, ...], seconds: float) -> None:
        key = (route, decision, reasons)
        child = self._check_children.get(key)
        if child is None:
            with self._lock:
                child = self._checks.labels(route, decision, ",".join(reasons) or "-")
                self._check_children[key] = child
        child.inc()
        self._latency_children[decision].observe(seconds)

    def session_cache(self, hit: bool) -> None:
        (self._hits if hit else self._misses).inc()

    def store_error(self, store: str) -> None:
        self._store_errors.labels(store).inc()

    def store_up(self, store: str, up: bool) -> None:
        self._store_up.labels(store).set(1 if up else 0)

    def sign_in(self, outcome: str) -> None:
        self._sign_ins.labels(outcome).inc()

    def idp_call(self, endpoint: str, outcome: str, seconds: float) -> None:
        self._idp.labels(endpoint, outcome).inc()
        self._idp_latency.labels(endpoint).observe(seconds)

    def refresh(self, outcome: str) -> None:
        self._refreshes.labels(outcome).inc()

    def grant(self, state: str) -> None:
        self._grants.labels(state).inc()

    def reload(self, result: str) -> None:
        self._reloads.labels(result).inc()

    def config_loaded(self, config_hash: str, at: float) -> None:
        # A gauge is a float: 52 bits of the hash fit it exactly (13 hex digits).
        self._hash.labels(self.worker).set(int(config_hash[:13], 16))
        self._loaded.labels(self.worker).set(at)

    def log_dropped(self, decision: str) -> None:
        self._dropped_children[decision].inc()

    def exposition(self) -> bytes:
        """The text a scrape gets: this process's metrics, or every worker's in multiprocess mode."""
        if self.directory is None:
            return generate_latest(self.registry)
        merged = CollectorRegistry()
        MultiProcessCollector(merged, self.directory)  # type: ignore[no-untyped-call]
        return generate_latest(merged)


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
