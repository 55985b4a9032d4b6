"""Route matching inside authz (`route_matching: host_path`), for an Envoy that cannot send the
route's id (Istio's CUSTOM action, hand-written configs): pick the route Envoy would have picked.

The virtual host first, as Envoy chooses one: the exact host name, else the longest matching
`*.` suffix wildcard (`*` stands for one character or more). Nothing falls through to another
host. Then that host's routes in config order, the first whose path matcher matches:

  prefix   a string prefix of the raw path without the query (as Envoy: a prefix holding `?` never
           matches), case-sensitive
  path     the raw path without the query, exactly
  regex    an RE2 full match of the raw path without the query (RE2, as Envoy's `safe_regex`:
           Python's `re` accepts what Envoy refuses, and its `match` is not anchored at the end)
  (none)   every path (`prefix: /`)

Host names compare in lower case without the port (the generated config sets
`ignore_port_in_host_matching`); a trailing dot is part of the name, as in Envoy (`envoy_host`). The table is
built once per config. With this matching authz also refuses, with 400, the paths a generated
config normalises but a platform's Envoy may pass as they came (`path_refusal`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from authz.schema.regex import compile_regex

if TYPE_CHECKING:
    from authz.config.model import Route

# What Envoy's `normalize_path` and `merge_slashes` change: `//`, `.` and `..` segments, a backslash.
_UNNORMALISED = re.compile(r"//|/\.\.?(?:/|$)|\\")


@dataclass(frozen=True, slots=True)
class _Matcher:
    route: Route
    regex: Any | None

    def matches(self, path: str) -> bool:
        route = self.route
        if self.regex is not None:
            return self.regex.fullmatch(path) is not None
        if route.path is not None:
            return path == route.path
        return path.startswith(route.prefix or "/")


@dataclass(frozen=True, slots=True)
class RouteTable:
    """The routes by host, as Envoy's virtual hosts hold them."""

    exact: dict[str, tuple[_Matcher, ...]]
    wildcards: tuple[tuple[str, tuple[_Matcher, ...]], ...]  # (".suffix", matchers), longest suffix first

    @classmethod
    def build(cls, routes: Sequence[Route]) -> RouteTable:
        hosts: dict[str, list[_Matcher]] = {}
        for route in routes:
            regex = compile_regex(route.regex) if route.regex is not None else None
            hosts.setdefault(route.host.lower(), []).append(_Matcher(route, regex))
        exact = {host: tuple(m) for host, m in hosts.items() if not host.startswith("*")}
        wildcards = sorted(
            ((host[1:], tuple(m)) for host, m in hosts.items() if host.startswith("*")),
            key=lambda item: len(item[0]),
            reverse=True,
        )
        return cls(exact, tuple(wildcards))

    def host_routes(self, hostname: str) -> tuple[_Matcher, ...]:
        """The routes of the virtual host Envoy would pick for `hostname` (lower case, no port)."""
        found = self.exact.get(hostname)
        if found is not None:
            return found
        for suffix, matchers in self.wildcards:
            if hostname.endswith(suffix) and len(hostname) > len(suffix):
                return matchers
        return ()

    def match(self, hostname: str, raw_path: str) -> Route | None:
        """The route for a request's host name (`envoy_host`) and raw `:path`; None: no route."""
        path = raw_path.partition("?")[0]
        for matcher in self.host_routes(hostname):
            if matcher.matches(path):
                return matcher.route
        return None


def envoy_host(authority: str) -> str:
    """The name Envoy matches virtual hosts on: the `:authority` in lower case without its port
    (`ignore_port_in_host_matching`), a trailing dot kept. Envoy cuts at the last `:` unless a `]`
    follows it, whatever comes after the colon: so does this, or `app:x.public.example.com` would
    match a `*.public.example.com` route here while Envoy routes it to `app`."""
    authority = authority.strip().lower()
    colon = authority.rfind(":")
    if colon == -1 or "]" in authority[colon:]:
        return authority
    return authority[:colon]


def path_refusal(raw_path: str) -> str | None:
    """Why a path that a generated config would have normalised is refused (400), or None."""
    path = raw_path.partition("?")[0]
    if _UNNORMALISED.search(path):
        return "request path is not normalised (`//`, `.` or `..` segments, or a backslash)"
    return None
