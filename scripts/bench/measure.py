"""One measurement: a load tool against one Envoy (wrk or h2load, closed loop at full speed; hey or
paced wrk at a constant rate), with the CPU time Envoy and the ext_authz server spent meanwhile
(all their threads and child processes, from /proc) and the server's resident memory."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import statistics
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "secs": 1e3}


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):  # a thread that ended meanwhile
            found += [int(c) for c in (task / "children").read_text().split()]
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (all its threads and its exited children) and of its live
    children (authz with several worker processes), from fields 14-17 of /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / _TICK + sum(cpu_seconds(c) for c in _children(pid))


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its live children, MB."""
    kb = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            kb = int(line.split()[1])
    return kb / 1024 + sum(rss_mb(c) for c in _children(pid))


@dataclass(frozen=True)
class Load:
    """What to send: the Envoy port, the Host, headers, and the status every answer must have."""

    port: int
    host: str
    headers: tuple[tuple[str, str], ...] = ()
    expect: int = 200
    path: str = "/dashboard?tab=1"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"


@dataclass(frozen=True)
class Run:
    """What a load tool reports: latencies in ms; errors are socket errors, timeouts and answers
    with another status than the expected one."""

    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    requests: int
    errors: int


@dataclass(frozen=True)
class Sample:
    run: Run
    envoy_cpu_us: float
    authz_cpu_us: float | None  # the ext_authz server of the scenario (nginx, a floor or authz)
    authz_rss_mb: float | None


Tool = Callable[[Load, float, int], Run]


def measure(tool: Tool, load: Load, seconds: float, connections: int, envoy: int, server: int | None) -> Sample:
    """Run `tool` and charge the CPU Envoy and the ext_authz server spent meanwhile per request."""
    envoy0, server0 = cpu_seconds(envoy), cpu_seconds(server) if server else 0.0
    run = tool(load, seconds, connections)
    envoy1, server1 = cpu_seconds(envoy), cpu_seconds(server) if server else 0.0
    if run.requests == 0:  # closed loop: each connection's request went unanswered the whole time
        nan = float("nan")  # and there is no latency to report
        run = dataclasses.replace(run, p50_ms=nan, p90_ms=nan, p99_ms=nan, errors=run.errors + connections)
    done = max(run.requests, 1)
    return Sample(
        run,
        envoy_cpu_us=(envoy1 - envoy0) / done * 1e6,
        authz_cpu_us=(server1 - server0) / done * 1e6 if server else None,
        authz_rss_mb=rss_mb(server) if server else None,
    )


# wrk's Lua: count answers whose status is not the expected one (wrk alone counts only non-2xx/3xx,
# so a 302 to sign-in in a 200 scenario would pass unseen). -t1: one thread, one counter.
_COUNT = """local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) wrong = 0 end
function response(status, headers, body) if status ~= %d then wrong = wrong + 1 end end
function done(summary, latency, requests)
  for _, thread in ipairs(threads) do io.write("wrong-status " .. thread:get("wrong") .. "\\n") end
end
"""
_PACE = "function delay() return math.random() * %.3f end\n"


def _wrk_latency(text: str, percent: str) -> float:
    found = re.search(rf"^\s*{percent}%\s+([\d.]+)(us|ms|s)\s*$", text, re.MULTILINE)
    return float(found.group(1)) * _UNITS[found.group(2)] if found else float("nan")


def _wrk(load: Load, seconds: float, connections: int, lua: str) -> Run:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", prefix="bench-") as script:
        script.write(lua)
        script.flush()
        argv = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", "-s", script.name,
                "-H", f"Host: {load.host}"]  # fmt: skip
        for name, value in load.headers:
            argv += ["-H", f"{name}: {value}"]
        out = subprocess.run([*argv, load.url], capture_output=True, text=True, check=True).stdout
    requests = int(_must(r"(\d+) requests in", out))
    sockets = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    return Run(
        rps=float(_must(r"Requests/sec:\s+([\d.]+)", out)),
        p50_ms=_wrk_latency(out, "50"),
        p90_ms=_wrk_latency(out, "90"),
        p99_ms=_wrk_latency(out, "99"),
        requests=requests,
        errors=sockets + int(_must(r"wrong-status (\d+)", out)),
    )


def wrk(load: Load, seconds: float, connections: int) -> Run:
    """`wrk -t1 -c<connections> -d<seconds> --latency`: closed loop, as fast as answers come."""
    return _wrk(load, seconds, connections, _COUNT % load.expect)


def wrk_paced(load: Load, seconds: float, rate: float, connections: int = 64) -> Run:
    """About `rate` requests/s: each wrk connection waits a random time (mean connections/rate)
    before each request, so connections do not fire together. Closed loop per connection."""
    return _wrk(load, seconds, connections, _COUNT % load.expect + _PACE % (2 * connections / rate * 1000))


def h2load(load: Load, seconds: float, connections: int) -> Run:
    """`h2load -t1 -c<connections> -m1 -D<seconds>` over h2c; percentiles from its per-request log."""
    with tempfile.NamedTemporaryFile("r", suffix=".log", prefix="bench-h2load-") as log:
        argv = ["h2load", "-t1", f"-c{connections}", "-m1", "-D", str(max(1, round(seconds))),
                f"--log-file={log.name}", "-H", f":authority: {load.host}"]  # fmt: skip
        for name, value in load.headers:
            argv += ["-H", f"{name}: {value}"]
        out = subprocess.run([*argv, load.url], capture_output=True, text=True, check=True).stdout
        rows = [line.split("\t") for line in log.read().splitlines() if line.strip()]
    # Each row: start time (µs since the epoch), status (-1 when the stream failed), elapsed µs.
    latencies = sorted(int(row[2]) / 1000 for row in rows)
    if len(latencies) < 2:
        raise SystemExit(f"h2load finished {len(latencies)} request(s):\n{out[-2000:]}")
    cut = statistics.quantiles(latencies, n=100, method="inclusive")
    return Run(
        rps=float(_must(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)),
        p50_ms=cut[49],
        p90_ms=cut[89],
        p99_ms=cut[98],
        requests=len(rows),
        errors=sum(1 for row in rows if int(row[1]) != load.expect),
    )


def hey(load: Load, seconds: float, rate: float, connections: int = 64) -> Run:
    """`hey -c<connections> -q <rate/connections> -z<seconds>`: each worker sends at most its share
    per second. Closed loop: a worker waits for its answer, and hey's workers tick together."""
    argv = ["hey", "-c", str(connections), "-q", f"{rate / connections:.3f}", "-z", f"{max(1, round(seconds))}s",
            "-disable-redirects", "-host", load.host]  # fmt: skip
    for name, value in load.headers:
        argv += ["-H", f"{name}: {value}"]
    out = subprocess.run([*argv, load.url], capture_output=True, text=True, check=True).stdout
    statuses = {int(code): int(n) for code, n in re.findall(r"\[(\d+)\]\s+(\d+) responses", out)}
    failed = sum(int(n) for n in re.findall(r"^\s+\[(\d+)\]\s+Get ", out, re.MULTILINE))

    def latency(percent: str) -> float:
        found = re.search(rf"{percent}% in ([\d.]+) secs", out)  # absent when every request failed
        return float(found.group(1)) * 1e3 if found else float("nan")

    return Run(
        rps=float(_must(r"Requests/sec:\s+([\d.]+)", out)),
        p50_ms=latency("50"),
        p90_ms=latency("90"),
        p99_ms=latency("99"),
        requests=sum(statuses.values()) + failed,
        errors=failed + sum(n for code, n in statuses.items() if code != load.expect),
    )


def _must(pattern: str, text: str) -> str:
    found = re.search(pattern, text)
    if not found:
        raise SystemExit(f"unexpected load tool output (no {pattern!r}):\n{text[-2000:]}")
    return found.group(1)
