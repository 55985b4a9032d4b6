"""authz's own log lines (not the decision log): one JSON object per line on stderr, or text.

    {"time": 1796414400.123, "level": "info", "logger": "authz", "message": "authz serving", …}
    2026-12-04T18:00:00Z INFO authz: authz serving grpc_address=127.0.0.1:9191 …

`log_format: text` quotes any value that is not plain, as the decision log does, so a value never
forges a field or a line.
"""

from __future__ import annotations

import json
import logging
import sys
import time

from authz.ops.decisions import quote, text_value


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info).splitlines()[-1]
        return json.dumps(entry)


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message key=value …` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        message = record.getMessage()
        if not message.isprintable() or "=" in message or '"' in message:
            message = quote(message)  # no line break, no key=value that reads as a field
        fields = dict(getattr(record, "fields", {}))
        if record.exc_info:
            fields["error"] = self.formatException(record.exc_info).splitlines()[-1]
        rest = "".join(f" {key}={text_value(value)}" for key, value in fields.items())
        return f"{stamp}Z {record.levelname} {record.name}: {message}{rest}"


def configure_logging(level: str, fmt: str = "json") -> None:
    """authz's lines to stderr at `log_level`, as JSON or text."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(TextFormatter() if fmt == "text" else JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel({"warn": "WARNING"}.get(level, level.upper()))
    # HTTP client request lines carry URLs (authorization codes, tokens in queries): never log them.
    for noisy in ("httpx2", "httpcore2", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
