"""In-process cost of one Check, per scenario: CheckRequest in, CheckResponse out, no sockets.

    python scripts/bench_check.py                      # this checkout
    python scripts/bench_check.py --tree before=/path/to/other/checkout --tree after=.
    python scripts/bench_check.py --instructions --tree before=... --tree after=.   # callgrind

With several trees, runs alternate between them (a fresh interpreter per run, `--runs` each), so
both see the same machine noise; the table gives, per scenario, the median over runs of each run's
median and p99 of the CPU time one Check takes (thread time, so time spent descheduled on a busy
machine is not counted), in microseconds, and the ratio to the first tree. `--instructions`
counts instructions per Check under callgrind instead: slow, but the same on a noisy machine.
Envoy is not involved: this is the Python cost of the Check itself (protobuf adapter, gather,
decide, answer). The memory store is used, so no scenario waits on I/O.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

SCENARIOS = ("public+signed", "session+assertion", "session, no assertion", "deny", "login")

# Runs inside a fresh interpreter with the tree under test first on sys.path.
_RUN = r"""
import base64, gc, json, os, secrets, sys, time
N = int(sys.argv[1])

from authz._proto.envoy.service.auth.v3 import external_auth_pb2 as pb
import authz
# Whether the tree under test has metrics and the decision log (asked of its folder: an editable
# install of another checkout may answer imports of modules this tree lacks).
HAS_OPS = os.path.isdir(os.path.join(os.path.dirname(authz.__file__), "ops"))
try:  # the layout by concern
    from authz.config import parse_config
    from authz.envoy.adapter import to_response
    from authz.envoy.service import Authorization
    from authz.runtime.holder import RuntimeHolder
    from authz.runtime.state import Runtime
    from authz.sessions.session import Session, SessionHandle
    from authz.sessions.stores import MemoryStore
    from authz.signing.keys import generate_p256_pem

    def service(config):
        if not HAS_OPS:
            return _plain(config)
        # metrics and the decision log (authz/ops), as `authz serve` runs them with metrics_address
        from authz.ops.metrics import Metrics

        metrics = Metrics() if os.environ.get("AUTHZ_BENCH_METRICS", "1") == "1" else None
        rt = Runtime.build(config, MemoryStore(), **({"metrics": metrics} if metrics else {}))
        return rt, Authorization(RuntimeHolder(rt)).answer

    def _plain(config):
        rt = Runtime.build(config, MemoryStore())
        return rt, Authorization(RuntimeHolder(rt)).answer
except ImportError:  # the flat layout before it
    from authz.config import parse_config
    from authz.ext_authz import to_response
    from authz.keys import generate_p256_pem
    from authz.runtime import Runtime
    from authz.server import Authorization
    from authz.session import Session, SessionHandle
    from authz.stores import MemoryStore

    def service(config):
        rt = Runtime.build(config, MemoryStore())
        return rt, Authorization(rt).check

def route(rid, host, **extra):
    return {"id": rid, "from": f"http://{host}", "to": "http://127.0.0.1:9", **extra}

# The decision log's lines go to stderr, as in `authz serve`: here to /dev/null (a write per line).
os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
OPS = {"authorize_log_sample_rate": float(os.environ.get("AUTHZ_BENCH_SAMPLE", "1"))} if HAS_OPS else {}
config = parse_config({**OPS,
    "insecure_server": True, "address": "127.0.0.1:8080",
    "authenticate_service_url": "http://authenticate.localhost:8080",
    "shared_secret": base64.b64encode(secrets.token_bytes(32)).decode(),
    "cookie_secret": base64.b64encode(secrets.token_bytes(32)).decode(),
    "signing_key": base64.b64encode(generate_p256_pem()).decode(),
    "cookie_secure": False, "session_store": "memory:",
    "jwt_claims_headers": ["email"],
    "routes": [
        route("public", "public.localhost", allow_public_unauthenticated_access=True, pass_identity_headers=True),
        route("signed", "signed.localhost", allowed_domains=["example.com"], pass_identity_headers=True),
        route("plain", "plain.localhost", allowed_domains=["example.com"]),
        route("strict", "strict.localhost", allowed_domains=["example.org"]),
    ],
})
ONLY = sys.argv[2] if len(sys.argv) > 2 else None
WARMUP = 0 if ONLY else 200
rt, check = service(config)
now = int(time.time())
rt.store.put(Session("sid", "user-1", "ann@example.com", "Ann", ("g1", "g2"), {}, now, now + 86400))
# As `authz serve` does once it listens: what startup built is frozen out of the collector's sight.
gc.collect()
gc.freeze()

def cookie(host):
    return "_pomerium=" + rt.codec.seal(SessionHandle("sid", "user-1", host, now, now + 86400))

def request(route_id, host, **headers):
    message = pb.CheckRequest()
    http = message.attributes.request.http
    http.method, http.host, http.path, http.scheme = "GET", host, "/some/path?q=1", "http"
    http.id = "1234567890"
    http.headers.update({"accept": "text/html,application/xhtml+xml", "user-agent": "bench", **headers})
    message.attributes.context_extensions["route_id"] = route_id
    message.attributes.source.address.socket_address.address = "127.0.0.1"
    return message

cases = {
    "public+signed": (request("public", "public.localhost"), 200),
    "session+assertion": (request("signed", "signed.localhost", cookie=cookie("signed.localhost")), 200),
    "session, no assertion": (request("plain", "plain.localhost", cookie=cookie("plain.localhost")), 200),
    "deny": (request("strict", "strict.localhost", cookie=cookie("strict.localhost")), 403),
    "login": (request("plain", "plain.localhost"), 302),
}
out = {}
for name, (message, expected) in cases.items():
    if ONLY and name != ONLY:
        continue
    response = to_response(check(message, time.time()))
    status = response.denied_response.status.code if response.status.code else 200
    assert status == expected, (name, status)
    for _ in range(WARMUP):
        to_response(check(message, time.time()))
    times = []
    gc.collect()
    for _ in range(N):
        start = time.thread_time_ns()
        to_response(check(message, time.time()))
        times.append(time.thread_time_ns() - start)
    times.sort()
    out[name] = {"median": times[len(times) // 2] / 1000, "p99": times[int(len(times) * 0.99)] / 1000}
print(json.dumps(out))
"""


def run_once(tree: Path, n: int, extra: dict[str, str] | None = None) -> dict[str, dict[str, float]]:
    env = {**os.environ, "PYTHONPATH": str(tree), **(extra or {})}
    command = [sys.executable, "-c", _RUN, str(n)]
    out = subprocess.run(command, env=env, cwd=tree, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{tree}: {out.stderr.strip()}")
    result: dict[str, dict[str, float]] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def instructions(tree: Path, scenario: str, n: int, extra: dict[str, str] | None = None) -> int:
    """Instructions executed by a run of `n` Checks of one scenario, counted by callgrind."""
    with tempfile.TemporaryDirectory() as work:
        return _callgrind(tree, scenario, n, Path(work) / "callgrind.out", extra or {})


def _callgrind(tree: Path, scenario: str, n: int, out_file: Path, extra: dict[str, str]) -> int:
    command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_file}", sys.executable, "-c", _RUN]
    # A fixed hash seed: set and dict layouts (and so their probe counts) are the same in every run.
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONHASHSEED": "0", **extra}
    out = subprocess.run([*command, str(n), scenario], env=env, cwd=tree, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{tree}: {out.stderr.strip()[-2000:]}")
    for line in out.stderr.splitlines():
        if "Collected :" in line:
            return int(line.rsplit(":", 1)[1].strip())
    raise SystemExit(f"{tree}: callgrind gave no count")


def count_instructions(
    trees: list[tuple[str, str]],
    n: int,
    scenarios: tuple[str, ...] = SCENARIOS,
    extras: dict[str, dict[str, str]] | None = None,
) -> int:
    """Instructions per Check, per scenario and tree: the difference between runs of n and 2n Checks."""
    print(f"{'scenario':24}" + "".join(f"{name + ' instr/Check':>22}" for name, _ in trees) + "   ratio")
    first = trees[0][0]
    for scenario in scenarios:
        counts = {}
        for name, path in trees:
            tree = Path(path).resolve()
            extra = (extras or {}).get(name)
            counts[name] = (instructions(tree, scenario, 2 * n, extra) - instructions(tree, scenario, n, extra)) / n
        row = f"{scenario:24}" + "".join(f"{counts[name]:>22,.0f}" for name, _ in trees)
        if len(trees) > 1:
            row += "   " + ", ".join(f"{m}/{first} {counts[m] / counts[first]:.3f}" for m, _ in trees[1:])
        print(row, flush=True)
    print(f"(callgrind: instructions of {2 * n} minus {n} Checks, divided by {n}; deterministic, unlike time)")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--tree", action="append", default=[], help="name=path[,VAR=value...] of a checkout (default: this one)"
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("-n", type=int, default=5000, help="Checks per scenario per run")
    parser.add_argument("--instructions", action="store_true", help="count instructions with callgrind instead")
    parser.add_argument("--scenario", action="append", choices=SCENARIOS, help="only these (with --instructions)")
    args = parser.parse_args()
    # name=path[,VAR=value...]: the variables are set for that tree's runs (AUTHZ_BENCH_METRICS=0
    # turns metrics off, AUTHZ_BENCH_SAMPLE=0.01 samples the allows' decision lines).
    specs = [t.split("=", 1) for t in args.tree] or [["this", str(Path(__file__).resolve().parents[1])]]
    trees = [(name, rest.split(",")[0]) for name, rest in specs]
    extras = {name: dict(v.split("=", 1) for v in rest.split(",")[1:]) for name, rest in specs}
    if args.instructions:
        return count_instructions(trees, min(args.n, 200), tuple(args.scenario or SCENARIOS), extras)
    results: dict[str, list[dict[str, dict[str, float]]]] = {name: [] for name, _ in trees}
    for _ in range(args.runs):
        for name, path in trees:
            results[name].append(run_once(Path(path).resolve(), args.n, extras[name]))
    first = trees[0][0]
    header = f"{'scenario':24}" + "".join(f"{name + ' median':>18}{name + ' p99':>14}" for name, _ in trees)
    print(header + ("   ratio (median)" if len(trees) > 1 else ""))
    for scenario in SCENARIOS:
        row, medians = f"{scenario:24}", {}
        for name, _ in trees:
            median = statistics.median(r[scenario]["median"] for r in results[name])
            p99 = statistics.median(r[scenario]["p99"] for r in results[name])
            medians[name] = median
            row += f"{median:>15.1f} µs{p99:>11.1f} µs"
        if len(trees) > 1:
            row += "   " + ", ".join(f"{n}/{first} {medians[n] / medians[first]:.3f}" for n, _ in trees[1:])
        print(row)
    print(f"({args.runs} runs x {args.n} Checks per scenario and tree, alternating; Envoy not involved)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
