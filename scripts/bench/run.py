"""`make bench`: authz side by side with Envoy alone, Envoy's own jwt_authn, the ceiling for any
ext_authz service and the Python floors (gRPC, and one on Envoy's HTTP ext_authz), every scenario
behind the same Envoy listener and route, interleaved in one run, then authz-session and envoy-only
at the same constant rate.

    python scripts/bench/run.py              # 3 reps x 10 s per scenario, then a constant-rate run
    python scripts/bench/run.py --quick      # 1 rep x 3 s, every scenario: under 2 minutes
    python scripts/bench/run.py --smoke      # proves the harness works (CI), no figures worth quoting

Writes bench/results/<UTC timestamp>.json, .md and .png. See scripts/bench/README.md.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import envoys
import measure
import report
import scenarios
import servers
from scenarios import VARIANTS, Scenario

PACKAGES = {"wrk": "wrk", "h2load": "nghttp2-client", "nginx": "nginx-light", "hey": "hey", "taskset": "util-linux"}
TOOLS = {"wrk": measure.wrk, "h2load": measure.h2load}
CONNECTIONS, RATE_CONNECTIONS = 50, 64
ALIASES = {"python-floor-threads": "python-floor-sync"}  # the name of earlier runs
HEY_CAVEAT = (
    "hey is closed loop: each of its 64 workers waits for its answer before the next request, and the"
    " workers tick together, so requests come in bursts and queueing behind a slow answer is not"
    " charged to the answers held back; the figures are the latency at about this rate, not an"
    " open-loop service time"
)
PACED_CAVEAT = (
    "wrk -c64 with a random delay before each request (mean 64/rate): no bursts, but closed loop per"
    " connection, so queueing behind a slow answer is understated"
)


def install_tools(needed: list[str]) -> None:
    """Debian's packages for the load tools and nginx, with apt when root; else say what is missing."""
    missing = [tool for tool in needed if shutil.which(tool) is None]
    if not missing:
        return
    packages = sorted({PACKAGES[tool] for tool in missing})
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print(f"installing {' '.join(packages)} with apt-get", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-q", *packages]
        if subprocess.run(install, capture_output=True, env=env, check=False).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env, check=False)
            subprocess.run(install, capture_output=True, env=env, check=False)
    still = [tool for tool in missing if shutil.which(tool) is None]
    if still:
        print(f"missing {', '.join(still)}: install the Debian packages {', '.join(packages)}", file=sys.stderr)
        raise SystemExit(1)


def parse() -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3, help="interleaved repetitions (median reported)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of load before each measurement")
    parser.add_argument("--tool", choices=sorted(TOOLS), default="wrk", help="the closed-loop load tool")
    parser.add_argument(
        "--rate-tool", choices=("wrk-paced", "hey"), default="wrk-paced", help="the constant-rate run's"
    )
    parser.add_argument("--quick", action="store_true", help="1 rep x 3 s of every scenario: under 2 minutes")
    parser.add_argument("--smoke", action="store_true", help="prove the harness works (CI): 4 scenarios x 2 s")
    parser.add_argument("--out", type=Path, default=servers.ROOT / "bench" / "results")
    choices = (*scenarios.SCENARIOS, *scenarios.CANDIDATES, *scenarios.WORKERS, *ALIASES)
    parser.add_argument("--scenario", action="append", choices=choices, help="only these (repeatable)")
    args = parser.parse_args()
    args.rate_seconds = args.duration
    if args.quick:
        args.reps, args.duration, args.warmup, args.rate_seconds = 1, 3.0, 1.0, 3.0
    if args.smoke:
        args.reps, args.duration, args.warmup, args.rate_seconds = 1, 2.0, 0.0, 1.0
    default = scenarios.SMOKE if args.smoke else scenarios.SCENARIOS
    names = [ALIASES.get(name, name) for name in args.scenario or default]
    return args, list(dict.fromkeys(names))


def main() -> int:
    args, names = parse()
    rate_tool = "hey" if args.rate_tool == "hey" else "wrk"
    install_tools(sorted({"wrk", "nginx", "taskset", args.tool, rate_tool}))
    with tempfile.TemporaryDirectory(prefix="authz-bench-") as work:
        procs: list[Any] = []
        try:
            built = scenarios.build(Path(work), names, procs)
            for scenario in built.values():
                print(f"checked {scenario.name}: {scenarios.check(scenario)}", flush=True)
            samples = run_reps(built, args)
            constant = constant_rate(built, samples, args, "authz-session")
            # A variant with a clearly higher maximum (the HTTP transport) at half its own too.
            faster = [
                name
                for name in VARIANTS
                if name in built and _median_rps(samples, name) > 1.1 * _median_rps(samples, "authz-session")
            ]
            own = {name: constant_rate(built, samples, args, name) for name in faster}
        finally:
            for proc in reversed(procs):
                proc.stop()
    tool = (
        f"wrk -t1 -c{CONNECTIONS} -d{args.duration:g}s --latency (a Lua script counts unexpected statuses)"
        if args.tool == "wrk"
        else f"h2load -t1 -c{CONNECTIONS} -m1 -D {args.duration:g} (h2c)"
    )
    result = {
        "machine": machine(),
        "tool": f"{tool}, warm-up {args.warmup:g}s, {args.reps} interleaved reps (median)",
        **report.summarise(samples, scenarios.REFERENCES, ("authz-session", *scenarios.VARIANTS)),
        "constant_rate": constant,
        **({"constant_rate_own": own} if own else {}),
    }
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    args.out.mkdir(parents=True, exist_ok=True)
    written = report.write(result, args.out / stamp)
    print(report.markdown(result))
    print("written:", ", ".join(str(p) for p in written))
    return 0


def run_reps(built: dict[str, Scenario], args: argparse.Namespace) -> dict[str, list[measure.Sample]]:
    """Rep 1 of every scenario, then rep 2, …: each sees the same drift of a noisy machine."""
    tool = TOOLS[args.tool]
    samples: dict[str, list[measure.Sample]] = {name: [] for name in built}
    for rep in range(args.reps):
        for name, s in built.items():
            if args.warmup:
                tool(s.load, args.warmup, CONNECTIONS)
            sample = measure.measure(tool, s.load, args.duration, CONNECTIONS, s.envoy_pid, s.server_pid)
            samples[name].append(sample)
            run = sample.run
            print(f"rep {rep + 1} {name:22} {run.rps:9.0f} req/s  p50 {run.p50_ms:.2f} ms"
                  f"  p99 {run.p99_ms:.2f} ms  errors {run.errors}", flush=True)  # fmt: skip
    return samples


def _median_rps(samples: dict[str, list[measure.Sample]], name: str) -> float:
    return statistics.median(s.run.rps for s in samples[name]) if samples.get(name) else 0.0


FLOORS_AT_RATE = ("ext-authz-limit", "python-floor-http", "python-floor", "python-floor-sync")


def constant_rate(
    built: dict[str, Scenario], samples: dict[str, list[measure.Sample]], args: argparse.Namespace, subject: str
) -> dict[str, Any] | None:
    """envoy-only, the floors measured in this run and `subject` at half `subject`'s measured
    maximum (for authz-session, its variants too): the latency each adds over envoy-only."""
    if subject not in built or "envoy-only" not in built or not args.rate_seconds:
        return None
    rate = _median_rps(samples, subject) / 2
    if rate < 1:  # hey -q 0 is no limit at all
        print(f"no constant-rate run: {subject}'s median is {rate * 2:.1f} req/s", file=sys.stderr)
        return None
    pace = measure.hey if args.rate_tool == "hey" else measure.wrk_paced
    go = functools.partial(pace, seconds=args.rate_seconds, rate=rate, connections=RATE_CONNECTIONS)
    variants = [n for n in VARIANTS if n in built] if subject == "authz-session" else []
    names = ("envoy-only", *(n for n in FLOORS_AT_RATE if n in built), subject, *variants)
    runs = {name: go(built[name].load) for name in names}
    for name, run in runs.items():
        print(f"constant {rate:.0f}/s {name:22} {run.rps:7.0f} req/s  p50 {run.p50_ms:.2f} ms"
              f"  p99 {run.p99_ms:.2f} ms  errors {run.errors}", flush=True)  # fmt: skip
    tool = (
        f"hey -c {RATE_CONNECTIONS} -q {rate / RATE_CONNECTIONS:.2f} -z {args.rate_seconds:g}s"
        if args.rate_tool == "hey"
        else f"wrk -t1 -c{RATE_CONNECTIONS} -d{args.rate_seconds:g}s with a random delay per request"
    )
    alone = runs["envoy-only"]
    return {
        "subject": subject,
        "rate": round(rate),
        "tool": tool,
        "caveat": HEY_CAVEAT if args.rate_tool == "hey" else PACED_CAVEAT,
        **{name: report.run_row(run) for name, run in runs.items()},
        "added_p50_ms": report.number(runs[subject].p50_ms - alone.p50_ms),
        "added_p99_ms": report.number(runs[subject].p99_ms - alone.p99_ms),
        "added_by": {
            name: {
                "p50_ms": report.number(run.p50_ms - alone.p50_ms),
                "p99_ms": report.number(run.p99_ms - alone.p99_ms),
            }
            for name, run in runs.items()
            if name != "envoy-only"
        },
    }


def machine() -> dict[str, Any]:
    model = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")), platform.processor(),
    )  # fmt: skip

    def git(*argv: str) -> str:
        return subprocess.run(["git", *argv], capture_output=True, text=True, cwd=servers.ROOT, check=False).stdout

    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "envoy": envoys.envoy_version(),
        "pinning": "Envoy on CPU 0 (--concurrency 1), every ext_authz server on CPU 1; load tool and upstream unpinned",
        "note": f"{os.cpu_count()} cores: Envoy, the ext_authz server, the load tool and the upstream share them"
        + (" and compete for CPU" if (os.cpu_count() or 1) < 4 else ""),
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": git("rev-parse", "--short", "HEAD").strip() + ("+dirty" if git("status", "--porcelain") else ""),
    }


if __name__ == "__main__":
    sys.exit(main())
