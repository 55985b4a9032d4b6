"""Every reason authz gives, in one registry: Pomerium's kebab-case strings, each with its explanation.

Reasons appear on 403 pages, in JSON bodies and in logs. Policy criteria give the `-ok` /
`-unauthorized` pairs; the Check and the web layer give the rest (unknown route, refused input,
identity-provider faults). A reason is a `Reason` member wherever it is produced; nothing else in
the package spells one out.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    # policy: accept / reject
    ACCEPT = "accept"
    REJECT = "reject"
    # policy: identity
    USER_OK = "user-ok"
    USER_UNAUTHORIZED = "user-unauthorized"
    USER_UNAUTHENTICATED = "user-unauthenticated"
    EMAIL_OK = "email-ok"
    EMAIL_UNAUTHORIZED = "email-unauthorized"
    DOMAIN_OK = "domain-ok"
    DOMAIN_UNAUTHORIZED = "domain-unauthorized"
    GROUPS_OK = "groups-ok"
    GROUPS_UNAUTHORIZED = "groups-unauthorized"
    CLAIM_OK = "claim-ok"
    CLAIM_UNAUTHORIZED = "claim-unauthorized"
    # policy: the HTTP request
    HTTP_METHOD_OK = "http-method-ok"
    HTTP_METHOD_UNAUTHORIZED = "http-method-unauthorized"
    HTTP_PATH_OK = "http-path-ok"
    HTTP_PATH_UNAUTHORIZED = "http-path-unauthorized"
    CORS_REQUEST = "cors-request"
    NON_CORS_REQUEST = "non-cors-request"
    # policy: the network and the client certificate
    SOURCE_IP_OK = "source-ip-ok"
    SOURCE_IP_UNAUTHORIZED = "source-ip-unauthorized"
    CLIENT_CERTIFICATE_OK = "client-certificate-ok"
    CLIENT_CERTIFICATE_UNAUTHORIZED = "client-certificate-unauthorized"
    CLIENT_CERTIFICATE_REQUIRED = "client-certificate-required"
    INVALID_CLIENT_CERTIFICATE = "invalid-client-certificate"
    VALID_CLIENT_CERTIFICATE = "valid-client-certificate"
    # policy: time
    DATE_OK = "date-ok"
    DATE_UNAUTHORIZED = "date-unauthorized"
    DAY_OF_WEEK_OK = "day-of-week-ok"
    DAY_OF_WEEK_UNAUTHORIZED = "day-of-week-unauthorized"
    TIME_OF_DAY_OK = "time-of-day-ok"
    TIME_OF_DAY_UNAUTHORIZED = "time-of-day-unauthorized"
    # just-in-time access: an active grant is one more allow rule
    JIT_GRANT_OK = "jit-grant-ok"
    # the Check, before or beside policy
    ROUTE_NOT_FOUND = "route-not-found"
    BAD_REQUEST = "bad-request"
    INTERNAL_ERROR = "internal-error"
    STORE_UNAVAILABLE = "store-unavailable"
    # the identity provider, during sign-in, refresh or sign-out
    INVALID_ID_TOKEN = "invalid-id-token"  # noqa: S105 - a reason, not a secret
    IDP_ACCESS_DENIED = "idp-access-denied"
    IDP_REFUSED = "idp-refused"
    IDP_UNAVAILABLE = "idp-unavailable"
    IDP_TIMEOUT = "idp-timeout"


EXPLAIN: dict[Reason, str] = {
    Reason.ACCEPT: "A rule accepts every request.",
    Reason.REJECT: "A rule rejects this request.",
    Reason.USER_OK: "Your account is allowed here.",
    Reason.USER_UNAUTHORIZED: "Your account is not on the list of users allowed here.",
    Reason.USER_UNAUTHENTICATED: "You need to sign in first.",
    Reason.EMAIL_OK: "Your email address is allowed here.",
    Reason.EMAIL_UNAUTHORIZED: "Your email address is not allowed to use this route.",
    Reason.DOMAIN_OK: "Your email domain is allowed here.",
    Reason.DOMAIN_UNAUTHORIZED: "Your email domain is not allowed to use this route.",
    Reason.GROUPS_OK: "One of your groups is allowed here.",
    Reason.GROUPS_UNAUTHORIZED: "None of your groups is allowed to use this route.",
    Reason.CLAIM_OK: "A claim of your account is allowed here.",
    Reason.CLAIM_UNAUTHORIZED: "No claim of your account is allowed to use this route.",
    Reason.HTTP_METHOD_OK: "This HTTP method is allowed here.",
    Reason.HTTP_METHOD_UNAUTHORIZED: "This HTTP method is not allowed here.",
    Reason.HTTP_PATH_OK: "This path is allowed here.",
    Reason.HTTP_PATH_UNAUTHORIZED: "This path is not allowed here.",
    Reason.CORS_REQUEST: "This is a CORS preflight request.",
    Reason.NON_CORS_REQUEST: "This is not a CORS preflight request.",
    Reason.SOURCE_IP_OK: "Your network address is allowed here.",
    Reason.SOURCE_IP_UNAUTHORIZED: "Your network address is not allowed to use this route.",
    Reason.CLIENT_CERTIFICATE_OK: "Your client certificate is allowed here.",
    Reason.CLIENT_CERTIFICATE_UNAUTHORIZED: "Your client certificate is not allowed to use this route.",
    Reason.CLIENT_CERTIFICATE_REQUIRED: "This route needs a client certificate, and none was presented.",
    Reason.INVALID_CLIENT_CERTIFICATE: "The client certificate presented is not valid.",
    Reason.VALID_CLIENT_CERTIFICATE: "The client certificate presented is valid.",
    Reason.DATE_OK: "Access is open on this date.",
    Reason.DATE_UNAUTHORIZED: "Access is not open on this date.",
    Reason.DAY_OF_WEEK_OK: "Access is open on this day of the week.",
    Reason.DAY_OF_WEEK_UNAUTHORIZED: "Access is not open on this day of the week.",
    Reason.TIME_OF_DAY_OK: "Access is open at this time of day.",
    Reason.TIME_OF_DAY_UNAUTHORIZED: "Access is not open at this time of day.",
    Reason.JIT_GRANT_OK: "An approved just-in-time access grant lets you in for now.",
    Reason.ROUTE_NOT_FOUND: "No route is configured for this address.",
    Reason.BAD_REQUEST: "The request could not be interpreted safely.",
    Reason.INTERNAL_ERROR: "The access gate could not decide; nothing was let through.",
    Reason.STORE_UNAVAILABLE: (
        "The access gate cannot reach its session store just now, so it cannot tell who you are;"
        " nothing was let through and nothing was changed. Try again in a moment."
    ),
    Reason.INVALID_ID_TOKEN: "The identity provider's ID token did not pass verification.",
    Reason.IDP_ACCESS_DENIED: "The identity provider refused the sign-in.",
    Reason.IDP_REFUSED: "The identity provider refused a step of the sign-in.",
    Reason.IDP_UNAVAILABLE: "The identity provider could not be reached or answered something unusable.",
    Reason.IDP_TIMEOUT: "The identity provider did not answer in time.",
}


def explain(reason: str) -> str:
    """The human explanation of a reason; '' for a string that is not in the registry."""
    # StrEnum keys hash and compare as their strings, so a plain string finds its member's entry.
    text: str = EXPLAIN.get(reason, "")  # type: ignore[call-overload]
    return text
