"""Write envoy/envoy.yaml: the Envoy bootstrap `authz envoy-config` gives for the `authz dev` demo config.

Run after changing the bootstrap generator: python scripts/gen_envoy_example.py
(tests/envoy/test_example.py fails while the file is out of step.)
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from authz.dev.run import example_bootstrap  # noqa: E402


def main() -> int:
    (ROOT / "envoy" / "envoy.yaml").write_text(example_bootstrap())
    print("wrote envoy/envoy.yaml")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
