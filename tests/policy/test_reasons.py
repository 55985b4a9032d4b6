"""Every reason string comes from the registry, and every reason has an explanation for the pages."""

from __future__ import annotations

import ast
from pathlib import Path

import authz
from authz.policy.reasons import EXPLAIN, Reason, explain

PACKAGE = Path(authz.__file__).parent
REGISTRY = PACKAGE / "policy" / "reasons.py"


def test_every_reason_is_explained() -> None:
    assert set(EXPLAIN) == set(Reason)
    assert all(text.endswith(".") for text in EXPLAIN.values())
    assert explain("email-unauthorized") == EXPLAIN[Reason.EMAIL_UNAUTHORIZED]
    assert explain("no-such-reason") == ""


def test_no_reason_is_spelt_outside_the_registry() -> None:
    # `accept` and `reject` are also the criterion names and a header name: only the kebab-case
    # reasons are unambiguous enough to search for.
    values = {r.value for r in Reason if "-" in r.value}
    found = []
    for path in PACKAGE.rglob("*.py"):
        if path == REGISTRY or "_proto" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                text = node.value
                if text in values or any(text.endswith(suffix) for suffix in ("-ok", "-unauthorized")):
                    found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: {text!r}")
    assert found == []
