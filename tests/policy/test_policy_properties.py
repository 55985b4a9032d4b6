"""Laws of the logical operators, checked with generated policies (hypothesis)."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from authz.check.request import RequestContext
from authz.policy.ast import Conditional, Op, Policy, PolicyInput
from authz.policy.http import HttpMethod, HttpPath
from authz.policy.identity import Accept, Reject
from authz.policy.matchers import StringMatcher

INPUT = PolicyInput(RequestContext.build(method="GET", host="h", target="/a"), None, datetime(2026, 1, 5, tzinfo=UTC))
CRITERIA = st.sampled_from(
    [
        Accept(),
        Reject(),
        HttpMethod(StringMatcher((("is", "GET"),))),
        HttpMethod(StringMatcher((("is", "POST"),))),
        HttpPath(StringMatcher((("starts_with", "/a"),))),
        HttpPath(StringMatcher((("is", "/b"),))),
    ]
)
LISTS = st.lists(CRITERIA, min_size=1, max_size=6)


def values(criteria: list) -> list[bool]:  # type: ignore[type-arg]
    return [c.evaluate(INPUT)[0] for c in criteria]


def run(op: Op, criteria: list) -> tuple[bool, frozenset[str]]:  # type: ignore[type-arg]
    return Conditional(op, tuple(criteria)).evaluate(INPUT)


@given(LISTS)
def test_operators_match_their_boolean_meaning(criteria: list) -> None:  # type: ignore[type-arg]
    v = values(criteria)
    assert run(Op.AND, criteria)[0] == all(v)
    assert run(Op.OR, criteria)[0] == any(v)
    assert run(Op.NOT, criteria)[0] == (not any(v))
    assert run(Op.NOR, criteria)[0] == (not all(v))


@given(LISTS)
def test_de_morgan(criteria: list) -> None:  # type: ignore[type-arg]
    assert run(Op.NOT, criteria)[0] == (not run(Op.OR, criteria)[0])
    assert run(Op.NOR, criteria)[0] == (not run(Op.AND, criteria)[0])
    assert run(Op.NOT, criteria)[1] == run(Op.OR, criteria)[1] or any(values(criteria))


@given(LISTS, st.randoms())
def test_order_does_not_matter(criteria: list, rng) -> None:  # type: ignore[no-untyped-def, type-arg]
    shuffled = list(criteria)
    rng.shuffle(shuffled)
    for op in Op:
        assert run(op, criteria) == run(op, shuffled)


@given(LISTS)
def test_duplicates_do_not_matter(criteria: list) -> None:  # type: ignore[type-arg]
    for op in Op:
        assert run(op, criteria) == run(op, criteria + criteria)


@given(st.lists(st.tuples(st.sampled_from(list(Op)), LISTS), max_size=4),
       st.lists(st.tuples(st.sampled_from(list(Op)), LISTS), max_size=4))  # fmt: skip
def test_deny_always_wins(allow: list, deny: list) -> None:  # type: ignore[type-arg]
    policy = Policy(tuple(Conditional(o, tuple(c)) for o, c in allow), tuple(Conditional(o, tuple(c)) for o, c in deny))
    verdict = policy.evaluate(INPUT)
    if verdict.deny:
        assert not verdict.allowed and verdict.reasons == tuple(sorted(verdict.deny_reasons))
    assert verdict.allowed == (verdict.allow and not verdict.deny)
    assert verdict.allow == any(Conditional(o, tuple(c)).evaluate(INPUT)[0] for o, c in allow)


@given(LISTS)
def test_reasons_come_from_the_deciding_side(criteria: list) -> None:  # type: ignore[type-arg]
    ok, why = run(Op.AND, criteria)
    expected = [c.evaluate(INPUT) for c in criteria if c.evaluate(INPUT)[0] == ok]
    assert why == frozenset().union(*(r for _, r in expected))
