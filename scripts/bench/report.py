"""Turn a run's samples into the result: medians and [min, max] spread per scenario, ratios within
each rep, and the JSON, Markdown table and PNG chart written next to each other.

    python scripts/bench/report.py bench/results/<stamp>.json   # redraw its .md and .png
"""

from __future__ import annotations

import importlib
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

import extra
from measure import Run, Sample


def number(value: float | None) -> float | None:
    """A figure for the JSON: rounded, None for none or NaN (a percentile a tool did not report)."""
    return None if value is None or math.isnan(value) else round(value, 3)


def _median(values: list[float]) -> float | None:
    return number(statistics.median(values)) if values else None


def _spread(values: list[float]) -> list[float]:
    return [round(min(values), 3), round(max(values), 3)] if values else []


def run_row(run: Run) -> dict[str, Any]:
    """One load tool run as JSON."""
    return {"rps": number(run.rps), "p50_ms": number(run.p50_ms), "p90_ms": number(run.p90_ms),
            "p99_ms": number(run.p99_ms), "requests": run.requests, "errors": run.errors}  # fmt: skip


def summarise(
    samples: dict[str, list[Sample]], references: tuple[str, ...], subjects: tuple[str, ...]
) -> dict[str, Any]:
    """Per scenario the median of each figure over reps, with its [min, max] over reps (errors are
    the total); per subject measured (authz-session, then each variant of it) and reference the
    ratio subject/reference of requests per second, computed within each rep, then its median and
    spread."""
    rows = []
    for name, runs in samples.items():
        every: dict[str, list[float | None]] = {
            "rps": [s.run.rps for s in runs],
            "p50_ms": [s.run.p50_ms for s in runs],
            "p90_ms": [s.run.p90_ms for s in runs],
            "p99_ms": [s.run.p99_ms for s in runs],
            "envoy_cpu_us": [s.envoy_cpu_us for s in runs],
            "authz_cpu_us": [s.authz_cpu_us for s in runs],
            "authz_rss_mb": [s.authz_rss_mb for s in runs],
        }
        # What a rep has (none for a server-less scenario; NaN: a percentile the tool did not report).
        figures = {key: [v for v in values if v is not None and not math.isnan(v)] for key, values in every.items()}
        rows.append({
            "name": name,
            **{key: _median(figures[key]) for key in ("rps", "p50_ms", "p90_ms", "p99_ms")},
            "errors": sum(s.run.errors for s in runs),
            "cpu_us_per_req": {"envoy": _median(figures["envoy_cpu_us"]), "authz": _median(figures["authz_cpu_us"])},
            "authz_rss_mb": _median(figures["authz_rss_mb"]),
            "spread": {key: _spread(values) for key, values in figures.items() if values},
        })  # fmt: skip
    ratios: dict[str, Any] = {}
    for subject in (s for s in subjects if s in samples):
        for ref in (r for r in references if r in samples):
            pairs = zip(samples[subject], samples[ref], strict=True)
            per_rep = [a.run.rps / b.run.rps for a, b in pairs if b.run.rps]
            ratios[f"{subject} / {ref}"] = {"median": _median(per_rep), "spread": _spread(per_rep)}
    return {"scenarios": rows, "ratios": ratios}


def _figure(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _range(spread: list[float], fmt: str) -> str:
    return f"{spread[0]:{fmt}}-{spread[1]:{fmt}}" if spread else "-"


def markdown(result: dict[str, Any]) -> str:
    """The table, the ratios and the constant-rate line, each with its caveat."""
    machine = result["machine"]
    lines = [
        f"Machine: {machine['cpu']}, {machine['cores']} cores, Linux {machine['kernel']}, Python {machine['python']},"
        f" Envoy {machine['envoy']}; commit {machine['commit']}, {machine['when']}.",
        f"Pinning: {machine['pinning']}. **{machine['note']}: every figure below is for this host.**",
        f"Load: {result['tool']}. Figures are medians over reps; errors are the total.",
        "",
        "| scenario | req/s | req/s min-max | p50 ms | p90 ms | p99 ms | errors "
        "| Envoy CPU µs/req | ext_authz CPU µs/req | ext_authz RSS MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in result["scenarios"]:
        cpu, latencies = row["cpu_us_per_req"], [_figure(row[key], ".2f") for key in ("p50_ms", "p90_ms", "p99_ms")]
        lines.append(
            f"| {row['name']} | {_figure(row['rps'], '.0f')} | {_range(row['spread'].get('rps', []), '.0f')}"
            f" | {' | '.join(latencies)} | {row['errors']} | {_figure(cpu['envoy'], '.0f')}"
            f" | {_figure(cpu['authz'], '.0f')} | {_figure(row['authz_rss_mb'], '.0f')} |"
        )
    if result["ratios"]:
        lines += ["", "| req/s ratio (within each rep) | median | min-max |", "|---|---:|---:|"]
        for name, ratio in result["ratios"].items():
            lines.append(f"| {name} | {_figure(ratio['median'], '.2f')} | {_range(ratio['spread'], '.2f')} |")
    for constant in (result.get("constant_rate"), *(result.get("constant_rate_own") or {}).values()):
        if constant:
            lines += ["", *_constant_rate(constant)]
    return "\n".join(lines) + "\n"


def _constant_rate(constant: dict[str, Any]) -> list[str]:
    """One constant-rate run: what the subject adds over envoy-only, then every row at that rate."""
    subject = constant.get("subject", "authz-session")
    alone, run = constant["envoy-only"], constant[subject]
    lines = [
        f"Constant rate, {constant['rate']} req/s (half {subject}'s median), `{constant['tool']}`: envoy-only p50"
        f" {_figure(alone['p50_ms'], '.2f')} ms / p99 {_figure(alone['p99_ms'], '.2f')} ms, {subject} p50"
        f" {_figure(run['p50_ms'], '.2f')} ms / p99 {_figure(run['p99_ms'], '.2f')} ms; **{subject} adds p50"
        f" {_figure(constant['added_p50_ms'], '+.2f')} ms, p99 {_figure(constant['added_p99_ms'], '+.2f')} ms**"
        f" (errors {alone['errors']} / {run['errors']}). Caveat: {constant['caveat']}.",
    ]
    added = constant.get("added_by") or {}
    if len(added) > 1:
        lines += ["", f"| at {constant['rate']} req/s | p50 ms | p99 ms | adds p50 ms | adds p99 ms | errors |",
                  "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
        for name, by in added.items():
            row = constant[name]
            lines.append(
                f"| {name} | {_figure(row['p50_ms'], '.2f')} | {_figure(row['p99_ms'], '.2f')}"
                f" | {_figure(by['p50_ms'], '+.2f')} | {_figure(by['p99_ms'], '+.2f')} | {row['errors']} |"
            )
    return lines


def _pyplot() -> Any:
    """matplotlib's pyplot (installed from the `bench` extra on first use), or None if it cannot be had."""
    if not extra.have("matplotlib"):
        return None
    matplotlib = importlib.import_module("matplotlib")
    matplotlib.use("Agg")
    return importlib.import_module("matplotlib.pyplot")


def draw_chart(result: dict[str, Any], path: Path) -> bool:
    """Throughput bars (with the reps' min-max) beside p50 and p99 bars, one row per scenario."""
    plt = _pyplot()
    if plt is None:
        return False
    rows = result["scenarios"]
    names, at = [r["name"] for r in rows], list(range(len(rows)))
    rps = [r["rps"] or 0 for r in rows]
    spreads = [r["spread"].get("rps") or [r["rps"] or 0] * 2 for r in rows]
    low = [value - spread[0] for value, spread in zip(rps, spreads, strict=True)]
    high = [spread[1] - value for value, spread in zip(rps, spreads, strict=True)]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 0.45 * len(rows) + 2))
    left.barh(at, rps, xerr=[low, high], color="#4472c4", capsize=3)
    left.set_xlabel("requests/s (median, bar: min-max over reps)")
    right.barh([p - 0.2 for p in at], [r["p50_ms"] or 0 for r in rows], height=0.4, label="p50", color="#70ad47")
    right.barh([p + 0.2 for p in at], [r["p99_ms"] or 0 for r in rows], height=0.4, label="p99", color="#ed7d31")
    right.set_xlabel("latency ms (median)")
    right.legend()
    for axes in (left, right):
        axes.set_yticks(at, names)
        axes.invert_yaxis()
        axes.grid(axis="x", alpha=0.3)
    machine = result["machine"]
    fig.suptitle(f"authz benchmark, {machine['cpu']}: {machine['note']}\n{result['tool']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def write(result: dict[str, Any], stem: Path) -> list[Path]:
    """`<stem>.json`, `<stem>.md` and (unless matplotlib cannot be had) `<stem>.png`."""
    out = [stem.with_suffix(".json"), stem.with_suffix(".md")]
    out[0].write_text(json.dumps(result, indent=2) + "\n")
    out[1].write_text(markdown(result))
    if draw_chart(result, stem.with_suffix(".png")):
        out.append(stem.with_suffix(".png"))
    else:
        print("no chart: matplotlib could not be installed (pip install '.[bench]')", file=sys.stderr)
    return out


if __name__ == "__main__":
    for name in sys.argv[1:]:
        source = Path(name)
        print(*write(json.loads(source.read_text()), source.with_suffix("")), sep="\n")
