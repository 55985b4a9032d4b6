"""Reading the Cookie header and writing Set-Cookie lines with the configured attributes."""

from __future__ import annotations

from authz.config import Config


def parse(header: str) -> dict[str, str]:
    """Cookie name → value; the first of duplicate names wins (RFC 6265 §5.4 orders by path)."""
    out: dict[str, str] = {}
    for part in header.split(";"):
        name, eq, value = part.strip().partition("=")
        if eq and name and name not in out:
            out[name] = value.strip().strip('"')
    return out


def set_cookie(config: Config, name: str, value: str, max_age: int, *, path: str = "/") -> str:
    """A Set-Cookie line: HttpOnly, SameSite and Secure per config, Domain only with cookie_domain."""
    parts = [f"{name}={value}", f"Path={path}", f"Max-Age={max(0, max_age)}"]
    if config.cookie_domain:
        parts.append(f"Domain={config.cookie_domain}")
    if config.cookie_http_only:
        parts.append("HttpOnly")
    parts.append(f"SameSite={config.cookie_same_site.capitalize()}")
    if config.cookie_secure:
        parts.append("Secure")
    return "; ".join(parts)


def clear_cookie(config: Config, name: str, *, path: str = "/") -> str:
    return set_cookie(config, name, "", 0, path=path) + "; Expires=Thu, 01 Jan 1970 00:00:00 GMT"
