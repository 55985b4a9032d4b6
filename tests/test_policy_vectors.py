"""Policy vectors from tests/policy_vectors/*.yaml, evaluated through the interpreter."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from authz import yamlcore
from authz.errors import Problem
from authz.policy import LegacyOptions, Policy, PolicyInput, parse_policy
from authz.request import RequestContext
from authz.session import Session

VECTORS = Path(__file__).parent / "policy_vectors"


def _vectors() -> list[Any]:
    out = []
    for file in sorted(VECTORS.glob("*.yaml")):
        for vector in yamlcore.load(file.read_text())["vectors"]:
            out.append(pytest.param(vector, id=f"{file.stem}: {vector['name']}"))
    return out


def compile_vector(vector: dict[str, Any]) -> Policy:
    problems: list[Problem] = []
    policy = Policy()
    if "legacy" in vector:
        legacy = {k: tuple(v) if isinstance(v, list) else v for k, v in vector["legacy"].items()}
        policy = LegacyOptions(**legacy).to_policy()
    if "policy" in vector:
        policy = policy.merged(parse_policy(vector["policy"], "policy", problems))
    assert not problems, problems
    return policy


def build_input(data: dict[str, Any]) -> PolicyInput:
    request = data.get("request", {})
    req = RequestContext.build(
        method=request.get("method", "GET"),
        host=request.get("host", "app.example.com"),
        target=request.get("path", "/"),
        headers=request.get("headers", {}),
        source_ip=request.get("source_ip", "203.0.113.9"),
    )
    raw = data.get("session")
    session = None
    if raw is not None:
        session = Session(
            id="sid",
            user_id=raw.get("user", ""),
            email=raw.get("email", ""),
            name=raw.get("name", ""),
            groups=tuple(raw.get("groups", ())),
            claims=raw.get("claims", {}),
        )
    now = datetime.fromisoformat(data.get("now", "2026-01-05T12:00:00Z"))
    return PolicyInput(req, session, now.astimezone(UTC))


@pytest.mark.parametrize("vector", _vectors())
def test_vector(vector: dict[str, Any]) -> None:
    verdict = compile_vector(vector).evaluate(build_input(vector["input"]))
    expected = vector["expected"]
    assert verdict.allowed is expected["allowed"]
    if "reasons" in expected:
        assert list(verdict.reasons) == sorted(expected["reasons"])
    if "login" in expected:
        assert verdict.login is expected["login"]
    if "deny" in expected:
        assert verdict.deny is expected["deny"]
    if "allow" in expected:
        assert verdict.allow is expected["allow"]
