"""Parse Pomerium Policy Language (reference §1.1) from YAML values into frozen nodes, once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from authz.errors import Problem
from authz.policy import certificate, http, identity, network
from authz.policy import time as clock
from authz.policy.ast import Conditional, Criterion, Op, Policy
from authz.policy.matchers import parse_list_matcher, parse_string_matcher
from authz.schema.reader import describe, suggest

Build = Callable[[Any, str, str, list[Problem]], Criterion | None]


def _flag(kind: Callable[[], Criterion]) -> Build:
    """A criterion whose data is unused; only `true` is accepted, so `accept: false` is no trap."""

    def build(value: Any, sub: str, path: str, problems: list[Problem]) -> Criterion | None:
        if value is not True:
            problems.append(Problem(path, f"expected true, got {describe(value)}"))
            return None
        return kind()

    return build


def _string(kind: Callable[[Any], Criterion], normalise: Callable[[str], str] = str) -> Build:
    def build(value: Any, sub: str, path: str, problems: list[Problem]) -> Criterion | None:
        matcher = parse_string_matcher(value, path, problems, normalise)
        return kind(matcher) if matcher else None

    return build


def _groups(value: Any, sub: str, path: str, problems: list[Problem]) -> Criterion | None:
    matcher = parse_list_matcher(value, path, problems)
    return identity.Groups(matcher) if matcher else None


def _claim(value: Any, sub: str, path: str, problems: list[Problem]) -> Criterion | None:
    if not sub:
        problems.append(Problem(path, "claim needs a claim name: claim/<name>, e.g. claim/groups"))
        return None
    matcher = parse_list_matcher(value, path, problems, scalars=True)
    return identity.Claim(sub, matcher) if matcher else None


# The registry of criteria: one explicit mapping from PPL name to builder.
CRITERIA: dict[str, Build] = {
    "accept": _flag(identity.Accept),
    "reject": _flag(identity.Reject),
    "authenticated_user": _flag(identity.AuthenticatedUser),
    "user": _string(identity.User),
    "email": _string(identity.Email),
    "domain": _string(identity.Domain),
    "groups": _groups,
    "claim": _claim,
    "http_method": _string(http.HttpMethod, str.upper),
    "http_path": _string(http.HttpPath),
    "cors_preflight": _flag(http.CorsPreflight),
    "source_ip": network.parse_source_ip,
    "client_certificate": certificate.parse_client_certificate,
    "invalid_client_certificate": _flag(certificate.InvalidClientCertificate),
    "date": clock.parse_date,
    "day_of_week": clock.parse_day_of_week,
    "time_of_day": clock.parse_time_of_day,
}
TAKES_SUB_PATH = frozenset({"claim"})
UNSUPPORTED = {
    "device",
    "mcp_tool",
    "record",
    "ssh_username",
    "ssh_username_matches_email",
    "ssh_username_matches_claim",
    "ssh_publickey",
    "ssh_ca",
    "pomerium_routes",
}
_ACTIONS = ("allow", "deny")
_OPS = tuple(op.value for op in Op)


def parse_criterion(item: Any, path: str, problems: list[Problem]) -> Criterion | None:
    """One `{name[/sub]: data}` object."""
    if not isinstance(item, dict) or len(item) != 1:
        problems.append(Problem(path, "each criterion must be an object with exactly one key"))
        return None
    ((key, value),) = item.items()
    if not isinstance(key, str):
        problems.append(Problem(path, f"criterion names are strings, got {describe(key)}"))
        return None
    name, _, sub = key.partition("/")
    where = f"{path}.{key}"
    build = CRITERIA.get(name)
    if build is not None:
        if sub and name not in TAKES_SUB_PATH:
            problems.append(Problem(where, f"criterion {name!r} takes no '/' sub-path"))
            return None
        return build(value, sub, where, problems)
    if name in UNSUPPORTED:
        problems.append(Problem(where, f"criterion {name!r} is a Pomerium feature not supported"))
    else:
        known = sorted(CRITERIA)
        problems.append(
            Problem(
                where,
                f"unknown criterion {name!r}{suggest(name, known)} (known: {', '.join(known)})",
            )
        )
    return None


def _parse_action(value: Any, path: str, problems: list[Problem]) -> list[Conditional]:
    if not isinstance(value, dict):
        problems.append(Problem(path, f"expected an object of and/or/not/nor, got {describe(value)}"))
        return []
    out = []
    for op, items in value.items():
        where = f"{path}.{op}"
        if op == "action":
            continue  # tolerated by Pomerium and ignored
        if op not in _OPS:
            problems.append(
                Problem(
                    where,
                    f"unsupported conditional{suggest(str(op), _OPS)} (only and, or, not, nor are allowed)",
                )
            )
            continue
        if not isinstance(items, list):
            problems.append(Problem(where, f"expected a list of criteria, got {describe(items)}"))
            continue
        criteria = [parse_criterion(item, f"{where}[{i}]", problems) for i, item in enumerate(items)]
        # Pomerium skips an empty list: it contributes no term to its action.
        if criteria and all(c is not None for c in criteria):
            out.append(Conditional(Op(op), tuple(c for c in criteria if c is not None)))
    return out


def parse_policy(value: Any, path: str, problems: list[Problem]) -> Policy:
    """A policy is one rule object or a list of them; each rule has `allow` and/or `deny`."""
    rules = value if isinstance(value, list) else [value]
    allow: list[Conditional] = []
    deny: list[Conditional] = []
    for i, rule in enumerate(rules):
        where = f"{path}[{i}]" if isinstance(value, list) else path
        if not isinstance(rule, dict):
            problems.append(Problem(where, f"expected a rule with allow/deny, got {describe(rule)}"))
            continue
        for action, body in rule.items():
            if action not in _ACTIONS:
                problems.append(
                    Problem(
                        f"{where}.{action}",
                        f"unsupported action{suggest(str(action), _ACTIONS)} (allow or deny)",
                    )
                )
                continue
            target = allow if action == "allow" else deny
            target.extend(_parse_action(body, f"{where}.{action}", problems))
    return Policy(tuple(allow), tuple(deny))
