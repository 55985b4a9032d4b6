"""envoy/envoy.yaml is exactly what `authz envoy-config` gives for the demo config, and Envoy accepts it."""

from __future__ import annotations

from pathlib import Path

from authz.dev.run import example_bootstrap
from tests.envoy.test_bootstrap import envoy_validate

EXAMPLE = Path(__file__).resolve().parents[2] / "envoy" / "envoy.yaml"


def test_example_bootstrap_is_in_step_with_the_generator() -> None:
    assert EXAMPLE.read_text() == example_bootstrap(), "run: python scripts/gen_envoy_example.py"


def test_example_bootstrap_validates(tmp_path: Path) -> None:
    envoy_validate(EXAMPLE.read_text(), tmp_path)
