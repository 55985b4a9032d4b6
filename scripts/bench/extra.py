"""What the benchmark needs beyond the `dev` extra (matplotlib for the chart, uvloop for the floors
on it) comes from pyproject's `bench` extra, pip-installed into this interpreter's environment on
first use."""

from __future__ import annotations

import importlib
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def have(module: str) -> bool:
    """Whether `module` imports here, after pip-installing its pin from the `bench` extra if not."""
    try:
        importlib.import_module(module)
        return True
    except ImportError:
        pass
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["bench"]
    wanted = [spec for spec in extra if spec.startswith(module)]
    if not wanted:
        return False
    print(f"installing {' '.join(wanted)} from the bench extra", flush=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", *wanted], check=False)
    importlib.invalidate_caches()
    try:
        importlib.import_module(module)
        return True
    except ImportError:
        return False
