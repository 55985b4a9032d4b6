"""The exceptions authz raises. A policy denial is a value (`Verdict`), never one of these.

AuthzError                      every fault authz raises on purpose
├── ConfigError                 the config is invalid; carries every problem with its path
├── InvalidSession              a session credential that does not open (tampered, expired, foreign)
└── RequestError                a request answered with an error page: carries status and reason
    ├── BadRequest              400 bad-request: the client sent something authz refuses
    ├── StoreUnavailable        503 store-unavailable: the session store (Redis) is out of reach
    └── IdpError                a step with the identity provider failed
        ├── InvalidIdToken      400 invalid-id-token: the ID token failed verification
        ├── IdpRefused          the IdP answered with an OAuth `error` (kept in `.error`):
        │                       401 idp-access-denied for access_denied, else 400 idp-refused
        └── IdpUnavailable      502 idp-unavailable: transport error, HTTP 5xx, unusable answer
            └── IdpTimeout      504 idp-timeout: no answer within idp_timeout
└── GrantError                  a just-in-time grants call refused, answered as {"error": …}
    ├── GrantInvalid            400: a bad body, duration or reason
    ├── GrantUnauthenticated    401: no session
    ├── GrantForbidden          403: not an approver, one's own request, or the wrong host
    ├── GrantNotFound           404: no such grant or route (or a route without jit)
    ├── GrantConflict           409: the grant is not in the state the call needs
    └── GrantNotJson            415: a state-changing call without `Content-Type: application/json`

Callers act on the class: the refresher ends a session on `IdpRefused` with `invalid_grant` or on
`InvalidIdToken` (a refreshed identity that fails verification), retries `IdpUnavailable` with
back-off, and logs other refusals (an operator fault such as `invalid_client`) loudly and retries.
"""

from __future__ import annotations

from dataclasses import dataclass

from authz.policy.reasons import Reason


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
    """A request refused with an error page; `detail` is safe to show to the client."""

    status: int = 400
    reason: Reason = Reason.BAD_REQUEST

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(detail)


class BadRequest(RequestError):
    """The client sent something authz refuses (an encoded slash, a forged link, a replayed handoff)."""

    status = 400
    reason = Reason.BAD_REQUEST


class Busy(RequestError):
    """authz holds as much as it will for requests in flight (e.g. sign-ins with long return URLs)."""

    status = 503
    reason = Reason.INTERNAL_ERROR


class StoreUnavailable(RequestError):
    """The session store (Redis) did not answer in time or refused the connection: a 503 page,
    never an allow and never a change reported done."""

    status = 503
    reason = Reason.STORE_UNAVAILABLE


class IdpError(RequestError):
    """A step with the identity provider failed; see the subclasses for which way."""

    status = 502
    reason = Reason.IDP_UNAVAILABLE


class InvalidIdToken(IdpError):
    """The ID token failed verification (OpenID Connect Core §3.1.3.7)."""

    status = 400
    reason = Reason.INVALID_ID_TOKEN


class IdpRefused(IdpError):
    """The identity provider answered with an OAuth error code (RFC 6749 §4.1.2.1, §5.2)."""

    def __init__(self, error: str, detail: str) -> None:
        self.error = error
        denied = error == "access_denied"
        self.status = 401 if denied else 400
        self.reason = Reason.IDP_ACCESS_DENIED if denied else Reason.IDP_REFUSED
        super().__init__(detail)


class IdpUnavailable(IdpError):
    """The identity provider is unreachable, answered HTTP 5xx, or answered something unusable."""

    status = 502
    reason = Reason.IDP_UNAVAILABLE


class IdpTimeout(IdpUnavailable):
    """The identity provider did not answer within idp_timeout."""

    status = 504
    reason = Reason.IDP_TIMEOUT


class GrantError(AuthzError):
    """A just-in-time grants call refused; `message` is safe to show to the caller."""

    status: int = 400

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


class GrantInvalid(GrantError):
    status = 400


class GrantUnauthenticated(GrantError):
    status = 401


class GrantForbidden(GrantError):
    status = 403


class GrantNotFound(GrantError):
    status = 404


class GrantConflict(GrantError):
    status = 409


class GrantNotJson(GrantError):
    status = 415
