"""Criteria about who is asking: accept, reject, authenticated_user, user, email, domain, groups."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from authz.policy.ast import PolicyInput, Result, outcomes
from authz.policy.matchers import ListMatcher, StringMatcher, canonical
from authz.policy.reasons import Reason

_ACCEPTED: Result = (True, frozenset({Reason.ACCEPT}))
_REJECTED: Result = (False, frozenset({Reason.REJECT}))
_UNAUTHENTICATED: Result = (False, frozenset({Reason.USER_UNAUTHENTICATED}))


@dataclass(frozen=True, slots=True)
class Accept:
    name = "accept"

    def evaluate(self, inp: PolicyInput) -> Result:
        return _ACCEPTED


@dataclass(frozen=True, slots=True)
class Reject:
    name = "reject"

    def evaluate(self, inp: PolicyInput) -> Result:
        return _REJECTED


_USER = outcomes(Reason.USER_OK, Reason.USER_UNAUTHORIZED)
_EMAIL = outcomes(Reason.EMAIL_OK, Reason.EMAIL_UNAUTHORIZED)
_DOMAIN = outcomes(Reason.DOMAIN_OK, Reason.DOMAIN_UNAUTHORIZED)
_GROUPS = outcomes(Reason.GROUPS_OK, Reason.GROUPS_UNAUTHORIZED)
_CLAIM = outcomes(Reason.CLAIM_OK, Reason.CLAIM_UNAUTHORIZED)


def _verdict(ok: bool, results: tuple[Result, Result]) -> Result:
    return results[0] if ok else results[1]


@dataclass(frozen=True, slots=True)
class AuthenticatedUser:
    name = "authenticated_user"

    def evaluate(self, inp: PolicyInput) -> Result:
        if inp.session is None:
            return _UNAUTHENTICATED
        return _verdict(bool(inp.session.user_id), _USER)


@dataclass(frozen=True, slots=True)
class User:
    matcher: StringMatcher
    name = "user"

    def evaluate(self, inp: PolicyInput) -> Result:
        if inp.session is None:
            return _UNAUTHENTICATED
        return _verdict(self.matcher.match(inp.session.user_id), _USER)


@dataclass(frozen=True, slots=True)
class Email:
    matcher: StringMatcher
    name = "email"

    def evaluate(self, inp: PolicyInput) -> Result:
        if inp.session is None:
            return _UNAUTHENTICATED
        return _verdict(self.matcher.match(inp.session.email), _EMAIL)


@dataclass(frozen=True, slots=True)
class Domain:
    matcher: StringMatcher
    name = "domain"

    def evaluate(self, inp: PolicyInput) -> Result:
        if inp.session is None:
            return _UNAUTHENTICATED
        # Exactly one `@`: `a@evil.example@example.com` has no domain, not `example.com`.
        local, at, domain = inp.session.email.partition("@")
        ok = bool(local and at and domain) and "@" not in domain and self.matcher.match(domain)
        return _verdict(ok, _DOMAIN)


@dataclass(frozen=True, slots=True)
class Groups:
    matcher: ListMatcher
    name = "groups"

    def evaluate(self, inp: PolicyInput) -> Result:
        if inp.session is None:
            return _UNAUTHENTICATED
        return _verdict(self.matcher.match(inp.session.groups), _GROUPS)


_MISSING = object()


def lookup_claim(claims: Mapping[str, Any], path: str, depth: int = 0) -> Any:
    """A claim by name or dotted path into nested objects (`resource_access.app.roles`).

    The literal key wins (claim names may contain dots, like `https://example.com/roles`); then
    each `.` is tried as a step into a nested object.
    """
    if path in claims:
        return claims[path]
    if depth >= 8:
        return _MISSING
    start = 0
    while (dot := path.find(".", start)) != -1:
        head = claims.get(path[:dot])
        if isinstance(head, Mapping):
            found = lookup_claim(head, path[dot + 1 :], depth + 1)
            if found is not _MISSING:
                return found
        start = dot + 1
    return _MISSING


def claim_values(claims: Mapping[str, Any], path: str) -> list[str]:
    """Every claim is a list: a scalar is a one-element list; objects and missing claims match nothing."""
    value = lookup_claim(claims, path)
    if value is _MISSING:
        return []
    items = value if isinstance(value, list) else [value]
    return [text for text in (canonical(item) for item in items) if text is not None]


@dataclass(frozen=True, slots=True)
class Claim:
    path: str
    matcher: ListMatcher
    name = "claim"

    def evaluate(self, inp: PolicyInput) -> Result:
        if inp.session is None:
            return _UNAUTHENTICATED
        claims = inp.session.claims
        values = claim_values(claims, self.path)
        if not values and self.path in ("email", "name", "sub", "user", "groups"):
            values = _session_field(inp, self.path)
        return _verdict(self.matcher.match(values), _CLAIM)


def _session_field(inp: PolicyInput, name: str) -> list[str]:
    session = inp.session
    assert session is not None
    if name == "groups":
        return list(session.groups)
    value = {"email": session.email, "name": session.name, "sub": session.user_id, "user": session.user_id}[name]
    return [value] if value else []
