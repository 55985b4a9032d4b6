"""The compose stack's files as the tests read them: compose.yaml, authz's config in it, and the
`setup` service's output written into a folder here instead of the `state` volume."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "compose.yaml"
AUTHZ_CONFIG = ROOT / "deploy" / "compose" / "authz.yaml"
SETUP = ROOT / "deploy" / "compose" / "setup.py"
STATE = "/etc/authz"  # where the `state` volume is mounted in every container


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def authz_config() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(AUTHZ_CONFIG.read_text())
    return loaded


def relocated(config: dict[str, Any], state: Path) -> dict[str, Any]:
    """`config` with the state volume's paths moved to `state` (YAML text replace: every key)."""
    text = yaml.safe_dump(config, sort_keys=False).replace(f"{STATE}/", f"{state}/")
    moved: dict[str, Any] = yaml.safe_load(text)
    return moved


def run_setup(folder: Path, config: dict[str, Any] | None = None) -> tuple[Path, Path]:
    """Run the setup service's script as compose does, into `folder/state`, for the compose config
    relocated there (or `config`, already relocated); the state folder and the config's path."""
    state = folder / "state"
    config_path = folder / "authz.yaml"
    config_path.write_text(yaml.safe_dump(config or relocated(authz_config(), state), sort_keys=False))
    result = subprocess.run(
        [sys.executable, str(SETUP), "--state", str(state), "--config", str(config_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return state, config_path
