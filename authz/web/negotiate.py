"""Which answer a client wants: the best `Accept` match (RFC 9110 §12.5.1) and browser detection."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum


class Format(StrEnum):
    HTML = "text/html"
    JSON = "application/json"
    TEXT = "text/plain"
    GRPC = "application/grpc"
    NONE = ""  # an Accept header that accepts none of what we offer


# Offered in Pomerium's order: on equal preference the earlier one wins, so `*/*` means HTML.
_OFFERED = (Format.HTML, Format.JSON, Format.TEXT)


def _quality(ranges: list[tuple[str, str, float]], media: str) -> float:
    kind, _, sub = media.partition("/")
    best, specificity = 0.0, -1
    for r_kind, r_sub, q in ranges:
        if r_kind == kind and r_sub == sub:
            level = 2
        elif r_kind == kind and r_sub == "*":
            level = 1
        elif r_kind == "*" and r_sub == "*":
            level = 0
        else:
            continue
        if level > specificity:
            best, specificity = q, level
    return best


def best_format(accept: str | None) -> Format | None:
    """The most acceptable of HTML/JSON/text; None when Accept is absent, empty or unparsable."""
    if not accept or not accept.strip():
        return None
    ranges = []
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        kind, slash, sub = media.lower().partition("/")
        if not slash or not kind or not sub:
            return None
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    return None
        ranges.append((kind, sub, q))
    scored = [(_quality(ranges, f.value), -i, f) for i, f in enumerate(_OFFERED)]
    q, _, choice = max(scored)
    return choice if q > 0 else Format.NONE


def is_grpc(headers: Mapping[str, str]) -> bool:
    content_type = headers.get("content-type", "").lower()
    return content_type.startswith(("application/grpc", "application/grpc-web"))


def response_format(headers: Mapping[str, str]) -> Format:
    """The body format for an error answer."""
    if is_grpc(headers):
        return Format.GRPC
    best = best_format(headers.get("accept"))
    if best is Format.NONE:
        return Format.JSON
    return best if best in (Format.JSON, Format.TEXT) else Format.HTML


def is_browser(headers: Mapping[str, str], *, session_header: bool) -> bool:
    """A client to redirect to sign-in rather than answer 401 (reference §4.2)."""
    if session_header or is_grpc(headers):
        return False
    if headers.get("x-requested-with", "").lower() == "xmlhttprequest":
        return False
    best = best_format(headers.get("accept"))
    return best is None or best is Format.HTML
