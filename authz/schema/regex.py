"""Regular expressions as Envoy reads them: RE2 (`safe_regex`), never Python's `re`, which accepts
patterns Envoy refuses (look-behind, back-references) and whose `match` is not anchored at the end."""

from __future__ import annotations

from typing import Any

import re2

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # a bad pattern is a config error with its path, not a line on stderr


# Envoy refuses a pattern whose compiled RE2 program is larger than this (its runtime key
# re2.max_program_size.error_level), and with it the whole config, at start.
ENVOY_MAX_PROGRAM_SIZE = 100


def compile_regex(pattern: str) -> Any:
    """The pattern as RE2 compiles it; ValueError with the reason for one Envoy would refuse."""
    try:
        compiled = re2.compile(pattern, options=_OPTIONS)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        raise ValueError(reason.decode("utf-8", "replace") if isinstance(reason, bytes) else str(reason)) from None
    if compiled.programsize > ENVOY_MAX_PROGRAM_SIZE:
        raise ValueError(
            f"its RE2 program size is {compiled.programsize}, over the {ENVOY_MAX_PROGRAM_SIZE} Envoy accepts"
            " (re2.max_program_size.error_level): simplify it, or split it into several"
        )
    return compiled
