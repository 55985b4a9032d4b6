"""`make bench` works: the harness builds its scenarios, checks each answers correctly, and writes
the result in its documented shape. No timing is asserted (the figures are for people)."""

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
_MISSING = [tool for tool in ("wrk", "nginx", "taskset") if shutil.which(tool) is None]

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(idp_available() is not None, reason=f"local IdP unavailable: {idp_available()}"),
    pytest.mark.skipif(
        bool(_MISSING) and os.geteuid() != 0, reason=f"{', '.join(_MISSING)} missing and not root to install them"
    ),
]


def test_the_benchmark_harness_runs_and_writes_its_result(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "scripts/bench/run.py", "--smoke", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    if out.returncode != 0 and "missing " in out.stderr and "install the Debian packages" in out.stderr:
        pytest.skip(out.stderr.strip().splitlines()[-1])  # apt could not install wrk or nginx here
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    (result_file,) = tmp_path.glob("*.json")
    result = json.loads(result_file.read_text())
    assert set(result) >= {"machine", "tool", "scenarios", "ratios", "constant_rate"}
    names = [row["name"] for row in result["scenarios"]]
    assert names == ["envoy-only", "python-floor-threads", "authz-session"]
    for row in result["scenarios"]:
        assert row["rps"] > 0 and row["errors"] == 0, row
        assert set(row) >= {"p50_ms", "p90_ms", "p99_ms", "cpu_us_per_req", "authz_rss_mb"}
        assert row["cpu_us_per_req"]["envoy"] > 0
    assert result["ratios"]["authz-session / envoy-only"]["median"] > 0
    assert (tmp_path / result_file.name.replace(".json", ".md")).read_text().startswith("Machine:")
