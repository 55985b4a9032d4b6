"""Policy vectors from tests/policy_vectors/*.yaml, read exactly as `authz policy eval` reads files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from authz.check.credentials import Credentials
from authz.check.decide import decide
from authz.check.facts import Action, Facts
from authz.cli.policy_eval import input_from, policy_from, verdict_json
from authz.config.model import Route
from authz.schema import yamlcore

VECTORS = Path(__file__).parent / "vectors"
DEFAULT_NOW = "2026-01-05T12:00:00Z"  # a Monday


def _vectors() -> list[Any]:
    out = []
    for file in sorted(VECTORS.glob("*.yaml")):
        for vector in yamlcore.load(file.read_text())["vectors"]:
            out.append(pytest.param(vector, id=f"{file.stem}: {vector['name']}"))
    return out


def test_there_are_enough_vectors() -> None:
    assert len(_vectors()) >= 150


@pytest.mark.parametrize("vector", _vectors())
def test_vector(vector: dict[str, Any]) -> None:
    data = dict(vector["input"])
    data.setdefault("now", DEFAULT_NOW)
    result = verdict_json(policy_from(vector["policy"]).evaluate(input_from(data, vector.get("now"))))
    expected = vector["expected"]
    for key in ("allowed", "allow", "deny", "login"):
        if key in expected:
            assert result[key] is expected[key], f"{key}: {result}"
    if "reasons" in expected:
        assert result["reasons"] == sorted(expected["reasons"]), result


@pytest.mark.parametrize("vector", _vectors())
def test_the_gate_decides_as_policy_eval_reports(vector: dict[str, Any]) -> None:
    """`policy eval` reports what the Check would do: the same action and the same reasons."""
    data = dict(vector["input"])
    data.setdefault("now", DEFAULT_NOW)
    policy = policy_from(vector["policy"])
    inp = input_from(data, vector.get("now"))
    result = verdict_json(policy.evaluate(inp))
    route = Route("r", 0, "https://app.example.com", "https", "app.example.com", (), policy)
    outcome = decide(Facts(inp.request, route, Credentials([], False, False, None), inp.session, inp.now))
    action = Action.LOGIN if result["login"] else Action.ALLOW if result["allowed"] else Action.DENY
    assert (outcome.action, list(outcome.reasons)) == (action, result["reasons"])
