"""The exceptions authz raises. A policy denial is a value (`Verdict`), never one of these.

AuthzError                  every fault authz raises on purpose
├── ConfigError             the config is invalid; carries every problem with its path
├── InvalidSession          a cookie or token that does not open (tampered, expired, foreign)
└── RequestError            a request that authz refuses before policy; carries status and reason
    ├── BadRequest          400: a path or header authz cannot interpret safely
    └── RouteNotFound       404: no route with the route_id Envoy sent
"""

from __future__ import annotations

from dataclasses import dataclass


class AuthzError(Exception):
    """Base class of every fault authz raises on purpose."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One config error: where it is (`routes[2].policy[0].allow.and[1]`) and what is wrong."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(AuthzError):
    """The config is invalid; `problems` lists every error found, each with its path."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class InvalidSession(AuthzError):
    """A session credential that does not open: treated as no session, never as a crash."""


class RequestError(AuthzError):
    """A request refused before policy evaluation."""

    status: int = 400
    reason: str = "bad-request"

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(detail)


class BadRequest(RequestError):
    """The request cannot be interpreted safely (for example an encoded slash in the path)."""

    status = 400
    reason = "bad-request"


class RouteNotFound(RequestError):
    """Envoy sent a route_id that the current config does not have."""

    status = 404
    reason = "route-not-found"


class IdpError(RequestError):
    """The identity provider is unreachable or answered something authz cannot use."""

    status = 502
    reason = "idp-unavailable"


class IdpTimeout(IdpError):
    """The identity provider did not answer within idp_timeout."""

    status = 504
    reason = "idp-timeout"


class IdpDenied(IdpError):
    """The identity provider refused the sign-in (`access_denied`)."""

    status = 401
    reason = "idp-access-denied"
