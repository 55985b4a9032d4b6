"""The plain request that the decision core sees: built once from Envoy's CheckRequest."""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import unquote

from authz.errors import BadRequest

if TYPE_CHECKING:
    from authz.config.model import Route

# %2F and %5C would let the policy see a different path than Envoy routed on; percent-encoded
# unreserved characters (RFC 3986 §2.3) must have been decoded by a normalising proxy already.
_AMBIGUOUS_ESCAPE = re.compile(r"%(2[fF]|5[cC]|[46][1-9a-fA-F]|[57][0-9aA]|3[0-9]|2[dDeE]|5[fF]|7[eE])")
_ANY_ESCAPE = re.compile(r"%(?![0-9a-fA-F]{2})")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# `%25` + two hex digits: an upstream that decodes once more reads another path than the policy
# judged (`/%2561dmin` is `/%61dmin` here and `/admin` there).
_DOUBLE_ESCAPE = re.compile(r"%25[0-9a-fA-F]{2}")


def split_target(target: str) -> tuple[str, str]:
    """Split a request target into its percent-decoded path and raw query; BadRequest if unsafe."""
    path, _, query = target.partition("?")
    path = path.partition("#")[0]
    if not path.startswith("/"):
        raise BadRequest("request path must start with '/'")
    if _AMBIGUOUS_ESCAPE.search(path):
        raise BadRequest("request path contains an encoded slash, backslash or unreserved character")
    if _ANY_ESCAPE.search(path):
        raise BadRequest("request path contains a malformed percent escape")
    try:
        decoded = unquote(path, errors="strict") if "%" in path else path
    except UnicodeDecodeError:
        raise BadRequest("request path is not valid UTF-8 once decoded") from None
    if _CONTROL.search(decoded):
        raise BadRequest("request path contains control characters")
    return decoded, query


def path_refusal(route: Route, req: RequestContext) -> str | None:
    """Why `route` refuses `req`'s path with 400, or None: `;` parameters, double encoding."""
    if req.has_path_parameters and not route.allow_path_parameters:
        return "request path contains ';' (a path parameter, which an upstream may read as another path)"
    if req.has_double_encoding and not route.allow_double_encoding:
        return "request path contains a double-encoded percent sequence ('%25' followed by two hex digits)"
    return None


def split_authority(authority: str) -> tuple[str, int | None]:
    """Split `Host`/`:authority` into a lower-case hostname and an optional port."""
    authority = authority.strip().lower()
    if authority.startswith("["):
        host, _, rest = authority[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port_text = authority.partition(":")
    port = int(port_text) if port_text.isdigit() and len(port_text) <= 5 else None
    return host.rstrip("."), port


def origin(scheme: str, hostname: str, port: int | None) -> str:
    """`scheme://host[:port]`: how URLs back to a configured host are built everywhere."""
    return f"{scheme}://{hostname}:{port}" if port else f"{scheme}://{hostname}"


@dataclass(frozen=True, slots=True)
class RequestContext:
    """One HTTP request as the policy sees it; header names are lower case."""

    method: str
    host: str
    path: str
    raw_path: str = ""
    query: str = ""
    scheme: str = "https"
    headers: Mapping[str, str] = field(default_factory=dict)
    source_ip: str = ""
    request_id: str = ""
    route_id: str = ""
    route_checksum: str = ""  # the checksum of the route Envoy matched, when its config sends one
    hostname: str = ""
    port: int | None = None
    client_certificate: str | None = None  # PEM: the leaf, or under downstream_mtls the whole chain (leaf first)
    # Found by `build`, refused by the route unless it allows them (see `path_refusal`). A `;` counts
    # raw or as %3B: some upstreams split parameters off after decoding.
    has_path_parameters: bool = False
    has_double_encoding: bool = False

    @classmethod
    def build(
        cls,
        *,
        method: str,
        host: str,
        target: str,
        scheme: str = "https",
        headers: Mapping[str, str] | None = None,
        source_ip: str = "",
        request_id: str = "",
        route_id: str = "",
        route_checksum: str = "",
        client_certificate: str | None = None,
        lowered: bool = False,
    ) -> RequestContext:
        """Normalise once: split the target, decode the path, lower-case header names (unless
        `lowered` says they are: Envoy's CheckRequest must send them so, and `headers` is then kept
        as given, not copied)."""
        path, query = split_target(target)
        hostname, port = split_authority(host)
        raw = target.partition("?")[0].partition("#")[0]
        return cls(
            method=method.upper(),
            host=host,
            path=path,
            raw_path=target,
            query=query,
            scheme=scheme or "https",
            headers=headers if lowered and headers is not None else {k.lower(): v for k, v in (headers or {}).items()},
            source_ip=source_ip,
            request_id=request_id,
            route_id=route_id,
            route_checksum=route_checksum,
            hostname=hostname,
            port=port,
            client_certificate=client_certificate or None,
            has_path_parameters=";" in path,
            has_double_encoding="%25" in raw and _DOUBLE_ESCAPE.search(raw) is not None,
        )


def trusted_client(req: RequestContext, hops: int) -> RequestContext:
    """The request with the client address `xff_num_trusted_hops` trusts, as Envoy derives it: with
    N proxies in front, the Nth X-Forwarded-For entry from the right before Envoy appended its own
    peer (which the generated config makes it do), that is entries[-(N+1)] of what it forwards;
    the connection's address when there are not that many, or the entry is not an address."""
    forwarded = req.headers.get("x-forwarded-for", "")
    entries = [e.strip() for e in forwarded.split(",")] if forwarded else []
    if len(entries) <= hops:
        return req
    candidate = entries[-(hops + 1)]
    try:
        ipaddress.ip_address(candidate)
    except ValueError:
        return req
    return dataclasses.replace(req, source_ip=candidate)
