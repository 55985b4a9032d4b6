"""One measurement: a load tool against one Envoy, with the CPU time Envoy and the ext_authz server
spent meanwhile (all their threads, from /proc) and the server's resident memory."""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and all its threads (and of its children that have exited)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # utime, stime, cutime, cstime: fields 14-17 of proc(5), 12-15 after the name.
    return sum(int(f) for f in fields[11:15]) / _TICK


def tree_cpu_seconds(pid: int) -> float:
    """cpu_seconds of a process and of its live children (authz with several workers)."""
    total = cpu_seconds(pid)
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        for child in children.read_text().split():
            total += tree_cpu_seconds(int(child))
    return total


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@dataclass(frozen=True)
class Load:
    """What to send: the Envoy port, the Host, headers, and the status every answer must have."""

    port: int
    host: str
    headers: tuple[tuple[str, str], ...] = ()
    expect: int = 200
    path: str = "/dashboard?tab=1"


@dataclass(frozen=True)
class Sample:
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    requests: int
    errors: int
    envoy_cpu_us: float
    authz_cpu_us: float | None
    authz_rss_mb: float | None


def _latency(text: str, percent: str) -> float:
    found = re.search(rf"^\s*{percent}%\s+([\d.]+)(us|ms|s)\s*$", text, re.MULTILINE)
    return float(found.group(1)) * _UNITS[found.group(2)] if found else float("nan")


def wrk(load: Load, seconds: float, connections: int, envoy_pid: int, authz_pid: int | None) -> Sample:
    """`wrk -t1 -c<connections> -d<seconds> --latency`; errors are socket errors plus answers
    other than the expected status (wrk counts non-2xx/3xx; a 403 scenario counts its own)."""
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", "-H", f"Host: {load.host}"]
    for name, value in load.headers:
        argv += ["-H", f"{name}: {value}"]
    argv.append(f"http://127.0.0.1:{load.port}{load.path}")
    envoy0 = cpu_seconds(envoy_pid)
    authz0 = tree_cpu_seconds(authz_pid) if authz_pid else 0.0
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    envoy1 = cpu_seconds(envoy_pid)
    authz1 = tree_cpu_seconds(authz_pid) if authz_pid else 0.0
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    socket = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    wrong = int(non_2xx.group(1)) if non_2xx else 0
    errors = socket + (wrong if load.expect < 400 else requests - wrong)
    done = max(requests, 1)
    return Sample(
        rps=rps,
        p50_ms=_latency(out, "50"),
        p90_ms=_latency(out, "90"),
        p99_ms=_latency(out, "99"),
        requests=requests,
        errors=errors,
        envoy_cpu_us=(envoy1 - envoy0) / done * 1e6,
        authz_cpu_us=(authz1 - authz0) / done * 1e6 if authz_pid else None,
        authz_rss_mb=rss_mb(authz_pid) if authz_pid else None,
    )


def paced(load: Load, seconds: float, rate: float, tmp: Path, connections: int = 64) -> dict[str, float]:
    """About `rate` requests/s: wrk with each of `connections` connections waiting a random time
    (mean connections/rate) before each request, so connections do not fire together. Still closed
    loop per connection: a slow answer delays that connection's next request (wrk reports latency
    from the send, so queueing behind a slow answer is understated)."""
    script = tmp / "paced.lua"
    mean_ms = connections / rate * 1000
    script.write_text(f"function delay() return math.random() * {2 * mean_ms:.3f} end\n")
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", "-s", str(script),
            "-H", f"Host: {load.host}"]  # fmt: skip
    for name, value in load.headers:
        argv += ["-H", f"{name}: {value}"]
    argv.append(f"http://127.0.0.1:{load.port}{load.path}")
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    return {"rps": rps, "p50_ms": _latency(out, "50"), "p90_ms": _latency(out, "90"), "p99_ms": _latency(out, "99")}
