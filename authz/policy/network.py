"""`source_ip`: the Envoy downstream address (never a client header) in one of some IPs/CIDRs."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from authz.errors import Problem
from authz.policy.ast import PolicyInput, Result, outcomes
from authz.policy.reasons import Reason
from authz.schema.reader import describe

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@lru_cache(maxsize=4096)
def parse_address(text: str) -> Address | None:
    """The request's source address; IPv4-mapped IPv6 becomes IPv4."""
    try:
        address = ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


_SOURCE_IP = outcomes(Reason.SOURCE_IP_OK, Reason.SOURCE_IP_UNAUTHORIZED)


@dataclass(frozen=True, slots=True)
class SourceIp:
    networks: tuple[Network, ...]
    name = "source_ip"

    def evaluate(self, inp: PolicyInput) -> Result:
        address = parse_address(inp.request.source_ip) if inp.request.source_ip else None
        ok = address is not None and any(address.version == n.version and address in n for n in self.networks)
        return _SOURCE_IP[0] if ok else _SOURCE_IP[1]


def parse_source_ip(value: Any, sub: str, path: str, problems: list[Problem]) -> SourceIp | None:
    """A string or list of IPs and CIDRs; a bare IP is /32 or /128."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        problems.append(Problem(path, f"expected an IP, a CIDR or a list of them, got {describe(value)}"))
        return None
    networks: list[Network] = []
    for i, item in enumerate(items):
        where = path if isinstance(value, str) else f"{path}[{i}]"
        try:
            networks.append(ipaddress.ip_network(str(item).strip(), strict=False))
        except ValueError:
            problems.append(Problem(where, f"invalid IP or CIDR {describe(item)}"))
    return SourceIp(tuple(networks)) if len(networks) == len(items) else None
