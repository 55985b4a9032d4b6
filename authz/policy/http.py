"""Criteria about the request itself: http_method, http_path, cors_preflight."""

from __future__ import annotations

from dataclasses import dataclass

from authz.policy.ast import PolicyInput, Result
from authz.policy.matchers import StringMatcher
from authz.policy.reasons import Reason


@dataclass(frozen=True, slots=True)
class HttpMethod:
    matcher: StringMatcher
    name = "http_method"

    def evaluate(self, inp: PolicyInput) -> Result:
        if self.matcher.match(inp.request.method):
            return True, frozenset({Reason.HTTP_METHOD_OK})
        return False, frozenset({Reason.HTTP_METHOD_UNAUTHORIZED})


@dataclass(frozen=True, slots=True)
class HttpPath:
    """Matches the percent-decoded path without its query."""

    matcher: StringMatcher
    name = "http_path"

    def evaluate(self, inp: PolicyInput) -> Result:
        if self.matcher.match(inp.request.path):
            return True, frozenset({Reason.HTTP_PATH_OK})
        return False, frozenset({Reason.HTTP_PATH_UNAUTHORIZED})


@dataclass(frozen=True, slots=True)
class CorsPreflight:
    """An OPTIONS request carrying both Origin and Access-Control-Request-Method."""

    name = "cors_preflight"

    def evaluate(self, inp: PolicyInput) -> Result:
        headers = inp.request.headers
        ok = inp.request.method == "OPTIONS" and "origin" in headers and "access-control-request-method" in headers
        return (True, frozenset({Reason.CORS_REQUEST})) if ok else (False, frozenset({Reason.NON_CORS_REQUEST}))
