"""The decision log: fields, no query string, sampling of allows, the rate limit of the rest."""

from __future__ import annotations

import json
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authz.check.answer import Answer
from authz.check.request import RequestContext
from authz.config.model import LogSettings
from authz.ops import decisions
from authz.ops.decisions import MAX_LINE, MAX_VALUE, DecisionLog, LineWriter
from authz.ops.metrics import Metrics, metric_names


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _request(target: str = "/reports?code=abc&token=xyz", **headers: str) -> RequestContext:
    return RequestContext.build(
        method="get",
        host="app.example.com",
        target=target,
        headers={"cookie": "_pomerium=SECRET", "authorization": "Bearer TOKEN", **headers},
        source_ip="203.0.113.7",
        request_id="req-1",
        route_id="app",
    )


ALLOW = Answer(True, 200, ("email-ok",), route_id="app", user="u-1", email="ada@example.com")
DENY = Answer(False, 403, ("email-unauthorized",), body="<html>", route_id="app", user="u-2", email="bob@example.com")


def _log(settings: LogSettings | None = None, clock: Clock | None = None, metrics: Metrics | None = None):
    lines: list[bytes] = []
    log = DecisionLog(settings or LogSettings(), metrics or Metrics(), write=lines.append, clock=clock or Clock())
    return log, lines


def test_a_line_carries_the_default_fields_and_the_result() -> None:
    log, lines = _log()
    log.record(_request(), DENY, 0.000123)
    (line,) = lines
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    entry = json.loads(line)
    assert entry == {
        "time": 1_800_000_000.0, "level": "info", "logger": "authz.decision", "message": "authorize check",
        "request-id": "req-1", "envoy-route-id": "app", "host": "app.example.com", "method": "GET",
        "path": "/reports", "ip": "203.0.113.7", "user": "u-2", "email": "bob@example.com",
        "decision": "deny", "status": 403, "reasons": ["email-unauthorized"], "latency-us": 123,
    }  # fmt: skip


def test_never_a_query_string_cookie_or_token() -> None:
    log, lines = _log(LogSettings(fields=("path", "headers.user-agent")))
    log.record(_request("/a%20b?code=abc#frag", **{"user-agent": "curl/8"}), ALLOW, 0.0)
    text = lines[0].decode()
    for secret in ("code", "abc", "SECRET", "TOKEN", "frag"):
        assert secret not in text
    entry = json.loads(text)
    assert entry["path"] == "/a%20b" and entry["headers.user-agent"] == "curl/8"
    assert "request-id" not in entry and entry["decision"] == "allow"


def test_long_values_are_cut() -> None:
    log, lines = _log()
    log.record(_request("/" + "a" * 5000), DENY, 0.0)
    assert len(json.loads(lines[0])["path"]) == MAX_VALUE + 1
    log, lines = _log(LogSettings(fields=(*LogSettings().fields, "headers.x-long")))
    long = {"method": "G" * 900, "host": "h" * 900, "source_ip": "i" * 900, "request_id": "r" * 900}
    req = RequestContext(path="/", raw_path="/" + "a" * 5000, headers={"x-long": "x" * 900}, route_id="o" * 900, **long)
    log.record(req, Answer(False, 403, ("r",), user="u" * 900, email="e" * 900), 0.0)
    entry = json.loads(lines[0])
    # Eight values of 512 and a header do not fit one pipe write: the header goes first, then the
    # request's fields are cut further, and the line says so.
    assert "headers.x-long" not in entry and entry["cut"] is True
    for field in LogSettings().fields:
        assert len(entry[field]) == 129 and entry[field].endswith("…"), field
    assert len(lines[0]) <= MAX_LINE


def test_headers_a_client_fills_cannot_cut_the_requests_own_fields() -> None:
    names = tuple(f"x-h{i}" for i in range(6))
    log, lines = _log(LogSettings(fields=(*LogSettings().fields, *(f"headers.{n}" for n in names))))
    req = _request("/reports/2026", **dict.fromkeys(names, "\u2028" * 600))  # 6 bytes each, escaped
    log.record(req, DENY, 0.0)
    entry = json.loads(lines[0])
    assert len(lines[0]) <= MAX_LINE and entry["cut"] is True
    assert (entry["path"], entry["request-id"], entry["user"]) == ("/reports/2026", "req-1", "u-2")
    assert entry["headers.x-h0"] == "\u2028" * 32 + "…"


@pytest.mark.parametrize("text", [False, True])
def test_a_line_with_many_long_headers_stays_within_one_pipe_write(text: bool) -> None:
    names = tuple(f"x-h{i}" for i in range(30))
    log, lines = _log(LogSettings(fields=("path", *(f"headers.{n}" for n in names)), format="text" if text else "json"))
    log.record(_request("/p", **dict.fromkeys(names, "€" * 600)), DENY, 0.0)
    (line,) = lines
    assert len(line) <= MAX_LINE and line.endswith(b"\n")
    if not text:
        entry = json.loads(line)
        assert entry["decision"] == "deny" and entry["headers.x-h29"].startswith("€") and entry["path"] == "/p"
    many = tuple(f"x-h{i}" for i in range(400))  # so many that even cut values do not fit: the result stays
    log, lines = _log(LogSettings(fields=tuple(f"headers.{n}" for n in many), format="text" if text else "json"))
    log.record(_request("/p", **dict.fromkeys(many, "v" * 600)), DENY, 0.0)
    assert len(lines[0]) <= MAX_LINE and b"deny" in lines[0] and b"x-h0" not in lines[0]


@pytest.mark.parametrize("text", [False, True])
def test_no_value_breaks_a_line_for_readers_that_split_on_unicode_breaks(text: bool) -> None:
    log, lines = _log(LogSettings(fields=("host", "headers.x-odd"), format="text" if text else "json"))
    odd = 'a\u2028decision=allow\x85"b\u2029c\x1e'
    log.record(RequestContext(method="GET", host=odd, path="/", raw_path="/", headers={"x-odd": odd}), DENY, 0.0)
    decoded = lines[0].decode()
    assert len(decoded.splitlines()) == 1
    if not text:
        assert json.loads(decoded)["host"] == odd


def test_a_short_write_goes_on_where_it_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    written: list[bytes] = []

    def short(fd: int, data: memoryview) -> int:
        written.append(bytes(data[:7]))
        return min(7, len(data))

    monkeypatch.setattr(decisions.os, "write", short)
    decisions._write_all(2, b"0123456789abcdefghij\n")
    assert b"".join(written) == b"0123456789abcdefghij\n"


def test_the_line_writer_writes_whole_lines_of_many_threads_in_pipe_sized_writes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    writes: list[bytes] = []
    monkeypatch.setattr(decisions.os, "write", lambda fd, data: writes.append(bytes(data)) or len(data))
    writer = LineWriter(fd=99, interval=0.01)

    def work(n: int) -> None:
        for i in range(500):
            assert writer.put(f'{{"thread":{n},"i":{i},"pad":"{"x" * (i % 300)}"}}\n'.encode())

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    writer.flush()  # what runs at exit
    assert all(len(w) <= MAX_LINE + 1 and w.endswith(b"\n") for w in writes)
    lines = b"".join(writes).splitlines()
    assert len(lines) == 4000 and len({line for line in lines}) == 4000
    assert len(writes) < 4000 / 4  # many lines a write: the Check threads never wait on stderr
    for n in range(8):  # each thread's lines in its order
        mine = [json.loads(line)["i"] for line in lines if json.loads(line)["thread"] == n]
        assert mine == list(range(500))


def test_a_full_queue_drops_and_counts_instead_of_holding_memory() -> None:
    writer = LineWriter(fd=99, interval=3600, limit=3)
    metrics = Metrics()
    log = DecisionLog(LogSettings(), metrics, write=writer.put)
    for _ in range(5):
        log.record(_request(), DENY, 0.0)
    assert len(writer._queue) == 3
    assert 'authz_decision_log_dropped_total{decision="deny"} 2.0' in metrics.exposition().decode()


def test_login_and_error_decisions() -> None:
    log, lines = _log()
    log.record(_request(), Answer(False, 302, ("user-unauthenticated",)), 0.0)
    log.record(_request(), Answer(False, 401, ("user-unauthenticated",)), 0.0)
    log.record(_request(), Answer(False, 503, ("internal-error",)), 0.0)
    assert [json.loads(line)["decision"] for line in lines] == ["login", "login", "error"]


@pytest.mark.parametrize(("rate", "low", "high"), [(0.0, 0, 0), (1.0, 1000, 1000), (0.1, 50, 170)])
def test_allows_are_sampled(rate: float, low: int, high: int) -> None:
    log, lines = _log(LogSettings(sample_rate=rate, rate_limit=0))
    for _ in range(1000):
        log.record(_request(), ALLOW, 0.0)
    assert low <= len(lines) <= high
    for _ in range(50):
        log.record(_request(), DENY, 0.0)
    assert sum(b'"decision":"deny"' in line for line in lines) == 50  # denials are never sampled


def test_denials_past_the_rate_limit_are_dropped_counted_and_summed_up() -> None:
    clock, metrics = Clock(), Metrics()
    log, lines = _log(LogSettings(rate_limit=10), clock, metrics)
    for _ in range(25):
        log.record(_request(), DENY, 0.0)
    assert len(lines) == 10
    scrape = metrics.exposition().decode()
    assert 'authz_decision_log_dropped_total{decision="deny"} 15.0' in scrape
    for _ in range(100):  # allows are not limited
        log.record(_request(), ALLOW, 0.0)
    assert len(lines) == 110
    clock.now += 1.0  # a second later: ten more tokens
    log.record(_request(), DENY, 0.0)
    summary, denial = json.loads(lines[-2]), json.loads(lines[-1])
    assert summary["level"] == "warning" and summary["dropped"] == 15
    assert denial["decision"] == "deny"
    assert "authz_decision_log_dropped_total" in set(metric_names(scrape))


def test_text_format_quotes_what_could_forge_a_field() -> None:
    log, lines = _log(LogSettings(format="text", fields=("host", "method")))
    forged = RequestContext(method="GET", host="a decision=allow\nb", path="/", raw_path="/")
    log.record(forged, DENY, 0.0)
    (line,) = lines
    text = line.decode()
    assert text.count("\n") == 1 and text.startswith("2027-01-15T08:00:00Z INFO authz.decision: authorize check ")
    assert 'host="a decision=allow\\nb" method=GET decision=deny status=403 ' in text


def test_a_broken_stderr_never_fails_the_check() -> None:
    def broken(data: bytes) -> None:
        raise BrokenPipeError

    DecisionLog(LogSettings(), write=broken).record(_request(), DENY, 0.0)


@settings(max_examples=300, deadline=None)
@given(
    host=st.text(max_size=40),
    header=st.text(max_size=40),
    user=st.text(max_size=20),
    email=st.text(max_size=20),
    reason=st.text(max_size=10),
)
def test_any_value_makes_one_valid_json_line_that_says_it_back(
    host: str, header: str, user: str, email: str, reason: str
) -> None:
    lines: list[bytes] = []
    log = DecisionLog(LogSettings(fields=("host", "user", "email", "headers.x-odd")), write=lines.append)
    req = RequestContext(method="GET", host=host, path="/", raw_path="/", headers={"x-odd": header})
    log.record(req, Answer(False, 403, (reason,), user=user, email=email), 0.0)
    (line,) = lines
    assert line.count(b"\n") == 1 and line.endswith(b"\n")
    assert len(line.decode().splitlines()) == 1  # U+0085, U+2028, U+2029 escaped too
    entry = json.loads(line)

    def sent(value: str) -> str:  # what survives UTF-8 (a lone surrogate becomes '?')
        return value.encode("utf-8", "replace").decode("utf-8")

    assert entry["host"] == sent(host) and entry["headers.x-odd"] == sent(header)
    assert (entry["user"], entry["email"], entry["reasons"]) == (sent(user), sent(email), [sent(reason)])
