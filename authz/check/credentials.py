"""Session credentials on a request: the `_pomerium` cookie and Pomerium's authorization headers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Credentials:
    """Session tokens found on the request, and where."""

    tokens: list[str]
    from_header: bool
    in_authorization: bool
    other_cookies: str | None  # the Cookie header without the session cookie; None if untouched


def find_credentials(headers: Mapping[str, str], cookie_name: str) -> Credentials:
    """Session tokens from `X-Pomerium-Authorization`, `Authorization` and the session cookie."""
    tokens: list[str] = []
    from_header = in_authorization = False
    if value := headers.get("x-pomerium-authorization", "").strip():
        tokens.append(value.removeprefix("Pomerium ").strip())
        from_header = True
    auth = headers.get("authorization", "").strip()
    if auth.startswith("Pomerium "):
        tokens.append(auth[len("Pomerium ") :].strip())
        from_header = in_authorization = True
    elif auth.startswith("Bearer Pomerium-"):
        tokens.append(auth[len("Bearer Pomerium-") :].strip())
        from_header = in_authorization = True
    other_cookies = None
    if cookie := headers.get("cookie"):
        kept, found = [], False
        for part in cookie.split(";"):
            name, eq, value = part.strip().partition("=")
            if eq and name == cookie_name:
                tokens.append(value.strip().strip('"'))
                found = True
            elif part.strip():
                kept.append(part.strip())
        if found:
            other_cookies = "; ".join(kept)
    return Credentials(tokens, from_header, in_authorization, other_cookies)
