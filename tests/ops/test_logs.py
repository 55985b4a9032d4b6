"""authz's own lines: JSON by default, text with `log_format: text`, one line each whatever the values."""

from __future__ import annotations

import json
import logging

from authz.ops.logs import JsonFormatter, TextFormatter


def _record(message: str, **fields: object) -> logging.LogRecord:
    record = logging.LogRecord("authz", logging.WARNING, __file__, 1, message, (), None)
    record.created = 1_800_000_000.5
    record.fields = fields  # type: ignore[attr-defined]
    return record


def test_json_lines() -> None:
    line = JsonFormatter().format(_record("worker exited", worker=1, status=-9))
    assert json.loads(line) == {"time": 1_800_000_000.5, "level": "warning", "logger": "authz",
                                "message": "worker exited", "worker": 1, "status": -9}  # fmt: skip


def test_text_lines_quote_what_is_not_plain() -> None:
    line = TextFormatter().format(_record("jit approved\nforged=1", user="a b", grant="g-1", retry_in=1.5))
    assert "\n" not in line
    assert line == ('2027-01-15T08:00:00Z WARNING authz: "jit approved\\nforged=1" user="a b" grant=g-1 retry_in=1.5')


def test_text_messages_that_could_forge_a_field_or_a_line_are_quoted() -> None:
    for message in ("login for user=admin", "a\u2028b", "a\x85b", 'say "hi"'):
        line = TextFormatter().format(_record(message))
        assert len(line.splitlines()) == 1 and '": "' not in line
        assert line.startswith('2027-01-15T08:00:00Z WARNING authz: "'), line
    assert TextFormatter().format(_record("authz serving")).endswith("authz: authz serving")
