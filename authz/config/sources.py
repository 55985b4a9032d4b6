"""What `authz check-config` prints after "ok": each global key that is set, its value as given
(secrets and passwords never shown), and where it came from (the file, or an environment variable)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from authz.config.model import Config
from authz.config.store import masked

# Keys whose values are secrets (inline keys, passwords, client secrets): shown as "(set, not shown)".
_SECRET_ENDINGS = ("secret", "_key", "password", "basic_auth")


def _secret(key: str) -> bool:
    return key.endswith(_SECRET_ENDINGS) or key in ("signing_key", "internal_tls_key", "metrics_key")


def _shown(key: str, value: Any) -> str:
    if _secret(key):
        return "(set, not shown)"
    if key == "session_store" and isinstance(value, str):
        return masked(value)
    if key == "routes" and isinstance(value, list):
        return f"{len(value)} route{'s' if len(value) != 1 else ''}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return "{" + ", ".join(str(k) for k in value) + "}"  # a mapping's keys, never its values
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def sources(config: Config, data: Mapping[str, Any]) -> list[str]:
    """One line per key the merged config data sets: `key  value  source`, aligned."""
    env = dict(config.from_env)
    rows = [(key, _shown(key, value), f"${env[key]}" if key in env else config.source) for key, value in data.items()]
    width = max((len(k) for k, _, _ in rows), default=0)
    shown = max((len(v) for _, v, _ in rows), default=0)
    return [f"{k.ljust(width)}  {v.ljust(shown)}  {where}" for k, v, where in rows]
