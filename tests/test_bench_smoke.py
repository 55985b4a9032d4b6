"""`make bench` works: the harness builds its scenarios, checks each answers correctly, and writes
the result in its documented shape. No timing is asserted (the figures are for people). The smoke
run takes about 10-30 s here, so it runs in `make test` (marked e2e: it drives real Envoys)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from authz.dev.stack import idp_available

ROOT = Path(__file__).resolve().parents[1]
_MISSING = [tool for tool in ("wrk", "nginx", "hey", "taskset") if shutil.which(tool) is None]
SMOKE = ["envoy-only", "python-floor", "python-floor-http", "authz-session"]

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(idp_available() is not None, reason=f"local IdP unavailable: {idp_available()}"),
    pytest.mark.skipif(
        bool(_MISSING) and (os.geteuid() != 0 or shutil.which("apt-get") is None),
        reason=f"{', '.join(_MISSING)} missing, and not root with apt-get to install them",
    ),
]


def test_the_benchmark_harness_runs_and_writes_its_result(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "scripts/bench/run.py", "--smoke", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    for cannot in ("install the Debian packages", "could not be installed"):
        if out.returncode != 0 and cannot in out.stderr:
            pytest.skip(out.stderr.strip().splitlines()[-1])  # apt or pip could not install them here
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    # Each scenario passed its check before it was measured (a failed check exits non-zero).
    for name in SMOKE:
        assert f"checked {name}: 200, upstream got" in out.stdout, out.stdout
    assert "checked authz-session: 200, upstream got assertion and email" in out.stdout
    assert "checked python-floor-http: 200, upstream got no identity header; refused: /_refuse (403)" in out.stdout

    (result_file,) = tmp_path.glob("*.json")
    result = json.loads(result_file.read_text())
    assert set(result) == {"machine", "tool", "scenarios", "ratios", "constant_rate"}
    assert {"cpu", "cores", "kernel", "python", "envoy"} <= set(result["machine"])
    assert [row["name"] for row in result["scenarios"]] == SMOKE
    for row in result["scenarios"]:
        assert set(row) == {"name", "rps", "p50_ms", "p90_ms", "p99_ms", "errors", "cpu_us_per_req", "authz_rss_mb",
                            "spread"}  # fmt: skip
        assert row["rps"] > 0 and row["errors"] == 0, row  # every answer had the expected status
        assert set(row["cpu_us_per_req"]) == {"envoy", "authz"}
        assert row["cpu_us_per_req"]["envoy"] > 0
        assert (row["cpu_us_per_req"]["authz"] is None) == (row["name"] == "envoy-only")
        assert len(row["spread"]["rps"]) == 2
    assert set(result["ratios"]) == {f"authz-session / {name}" for name in SMOKE[:-1]}
    assert all(ratio["median"] > 0 for ratio in result["ratios"].values())
    constant = result["constant_rate"]
    assert {"rate", "tool", "caveat", "envoy-only", "authz-session", "added_p50_ms", "added_p99_ms"} <= set(constant)
    assert constant["tool"].startswith("wrk -t1 -c64 ") and "random delay" in constant["tool"]  # paced by wrk
    assert constant["authz-session"]["errors"] == 0
    # The floors of the run at the same rate: what any (Python) ext_authz server adds here.
    assert set(constant["added_by"]) == {"python-floor", "python-floor-http", "authz-session"}
    stem = result_file.with_suffix("")
    assert stem.with_suffix(".md").read_text().startswith("Machine:")
    chart = stem.with_suffix(".png")  # matplotlib (the `bench` extra) is pip-installed if it can be
    assert chart.read_bytes().startswith(b"\x89PNG") if chart.exists() else "no chart" in out.stderr
