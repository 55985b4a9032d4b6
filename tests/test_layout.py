"""The package's shape: every module imports alone, and modules live in their subpackages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import authz

PACKAGE = Path(authz.__file__).parent

# One interpreter; before each import every authz module is forgotten, so each module is imported
# exactly as a fresh interpreter would import it: an import cycle fails here whatever ran before.
_IMPORT_EACH_ALONE = """
import importlib, json, pkgutil, sys, traceback
import authz
names = [m.name for m in pkgutil.walk_packages(authz.__path__, "authz.") if ".__main__" not in m.name]
failed = {}
for name in names:
    for loaded in [k for k in sys.modules if k == "authz" or k.startswith("authz.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception:
        failed[name] = traceback.format_exc(limit=3).splitlines()[-1]
print(json.dumps({"count": len(names), "failed": failed}))
"""


def test_every_module_imports_alone() -> None:
    import json

    out = subprocess.run([sys.executable, "-c", _IMPORT_EACH_ALONE], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["count"] > 40
    assert result["failed"] == {}


def test_only_the_entry_points_errors_and_the_verifier_sit_outside_the_subpackages() -> None:
    """verify.py stands alone on purpose: `pip install authz` without the server extra ships it with
    nothing but PyJWT, so it may import no other module of authz's (tests/verify checks)."""
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert top == ["__init__.py", "__main__.py", "command.py", "errors.py", "verify.py"]


def test_tests_mirror_the_package() -> None:
    import pkgutil

    tests = Path(__file__).parent
    subpackages = {m.name for m in pkgutil.iter_modules([str(PACKAGE)]) if m.ispkg and not m.name.startswith("_")}
    assert sorted(name for name in subpackages if not (tests / name / "__init__.py").is_file()) == []
