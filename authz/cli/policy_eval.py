"""Policies and requests from files, as `authz policy eval` and the policy vectors read them.

A policy file holds PPL (a rule or a list of rules) or a route mapping with Pomerium's legacy
options (`allowed_users`, …) and optionally `policy:`. An input file holds
`{request: {method, host, path, headers, source_ip, client_certificate}, session: null | {user,
email, name, groups, claims}, now}`.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from authz.check.request import RequestContext
from authz.config.load import ROUTE_KEYS
from authz.errors import BadRequest, ConfigError, Problem
from authz.policy.ast import Policy, PolicyInput, Verdict
from authz.policy.legacy import read_route_policy
from authz.policy.parse import parse_policy
from authz.schema.reader import Node, describe
from authz.sessions.session import Session

_ACTIONS = {"allow", "deny"}
_POLICY_KEYS = (
    "allow_public_unauthenticated_access", "allow_any_authenticated_user", "allowed_users", "allowed_domains",
    "allowed_idp_claims", "cors_allow_preflight", "policy",
)  # fmt: skip


def _is_route(data: Mapping[str, Any]) -> bool:
    """A route mapping names a route key; a mapping of (possibly misspelt) actions is PPL."""
    keys = {str(k) for k in data}
    if keys <= _ACTIONS:
        return False
    if keys & set(ROUTE_KEYS):
        return True
    return not all(difflib.get_close_matches(k, _ACTIONS, n=1, cutoff=0.6) for k in keys)


def policy_from(data: Any, path: str = "policy") -> Policy:
    """Compile PPL or a route mapping with legacy options; ConfigError lists every problem."""
    problems: list[Problem] = []
    if isinstance(data, Mapping) and _is_route(data):
        node = Node(data, path, problems)
        policy, _ = read_route_policy(node)
        for key in data:  # the rest of a route (from, to, …) is allowed and ignored here
            if key in ROUTE_KEYS:
                node.raw(key)
        node.finish(_POLICY_KEYS)
    else:
        policy = parse_policy(data if data is not None else [], path, problems)
    if problems:
        raise ConfigError(problems)
    return policy


def _now(value: Any, path: str) -> datetime:
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip().replace("z", "Z"))
        except ValueError:
            raise ConfigError([Problem(path, f"invalid RFC 3339 time {value!r}")]) from None
    else:
        raise ConfigError([Problem(path, f"expected an RFC 3339 time, got {describe(value)}")])
    if parsed.tzinfo is None:
        raise ConfigError([Problem(path, "the time needs an offset or Z")])
    return parsed.astimezone(UTC)


def input_from(data: Any, now: str | None = None) -> PolicyInput:
    """A PolicyInput from an input document; `now` (RFC 3339) overrides the document's."""
    if not isinstance(data, Mapping):
        raise ConfigError([Problem("input", f"expected a mapping, got {describe(data)}")])
    problems: list[Problem] = []
    node = Node(data, "", problems)
    request = node.child("request")
    raw_session = node.raw("session")
    moment = node.raw("now")
    if now is not None:
        moment = now
    node.finish(("request", "session", "now"))
    if request is None:
        raise ConfigError([*problems, Problem("request", "is required")])
    headers = request.str_map("headers")
    cert = request.raw("client_certificate")
    try:
        req = RequestContext.build(
            method=request.text("method", "GET"),
            host=request.text("host", "example.com"),
            target=request.text("path", "/"),
            headers=headers,
            source_ip=request.text("source_ip"),
            client_certificate=cert if isinstance(cert, str) else None,
        )
    except BadRequest as exc:
        problems.append(Problem("request.path", exc.detail))
        req = RequestContext(method="GET", host="", path="/")
    if cert is not None and not isinstance(cert, str):
        problems.append(Problem("request.client_certificate", "expected a PEM string or null"))
    request.finish(("method", "host", "path", "headers", "source_ip", "client_certificate"))
    session = None
    if raw_session is not None:
        if not isinstance(raw_session, Mapping):
            problems.append(Problem("session", f"expected a mapping or null, got {describe(raw_session)}"))
        else:
            s = Node(raw_session, "session", problems)
            claims = s.raw("claims") or {}
            if not isinstance(claims, Mapping):
                problems.append(Problem("session.claims", "expected a mapping"))
                claims = {}
            session = Session(
                id=s.text("id", "session"),
                user_id=s.text("user"),
                email=s.text("email"),
                name=s.text("name"),
                groups=tuple(s.str_list("groups")),
                claims=dict(claims),
            )
            s.finish(("id", "user", "email", "name", "groups", "claims"))
    if problems:
        raise ConfigError(problems)
    when = _now(moment, "now") if moment is not None else datetime.now(UTC)
    return PolicyInput(req, session, when)


def verdict_json(verdict: Verdict) -> dict[str, Any]:
    """`{"allow", "deny", "allowed", "reasons", "login"}` with the deciding side's sorted reasons."""
    return {
        "allow": verdict.allow,
        "deny": verdict.deny,
        "allowed": verdict.allowed,
        "reasons": list(verdict.reasons),
        "login": verdict.login,
    }
