"""The `authz` console script: the command line, or a clear word when the gate's packages are not
installed (`pip install authz` alone is the upstream verifier, authz.verify)."""

from __future__ import annotations

import sys


def main() -> int:
    try:
        from authz.cli import main as run
    except ModuleNotFoundError as exc:
        print(
            f"authz: the module {exc.name!r} is missing: the gate's commands need the server extra"
            " (pip install 'authz[server]'); `pip install authz` alone is the upstream verifier, authz.verify",
            file=sys.stderr,
        )
        return 1
    return run()
