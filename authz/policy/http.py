"""Criteria about the request itself: http_method, http_path, cors_preflight."""

from __future__ import annotations

from dataclasses import dataclass

from authz.policy.ast import PolicyInput, Result, outcomes
from authz.policy.matchers import StringMatcher
from authz.policy.reasons import Reason

_METHOD = outcomes(Reason.HTTP_METHOD_OK, Reason.HTTP_METHOD_UNAUTHORIZED)
_PATH = outcomes(Reason.HTTP_PATH_OK, Reason.HTTP_PATH_UNAUTHORIZED)
_CORS = outcomes(Reason.CORS_REQUEST, Reason.NON_CORS_REQUEST)


@dataclass(frozen=True, slots=True)
class HttpMethod:
    matcher: StringMatcher
    name = "http_method"

    def evaluate(self, inp: PolicyInput) -> Result:
        if self.matcher.match(inp.request.method):
            return _METHOD[0]
        return _METHOD[1]


@dataclass(frozen=True, slots=True)
class HttpPath:
    """Matches the percent-decoded path without its query."""

    matcher: StringMatcher
    name = "http_path"

    def evaluate(self, inp: PolicyInput) -> Result:
        if self.matcher.match(inp.request.path):
            return _PATH[0]
        return _PATH[1]


@dataclass(frozen=True, slots=True)
class CorsPreflight:
    """An OPTIONS request carrying both Origin and Access-Control-Request-Method."""

    name = "cors_preflight"

    def evaluate(self, inp: PolicyInput) -> Result:
        headers = inp.request.headers
        ok = inp.request.method == "OPTIONS" and "origin" in headers and "access-control-request-method" in headers
        return _CORS[0] if ok else _CORS[1]
