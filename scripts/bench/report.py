"""Turn a run's samples into the result: medians and spread per scenario, ratios within each rep,
and the JSON, Markdown table and PNG chart written next to each other."""

from __future__ import annotations

import importlib
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from measure import Sample


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 3) if values else float("nan")


def _spread(values: list[float]) -> list[float]:
    return [round(min(values), 3), round(max(values), 3)] if values else []


def summarise(
    samples: dict[str, list[Sample]], names: list[str], references: tuple[str, ...], subject: str
) -> dict[str, Any]:
    """Per scenario the median of each figure over reps with its [min, max]; per reference the
    ratio subject/reference of requests per second, computed within each rep, then its median."""
    rows = []
    for name in names:
        runs = samples[name]
        authz_cpu = [s.authz_cpu_us for s in runs if s.authz_cpu_us is not None]
        rss = [s.authz_rss_mb for s in runs if s.authz_rss_mb is not None]
        rows.append({
            "name": name,
            "rps": _median([s.rps for s in runs]),
            "p50_ms": _median([s.p50_ms for s in runs]),
            "p90_ms": _median([s.p90_ms for s in runs]),
            "p99_ms": _median([s.p99_ms for s in runs]),
            "errors": sum(s.errors for s in runs),
            "cpu_us_per_req": {"envoy": _median([s.envoy_cpu_us for s in runs]),
                               "authz": _median(authz_cpu) if authz_cpu else None},
            "authz_rss_mb": _median(rss) if rss else None,
            "spread": {"rps": _spread([s.rps for s in runs]), "p99_ms": _spread([s.p99_ms for s in runs]),
                       "authz_cpu_us": _spread(authz_cpu)},
        })  # fmt: skip
    ratios: dict[str, Any] = {}
    if subject in samples:
        for ref in references:
            if ref in samples:
                per_rep = [a.rps / b.rps for a, b in zip(samples[subject], samples[ref], strict=True) if b.rps]
                ratios[f"{subject} / {ref}"] = {"median": _median(per_rep), "spread": _spread(per_rep)}
    return {"scenarios": rows, "ratios": ratios}


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"Machine: {result['machine']['cpu']}, {result['machine']['cores']} cores "
        f"({result['machine']['note']}); {result['machine']['pinning']}. Envoy {result['machine']['envoy']}.",
        f"Load: {result['tool']}.",
        "",
        "| scenario | req/s | p50 ms | p90 ms | p99 ms | errors | Envoy CPU µs/req | ext_authz CPU µs/req | RSS MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in result["scenarios"]:
        cpu = row["cpu_us_per_req"]
        authz = f"{cpu['authz']:.0f}" if cpu["authz"] is not None else "-"
        rss = f"{row['authz_rss_mb']:.0f}" if row["authz_rss_mb"] is not None else "-"
        lines.append(
            f"| {row['name']} | {row['rps']:.0f} | {row['p50_ms']:.2f} | {row['p90_ms']:.2f} | {row['p99_ms']:.2f}"
            f" | {row['errors']} | {cpu['envoy']:.0f} | {authz} | {rss} |"
        )
    if result["ratios"]:
        lines += ["", "| ratio (req/s, within each rep) | median | spread |", "|---|---:|---|"]
        for name, ratio in result["ratios"].items():
            lines.append(f"| {name} | {ratio['median']:.2f} | {ratio['spread']} |")
    constant = result.get("constant_rate")
    if constant:
        session = constant["authz-session"]
        added = f"p50 {constant['added_p50_ms']:+.2f} ms, p99 {constant['added_p99_ms']:+.2f} ms"
        lines += [
            "",
            f"Constant rate {constant['rate']} req/s ({constant['tool']}): authz-session p50"
            f" {session['p50_ms']:.2f} ms, p99 {session['p99_ms']:.2f} ms; added over envoy-only: {added}.",
        ]
    return "\n".join(lines) + "\n"


def _pyplot() -> Any:
    """matplotlib's pyplot, installed into this interpreter's environment on first use (the
    `bench` extra): only the chart needs it."""
    try:
        importlib.import_module("matplotlib")
    except ImportError:
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "matplotlib>=3.8"], check=False)
    try:
        matplotlib = importlib.import_module("matplotlib")
    except ImportError:
        return None
    matplotlib.use("Agg")
    return importlib.import_module("matplotlib.pyplot")


def draw_chart(result: dict[str, Any], path: Path) -> bool:
    plt = _pyplot()
    if plt is None:
        return False
    rows = result["scenarios"]
    names = [r["name"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    left.barh(names, [r["rps"] for r in rows], color="#4472c4")
    left.set_xlabel("requests/s (median)")
    left.invert_yaxis()
    positions = range(len(rows))
    right.barh([p - 0.2 for p in positions], [r["p50_ms"] for r in rows], height=0.4, label="p50", color="#70ad47")
    right.barh([p + 0.2 for p in positions], [r["p99_ms"] for r in rows], height=0.4, label="p99", color="#ed7d31")
    right.set_yticks(list(positions), names)
    right.invert_yaxis()
    right.set_xlabel("latency ms")
    right.legend()
    fig.suptitle(f"authz benchmark — {result['tool']} — {result['machine']['note']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def write(result: dict[str, Any], stem: Path, *, chart: bool = True) -> list[Path]:
    """`<stem>.json`, `<stem>.md` and (unless told not to, or matplotlib cannot be had) `<stem>.png`."""
    out = [stem.with_suffix(".json"), stem.with_suffix(".md")]
    out[0].write_text(json.dumps(result, indent=2) + "\n")
    out[1].write_text(markdown(result))
    if chart and draw_chart(result, stem.with_suffix(".png")):
        out.append(stem.with_suffix(".png"))
    return out
