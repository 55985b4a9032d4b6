"""Session credentials on a request: the session cookie and Pomerium's authorization headers.

Everything in authz's name is found here, so that the answer step can remove all of it before the
upstream, whether or not it opens: every cookie in authz's namespace (`authz.web.cookies`), in any
case and in any `Cookie:` line, and an `Authorization` header carrying a Pomerium credential in
any case of its scheme (RFC 9110 §11.1), on any line. Only a cookie of its own `;`-separated pair
is a credential; one that follows a comma is removed and never opened (see `find_credentials`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from authz.web.cookies import CookieNames

# `Pomerium <token>` or `Bearer Pomerium-<token>`, schemes case-insensitive, at the start of a line
# or after the `,` that joins a repeated header.
_AUTHORIZATION = re.compile(r"(?:^|,)\s*(?:pomerium\s+|bearer\s+pomerium-)([^\s,]*)", re.IGNORECASE)
_PREFIX = re.compile(r"^\s*pomerium\s+", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Credentials:
    """Session tokens found on the request, where they were, and what must not reach the upstream."""

    tokens: list[str]  # headers first, then every session cookie in header order
    from_header: bool
    in_authorization: bool  # `Authorization` carries a Pomerium credential: remove the whole header
    other_cookies: str | None  # the Cookie header without authz's cookies; None if it had none
    bindings: tuple[tuple[str, str], ...] = ()  # login-binding cookies (name, value)
    conflict_marked: bool = False  # the conflict cookie: a sign-in already tried to clear a conflict


_NONE = Credentials([], False, False, None)


def _authz_pair(names: CookieNames, segment: str) -> bool:
    name, eq, _ = segment.strip().partition("=")
    return bool(eq) and names.is_authz(name.strip())


def find_credentials(headers: Mapping[str, str], names: CookieNames) -> Credentials:
    """Session tokens from `X-Pomerium-Authorization`, `Authorization` and the session cookie."""
    tokens: list[str] = []
    from_header = in_authorization = False
    if value := headers.get("x-pomerium-authorization", "").strip():
        tokens.append(_PREFIX.sub("", value).strip())
        from_header = True
    if auth := headers.get("authorization"):
        found = _AUTHORIZATION.findall(auth)
        if found:
            tokens.extend(token for token in found if token)
            from_header = in_authorization = True
    cookie = headers.get("cookie")
    # The common case (no authz cookie, or none at all) costs one lower() and one search.
    if not cookie or names.namespace not in cookie.lower():
        if not from_header:
            return _NONE
        return Credentials(tokens, from_header, in_authorization, None)
    kept: list[str] = []
    bindings: list[tuple[str, str]] = []
    conflict_marked = removed = False
    for part in cookie.split(";"):
        text = part.strip()
        name, eq, value = text.partition("=")
        name = name.strip()
        # A comma inside a cookie is a value's (browsers allow it) or the join of a second
        # `Cookie:` line: either way an authz cookie behind it is removed but never believed, or
        # a sibling site could plant `x=1,__Host-_pomerium=…` past the `__Host-` prefix.
        if "," in text and any(_authz_pair(names, segment) for segment in text.split(",")):
            removed = True
            continue
        if not eq or not names.is_authz(name):
            if text:
                kept.append(text)  # as it came, commas and all
            continue
        removed = True
        value = value.strip().strip('"')
        if name == names.session:
            tokens.append(value)
        elif name.startswith(names.binding_prefix):
            bindings.append((name, value))
        elif name == names.conflict:
            conflict_marked = True
    if not removed:  # the name only appeared inside another cookie: leave the header as it came
        return Credentials(tokens, from_header, in_authorization, None)
    return Credentials(tokens, from_header, in_authorization, "; ".join(kept), tuple(bindings), conflict_marked)
