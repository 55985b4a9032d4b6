"""Frozen policy nodes and their evaluation (reference §1.2, §1.3).

Every criterion yields `(matched, reasons)`. `and`/`or` keep the reasons of the side that decided;
`not` is "none match" and `nor` is "not all match", inverting the result but keeping its reasons.
All conditionals of all rules of one action are OR'd; deny wins over allow; a
`user-unauthenticated` reason on either side means "log in first".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

from authz.policy.reasons import Reason

if TYPE_CHECKING:
    from authz.check.clientcert import CertificateVerdict
    from authz.check.request import RequestContext
    from authz.sessions.session import Session

Result = tuple[bool, frozenset[str]]
NO_MATCH: Result = (False, frozenset())
_UNAUTHENTICATED = Reason.USER_UNAUTHENTICATED  # a module global: read on every Check


def outcomes(passed: Reason, failed: Reason) -> tuple[Result, Result]:
    """A criterion's two results, built once at import: (matched, `passed`), (not matched, `failed`)."""
    return (True, frozenset({passed})), (False, frozenset({failed}))


@dataclass(frozen=True, slots=True)
class PolicyInput:
    """Everything a policy may look at: the request, the session (or None), the time, and under
    `downstream_mtls` authz's verdict on the client certificate."""

    request: RequestContext
    session: Session | None
    now: datetime
    certificate: CertificateVerdict | None = None  # None: no downstream_mtls (nothing was verified)


class Criterion(Protocol):
    """A compiled criterion such as `email: {ends_with: '@example.com'}`."""

    name: str

    def evaluate(self, inp: PolicyInput) -> Result: ...


class Op(StrEnum):
    AND = "and"
    OR = "or"
    NOT = "not"
    NOR = "nor"


def _union(results: Sequence[Result]) -> frozenset[str]:
    out: set[str] = set()
    for _, why in results:
        out |= why
    return frozenset(out)


def merge_and(results: Sequence[Result]) -> Result:
    """True iff all are true; reasons of the true ones if true, else of the false ones."""
    failed = [r for r in results if not r[0]]
    if failed:
        return False, _union(failed)
    return True, _union(results)


def merge_or(results: Sequence[Result]) -> Result:
    """True iff any is true; reasons of the true ones if true, else of all."""
    passed = [r for r in results if r[0]]
    if passed:
        return True, _union(passed)
    return False, _union(results)


def _invert(results: Sequence[Result]) -> list[Result]:
    return [(not ok, why) for ok, why in results]


@dataclass(frozen=True, slots=True)
class Conditional:
    """One `and`/`or`/`not`/`nor` list of criteria."""

    op: Op
    criteria: tuple[Criterion, ...]

    def evaluate(self, inp: PolicyInput) -> Result:
        results = [c.evaluate(inp) for c in self.criteria]
        if self.op is Op.AND:
            return merge_and(results)
        if self.op is Op.OR:
            return merge_or(results)
        if self.op is Op.NOT:
            return merge_and(_invert(results))
        return merge_or(_invert(results))


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of a policy: a value, never an exception."""

    allow: bool
    deny: bool
    allow_reasons: frozenset[str]
    deny_reasons: frozenset[str]

    @property
    def login(self) -> bool:
        """No session, and a criterion on either side needed one: send the user to sign in."""
        return _UNAUTHENTICATED in self.allow_reasons or _UNAUTHENTICATED in self.deny_reasons

    @property
    def allowed(self) -> bool:
        return self.allow and not self.deny and not self.login

    @property
    def reasons(self) -> tuple[str, ...]:
        """The deciding side's reasons, sorted, in the order the decision applies them: sign-in
        (`user-unauthenticated`, whichever side needed the session, even if an allow rule matched),
        then deny's when a deny rule matched, else allow's."""
        if self.login:
            return (_UNAUTHENTICATED,)
        return tuple(sorted(self.deny_reasons if self.deny else self.allow_reasons))


@dataclass(frozen=True, slots=True)
class Policy:
    """A route's compiled policy: every allow conditional and every deny conditional."""

    allow: tuple[Conditional, ...] = ()
    deny: tuple[Conditional, ...] = ()

    def evaluate(self, inp: PolicyInput) -> Verdict:
        """Evaluate both actions; with no conditionals an action is `[false, {}]`."""
        allow = merge_or([c.evaluate(inp) for c in self.allow]) if self.allow else NO_MATCH
        deny = merge_or([c.evaluate(inp) for c in self.deny]) if self.deny else NO_MATCH
        return Verdict(allow[0], deny[0], allow[1], deny[1])

    def merged(self, other: Policy) -> Policy:
        """This policy's rules followed by another's."""
        return Policy(self.allow + other.allow, self.deny + other.deny)
