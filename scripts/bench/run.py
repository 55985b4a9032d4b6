"""`make bench`: authz side by side with Envoy alone, Envoy's own ceiling for ext_authz and the Python
floors, every scenario behind the same Envoy listener and route, interleaved in one run.

    python scripts/bench/run.py              # 3 reps x 10 s per scenario, then a constant-rate run
    python scripts/bench/run.py --quick      # 1 rep x 3 s: under 2 minutes
    python scripts/bench/run.py --smoke      # proves the harness works (CI), no figures worth quoting

Writes bench/results/<UTC timestamp>.json, .md and .png. See scripts/bench/README.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import report
import servers
from measure import Load, Sample, paced, wrk

TOOLS = {"wrk": "wrk", "nginx": "nginx-light", "taskset": "util-linux"}
REFERENCES = ("envoy-only", "envoy-jwt-authn", "ext-authz-limit", "python-floor", "python-floor-threads")
CONNECTIONS = 50


def install_tools(needed: list[str]) -> None:
    """Debian's packages for the load tools and nginx, with apt when root; else say what is missing."""
    missing = [tool for tool in needed if shutil.which(tool) is None]
    if not missing:
        return
    packages = sorted({TOOLS[tool] for tool in missing})
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-q", *packages]
        if subprocess.run(install, capture_output=True, env=env, check=False).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env, check=False)
            subprocess.run(install, capture_output=True, env=env, check=False)
    still = [tool for tool in missing if shutil.which(tool) is None]
    if still:
        raise SystemExit(f"missing {', '.join(still)}: install the Debian packages {', '.join(packages)}")


def status_of(load: Load, path: str | None = None) -> tuple[int, str]:
    """One request as the load tool sends it: the status and the body."""
    request = urllib.request.Request(f"http://127.0.0.1:{load.port}{path or load.path}")
    request.add_header("Host", load.host)
    for name, value in load.headers:
        request.add_header(name, value)

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    try:
        with urllib.request.build_opener(NoRedirect).open(request, timeout=10) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def check(name: str, load: Load, signed: bool) -> None:
    """Before measuring: the scenario answers what it should, and a signed one reaches the upstream
    with an assertion (the upstream's /_seen/ echoes the header it got)."""
    status, _ = status_of(load)
    if status != load.expect:
        raise SystemExit(f"{name}: expected {load.expect}, got {status}")
    if signed:
        _, seen = status_of(load, "/_seen/")
        if not seen.startswith("eyJ"):
            raise SystemExit(f"{name}: the upstream got no X-Pomerium-Jwt-Assertion")


def build(tmp: Path, names: list[str], procs: list[Any]) -> dict[str, tuple[Load, int, int | None, bool]]:
    """Start what the scenarios need (each process goes into `procs` as it starts, so a failure
    half-way stops what was started); per scenario (load, envoy pid, ext_authz pid, signed)."""
    up, up_port = servers.upstream(tmp)
    procs.append(up)
    idp_port, client_secret = servers.free_port(), secrets.token_urlsafe(24)
    authz_grpc, authz_envoy = servers.free_port(), servers.free_port()
    base = servers.authz_config(tmp, up_port, authz_grpc, authz_envoy, f"http://localhost:{idp_port}", client_secret)
    app = servers.APP_HOST
    out: dict[str, tuple[Load, int, int | None, bool]] = {}

    def envoy(name: str, grpc_port: int, with_ext_authz: bool = True) -> tuple[int, int]:
        config = {**base, "grpc_address": f"127.0.0.1:{grpc_port}", "address": f"127.0.0.1:{servers.free_port()}"}
        proc, port, _ = servers.envoy_for(tmp, name, config, with_ext_authz=with_ext_authz)
        procs.append(proc)
        return proc.pid, port

    if "envoy-only" in names:
        pid, port = envoy("none", servers.free_port(), with_ext_authz=False)
        out["envoy-only"] = (Load(port, app), pid, None, False)
    if "envoy-jwt-authn" in names:
        jwks, token = servers.bench_jwt()
        config = {**base, "address": f"127.0.0.1:{servers.free_port()}"}
        proc, port, _ = servers.envoy_for(tmp, "jwt-authn", config, jwt_authn=jwks)
        procs.append(proc)
        out["envoy-jwt-authn"] = (Load(port, app, ((servers.JWT_HEADER, token),)), proc.pid, None, False)
        if status_of(Load(port, app))[0] != 401:  # and it does check: no token, no entry
            raise SystemExit("envoy-jwt-authn: a request without a token was not refused")
    if "ext-authz-limit" in names:
        canned, canned_port = servers.canned_ext_authz(tmp)
        procs.append(canned)
        pid, port = envoy("canned", canned_port)
        out["ext-authz-limit"] = (Load(port, app), pid, canned.pid, False)
    for transport, name in (
        ("aio", "python-floor"),
        ("threads", "python-floor-threads"),
        ("uvloop", "python-floor-uvloop"),
    ):
        if name in names:
            floor, floor_port = servers.python_floor(tmp, transport)
            procs.append(floor)
            pid, port = envoy(name, floor_port)
            out[name] = (Load(port, app), pid, floor.pid, False)
    if any(n.startswith("authz-") for n in names):
        authz_scenarios(tmp, base, idp_port, client_secret, names, out, procs)
    return out


def authz_scenarios(
    tmp: Path, base: dict[str, Any], idp_port: int, client_secret: str, names: list[str],
    out: dict[str, tuple[Load, int, int | None, bool]], procs: list[Any],
) -> None:  # fmt: skip
    """authz behind its own generated Envoy, with a user signed in through the real IdP."""
    auth = base["authenticate_service_url"]
    why = servers.idp_unavailable()
    if why:
        raise SystemExit(f"the authz scenarios sign in through the local IdP, which cannot run: {why}")
    procs.append(servers.start_idp(idp_port, tmp, [f"{auth}/oauth2/callback"], client_secret))
    envoy_proc, envoy_port, _ = servers.envoy_for(tmp, "authz", base)  # writes authz.config.yaml
    procs.append(envoy_proc)
    path = tmp / "authz.config.yaml"
    authz = servers.spawn("authz", [sys.executable, "-m", "authz", "serve", "-c", str(path)], tmp, servers.AUTHZ_CPU)
    procs.append(authz)
    servers.wait_port(authz, int(base["grpc_address"].rsplit(":", 1)[1]))
    cookies = servers.sign_in(envoy_port, [servers.APP_HOST, "nosign.bench", "deny.bench"])

    def jar(host: str) -> tuple[tuple[str, str], ...]:
        return (("Cookie", f"_pomerium={cookies[host]}"),)

    html = (("Accept", "text/html"),)
    loads = {
        "authz-session": (Load(envoy_port, servers.APP_HOST, jar(servers.APP_HOST)), True),
        "authz-session-nosign": (Load(envoy_port, "nosign.bench", jar("nosign.bench")), False),
        "authz-public": (Load(envoy_port, "public.bench"), True),
        "authz-deny": (Load(envoy_port, "deny.bench", jar("deny.bench"), expect=403), False),
        "authz-login": (Load(envoy_port, servers.APP_HOST, html, expect=302), False),
    }
    for name, (load, signed) in loads.items():
        if name in names:
            out[name] = (load, envoy_proc.pid, authz.pid, signed)


# Transport candidates measured on demand (--scenario), not in the default run.
CANDIDATES = ("python-floor-uvloop",)
SCENARIOS = (*REFERENCES, "authz-session", "authz-session-nosign", "authz-public", "authz-deny", "authz-login")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3, help="interleaved repetitions (median reported)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of load before each measurement")
    parser.add_argument("--quick", action="store_true", help="1 rep x 3 s, short constant-rate run")
    parser.add_argument("--smoke", action="store_true", help="prove the harness works (CI): 3 scenarios, 1 s")
    parser.add_argument("--out", type=Path, default=servers.ROOT / "bench" / "results")
    parser.add_argument(
        "--scenario", action="append", choices=(*SCENARIOS, *CANDIDATES), help="only these (repeatable)"
    )
    args = parser.parse_args()
    names = list(args.scenario or SCENARIOS)
    constant_seconds = 10.0
    if args.quick:
        args.reps, args.duration, args.warmup, constant_seconds = 1, 3.0, 1.0, 3.0
    if args.smoke:
        args.reps, args.duration, args.warmup, constant_seconds = 1, 1.0, 0.0, 0.0
        names = args.scenario or ["envoy-only", "python-floor-threads", "authz-session"]
    install_tools(["wrk", "nginx", "taskset"])
    with tempfile.TemporaryDirectory(prefix="authz-bench-") as work:
        tmp = Path(work)
        procs: list[Any] = []
        try:
            scenarios = build(tmp, names, procs)
            for name in names:
                load, _, _, signed = scenarios[name]
                check(name, load, signed)
            samples = run_reps(scenarios, names, args)
            constant = constant_rate(scenarios, samples, constant_seconds, tmp) if constant_seconds else None
        finally:
            for proc in reversed(procs):
                proc.stop()
    result = report.summarise(samples, names, REFERENCES, "authz-session")
    result = {"machine": machine(), "tool": f"wrk -t1 -c{CONNECTIONS} -d{args.duration:g}s --latency, "
              f"{args.reps} interleaved reps (median)", **result, "constant_rate": constant}  # fmt: skip
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    args.out.mkdir(parents=True, exist_ok=True)
    written = report.write(result, args.out / stamp, chart=not args.smoke)
    print(report.markdown(result))
    print("written:", ", ".join(str(p) for p in written))
    return 0


def run_reps(
    scenarios: dict[str, tuple[Load, int, int | None, bool]], names: list[str], args: argparse.Namespace
) -> dict[str, list[Sample]]:
    """Rep 1 of every scenario, then rep 2, …: each sees the same drift of a noisy machine."""
    samples: dict[str, list[Sample]] = {name: [] for name in names}
    for rep in range(args.reps):
        for name in names:
            load, envoy_pid, authz_pid, _ = scenarios[name]
            if args.warmup:
                wrk(load, args.warmup, CONNECTIONS, envoy_pid, authz_pid)
            sample = wrk(load, args.duration, CONNECTIONS, envoy_pid, authz_pid)
            samples[name].append(sample)
            print(f"rep {rep + 1} {name:22} {sample.rps:9.0f} req/s  p50 {sample.p50_ms:.2f} ms"
                  f"  p99 {sample.p99_ms:.2f} ms  errors {sample.errors}", flush=True)  # fmt: skip
    return samples


def constant_rate(
    scenarios: dict[str, tuple[Load, int, int | None, bool]], samples: dict[str, list[Sample]], seconds: float,
    tmp: Path,
) -> dict[str, Any] | None:  # fmt: skip
    """authz-session and envoy-only at half authz-session's measured maximum: the latency authz adds."""
    if "authz-session" not in samples or "envoy-only" not in samples:
        return None
    rate = statistics.median(s.rps for s in samples["authz-session"]) / 2
    runs = {name: paced(scenarios[name][0], seconds, rate, tmp) for name in ("envoy-only", "authz-session")}
    added = {f"added_{k}": round(runs["authz-session"][k] - runs["envoy-only"][k], 3) for k in ("p50_ms", "p99_ms")}
    tool = ("wrk -c64 with a random delay before each request (mean 64/rate): paced, but closed loop per"
            " connection, so queueing behind a slow answer is understated")  # fmt: skip
    return {"rate": round(rate), "tool": tool, **runs, **added}


def machine() -> dict[str, Any]:
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "envoy": servers.envoy_version(),
        "pinning": "Envoy on CPU 0, every ext_authz server on CPU 1; load tool and upstream unpinned",
        "note": "2 cores: Envoy, authz, the load tool and the upstream compete for CPU",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=servers.ROOT, check=False
        ).stdout.strip(),
        "time": time.time(),
    }


if __name__ == "__main__":
    sys.exit(main())
