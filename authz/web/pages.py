"""Error answers people and programs can read: HTML pages and JSON bodies, never a traceback."""

from __future__ import annotations

import html
import json
from collections.abc import Sequence

from authz.policy.reasons import explain
from authz.web.negotiate import Format

STATUS_TEXT = {
    302: "Found",
    400: "Bad Request",
    401: "Unauthenticated",
    403: "Forbidden",
    404: "Not Found",
    503: "Service Unavailable",
}
GRPC_STATUS = {400: 13, 401: 16, 403: 7, 404: 12, 503: 14}
_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:40rem;margin:4rem auto;padding:0 1rem;"
    "color:#1f2328}h1{font-size:1.6rem}code{background:#f3f4f6;padding:.1rem .3rem}"
    "li{margin:.3rem 0}.meta{color:#59636e;font-size:.9rem}"
)


def error_body(
    status: int,
    reasons: Sequence[str],
    request_id: str,
    fmt: Format,
    *,
    sign_in_url: str | None = None,
    detail: str | None = None,
    account: str | None = None,
) -> tuple[str, str]:
    """(content type, body) for a denied request; `account` names who is signed in (HTML only)."""
    title = STATUS_TEXT.get(status, "Error")
    if fmt is Format.JSON or fmt is Format.GRPC:
        data: dict[str, object] = {
            "status": status,
            "error": title,
            "reasons": list(reasons),
            "request_id": request_id,
        }
        if sign_in_url:
            data["sign_in_url"] = sign_in_url
        if detail:
            data["detail"] = detail
        return "application/json", json.dumps(data)
    if fmt is Format.TEXT:
        lines = [f"{status} {title}", *(f"reason: {r}" for r in reasons), f"request id: {request_id}"]
        return "text/plain; charset=utf-8", "\n".join(lines) + "\n"
    items = "".join(f"<li><code>{html.escape(r)}</code> {html.escape(explain(r))}</li>" for r in reasons)
    parts = [
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{status} {title}</title>",
        f"<meta name=viewport content='width=device-width'><style>{_STYLE}</style></head><body>",
        f"<h1>{status} {html.escape(title)}</h1>",
    ]
    if detail:
        parts.append(f"<p>{html.escape(detail)}</p>")
    if items:
        parts.append(f"<p>Why:</p><ul>{items}</ul>")
    if sign_in_url:
        parts.append(f"<p><a href='{html.escape(sign_in_url, quote=True)}'>Sign in</a></p>")
    if account:
        parts.append(
            f"<form method=post action='/.pomerium/sign_out'><p>Signed in as <b>{html.escape(account)}</b>. "
            "<button type=submit>Sign out</button> to use another account.</p></form>"
        )
    parts.append(f"<p class=meta>Request ID: <code>{html.escape(request_id)}</code></p></body></html>")
    return "text/html; charset=utf-8", "".join(parts)


def html_page(status: int, title: str, body: str) -> tuple[str, str]:
    """A small HTML page; `body` must already be escaped HTML."""
    return "text/html; charset=utf-8", (
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title>"
        f"<meta name=viewport content='width=device-width'><style>{_STYLE}"
        "table{border-collapse:collapse}th{text-align:left;padding-right:1rem}"
        "button{font-size:1rem;padding:.4rem 1rem}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>{body}</body></html>"
    )
