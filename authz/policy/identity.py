"""Criteria about who is asking: accept, reject, authenticated_user, user, email, domain, groups."""

from __future__ import annotations

from dataclasses import dataclass

from authz.policy import reasons as R
from authz.policy.ast import PolicyInput, Result
from authz.policy.matchers import ListMatcher, StringMatcher

_ACCEPTED: Result = (True, frozenset({R.ACCEPT}))
_REJECTED: Result = (False, frozenset({R.REJECT}))
_UNAUTHENTICATED: Result = (False, frozenset({R.USER_UNAUTHENTICATED}))


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


def _verdict(ok: bool, good: str, bad: str) -> Result:
    return (True, frozenset({good})) if ok else (False, frozenset({bad}))


@dataclass(frozen=True, slots=True)
class AuthenticatedUser:
    name = "authenticated_user"

    def evaluate(self, inp: PolicyInput) -> Result:
        if inp.session is None:
            return _UNAUTHENTICATED
        return _verdict(bool(inp.session.user_id), R.USER_OK, R.USER_UNAUTHORIZED)


@dataclass(frozen=True, slots=True)
class User:
    matcher: StringMatcher
    name = "user"

    def evaluate(self, inp: PolicyInput) -> Result:
        if inp.session is None:
            return _UNAUTHENTICATED
        return _verdict(self.matcher.match(inp.session.user_id), R.USER_OK, R.USER_UNAUTHORIZED)


@dataclass(frozen=True, slots=True)
class Email:
    matcher: StringMatcher
    name = "email"

    def evaluate(self, inp: PolicyInput) -> Result:
        if inp.session is None:
            return _UNAUTHENTICATED
        return _verdict(self.matcher.match(inp.session.email), R.EMAIL_OK, R.EMAIL_UNAUTHORIZED)


@dataclass(frozen=True, slots=True)
class Domain:
    matcher: StringMatcher
    name = "domain"

    def evaluate(self, inp: PolicyInput) -> Result:
        if inp.session is None:
            return _UNAUTHENTICATED
        local, at, domain = inp.session.email.rpartition("@")
        ok = bool(local and at and domain) and self.matcher.match(domain)
        return _verdict(ok, R.DOMAIN_OK, R.DOMAIN_UNAUTHORIZED)


@dataclass(frozen=True, slots=True)
class Groups:
    matcher: ListMatcher
    name = "groups"

    def evaluate(self, inp: PolicyInput) -> Result:
        if inp.session is None:
            return _UNAUTHENTICATED
        return _verdict(self.matcher.match(inp.session.groups), R.GROUPS_OK, R.GROUPS_UNAUTHORIZED)
