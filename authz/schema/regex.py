"""Regular expressions as Envoy reads them: RE2 (`safe_regex`), never Python's `re`, which accepts
patterns Envoy refuses (look-behind, back-references) and whose `match` is not anchored at the end."""

from __future__ import annotations

from typing import Any

import re2

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # a bad pattern is a config error with its path, not a line on stderr


def compile_regex(pattern: str) -> Any:
    """The pattern as RE2 compiles it; ValueError with RE2's reason for one Envoy would refuse."""
    try:
        return re2.compile(pattern, options=_OPTIONS)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        raise ValueError(reason.decode("utf-8", "replace") if isinstance(reason, bytes) else str(reason)) from None
