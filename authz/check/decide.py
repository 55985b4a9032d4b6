"""The decide step, pure: facts in, an outcome out. No store, no clock, no rendering, no signing.

The order is Pomerium's `handleResult` (authorize/check_response.go), one rule per branch below.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from authz.check.facts import Action, Facts, Outcome
from authz.policy.ast import PolicyInput
from authz.policy.reasons import Reason

if TYPE_CHECKING:
    from authz.jit.model import Grant

_NOT_FOUND = Outcome(Action.DENY, 404, (Reason.ROUTE_NOT_FOUND,))
_BAD_PATH = Outcome(Action.DENY, 400, (Reason.BAD_REQUEST,))
_UNAUTHENTICATED = (Reason.USER_UNAUTHENTICATED,)
_GRANTED = (Reason.JIT_GRANT_OK,)
# A deny rule that found the client certificate missing or invalid: 495, never a sign-in (Pomerium).
_CERTIFICATE_REASONS = frozenset({Reason.CLIENT_CERTIFICATE_REQUIRED, Reason.INVALID_CLIENT_CERTIFICATE})
# Enum members as module globals: reading one through its class costs a metaclass lookup per Check.
_ALLOW, _LOGIN, _DENY = Action.ALLOW, Action.LOGIN, Action.DENY


def working_grant(grants: tuple[Grant, ...], route: str, user: str, now: float) -> Grant | None:
    """Of this user's grants on this route that work at `now`, the one that lasts longest."""
    working = [g for g in grants if g.route == route and g.user == user and g.works_at(now)]
    return max(working, key=lambda g: g.expires_at) if working else None


def decide(facts: Facts) -> Outcome:
    """The outcome for one request, from its gathered facts."""
    route = facts.route
    # A route id the config does not have: nothing to evaluate, and Pomerium's answer is a 404.
    if route is None:
        return _NOT_FOUND
    # downstream_mtls's default deny (Pomerium appends it to every route as a deny rule): without a
    # valid client certificate, 495 before anything else, a sign-in included.
    certificate = facts.certificate
    if facts.certificate_refused and certificate is not None:
        return Outcome(_DENY, 495, (certificate.reason,))
    # A path this route's upstream may read differently (`;`, double encoding): 400, unevaluated.
    if facts.refusal:
        return _BAD_PATH
    verdict = route.policy.evaluate(PolicyInput(facts.request, facts.session, facts.now, certificate))
    # A deny rule matched on a missing or invalid client certificate: 495, in every enforcement mode.
    if verdict.deny and not _CERTIFICATE_REASONS.isdisjoint(verdict.deny_reasons):
        reasons = tuple(sorted(_CERTIFICATE_REASONS & verdict.deny_reasons))
        return Outcome(_DENY, 495, reasons, verdict)
    # A criterion on either side needed a session and there is none: signing in is the only way
    # forward, even when `allow: accept` matched, because a deny rule could not be judged.
    if verdict.login:
        return Outcome(_LOGIN, 401, _UNAUTHENTICATED, verdict)
    # A deny rule matched: deny wins over any allow, and its reasons are the ones to show.
    if verdict.deny:
        return Outcome(_DENY, 403, tuple(sorted(verdict.deny_reasons)), verdict)
    # An allow rule matched and nothing denied.
    if verdict.allow:
        return Outcome(_ALLOW, 200, tuple(sorted(verdict.allow_reasons)), verdict)
    # A just-in-time grant is one more allow rule, for its user on its route, until `expires_at`
    # by the request's clock (whatever is cached or recorded).
    if facts.grants and facts.session is not None:
        grant = working_grant(facts.grants, route.id, facts.session.user_id, facts.now.timestamp())
        if grant is not None:
            return Outcome(_ALLOW, 200, _GRANTED, verdict, grant)
    # Nothing allowed: deny with the reasons the allow rules failed for.
    return Outcome(_DENY, 403, tuple(sorted(verdict.allow_reasons)), verdict)
