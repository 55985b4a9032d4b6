"""Pomerium's route shortcuts (`allowed_users`, ...) as one allow rule (reference §1.6)."""

from __future__ import annotations

from dataclasses import dataclass

from authz.policy import http, identity
from authz.policy.ast import Conditional, Criterion, Op, Policy
from authz.policy.matchers import ListMatcher, StringMatcher, canonical
from authz.policy.parse import parse_policy
from authz.schema.reader import Node


@dataclass(frozen=True, slots=True)
class LegacyOptions:
    allow_public_unauthenticated_access: bool = False
    cors_allow_preflight: bool = False
    allow_any_authenticated_user: bool = False
    allowed_domains: tuple[str, ...] = ()
    allowed_users: tuple[str, ...] = ()
    allowed_idp_claims: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def conflicts(self) -> list[str]:
        """Combinations Pomerium rejects: a public route with allow-lists, and so on."""
        lists = bool(self.allowed_domains or self.allowed_users or self.allowed_idp_claims)
        if self.allow_public_unauthenticated_access and (self.allow_any_authenticated_user or lists):
            return [
                "allow_public_unauthenticated_access cannot be combined with"
                " allow_any_authenticated_user, allowed_domains or allowed_users"
            ]
        if self.allow_any_authenticated_user and lists:
            return ["allow_any_authenticated_user cannot be combined with allowed_domains or allowed_users"]
        return []

    def to_policy(self) -> Policy:
        """One `allow: {or: [...]}` rule, in Pomerium's order; empty when nothing is set."""
        criteria: list[Criterion] = []
        if self.allow_public_unauthenticated_access:
            criteria.append(identity.Accept())
        if self.cors_allow_preflight:
            criteria.append(http.CorsPreflight())
        if self.allow_any_authenticated_user:
            criteria.append(identity.AuthenticatedUser())
        for domain in self.allowed_domains:
            criteria.append(identity.Domain(StringMatcher((("is", domain),))))
        for claim, values in sorted(self.allowed_idp_claims):
            for value in values:
                criteria.append(identity.Claim(claim, ListMatcher((("has", value),))))
        for user in self.allowed_users:
            criteria.append(identity.User(StringMatcher((("is", user),))))
            criteria.append(identity.Email(StringMatcher((("is", user),))))
        if not criteria:
            return Policy()
        return Policy(allow=(Conditional(Op.OR, tuple(criteria)),))


def idp_claims(value: object) -> tuple[tuple[tuple[str, tuple[str, ...]], ...], str | None]:
    """`allowed_idp_claims: {claim: [values]}` normalised, or an error message."""
    if value is None:
        return (), None
    if not isinstance(value, dict):
        return (), "expected a mapping of claim name to a list of values"
    out = []
    for claim, values in value.items():
        items = values if isinstance(values, list) else [values]
        texts = [canonical(v) for v in items]
        if not isinstance(claim, str) or not items or any(t is None for t in texts):
            return (), f"claim {claim!r}: expected a list of strings, numbers or booleans"
        out.append((claim, tuple(t for t in texts if t is not None)))
    return tuple(out), None


def read_route_policy(node: Node) -> tuple[Policy, LegacyOptions]:
    """A route's policy: its legacy options as one allow rule, then its `policy:` rules."""
    claims, claims_error = idp_claims(node.raw("allowed_idp_claims"))
    if claims_error:
        node.error("allowed_idp_claims", claims_error)
    legacy = LegacyOptions(
        allow_public_unauthenticated_access=node.flag("allow_public_unauthenticated_access"),
        cors_allow_preflight=node.flag("cors_allow_preflight"),
        allow_any_authenticated_user=node.flag("allow_any_authenticated_user"),
        allowed_domains=tuple(node.str_list("allowed_domains")),
        allowed_users=tuple(node.str_list("allowed_users")),
        allowed_idp_claims=claims,
    )
    for message in legacy.conflicts():
        node.error(None, message)
    policy = legacy.to_policy()
    if node.has("policy"):
        policy = policy.merged(parse_policy(node.raw("policy"), node.at("policy"), node.problems))
    return policy, legacy
