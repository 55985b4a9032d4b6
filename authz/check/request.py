"""The plain request that the decision core sees: built once from Envoy's CheckRequest."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote

from authz.errors import BadRequest

# %2F and %5C would let the policy see a different path than Envoy routed on; percent-encoded
# unreserved characters (RFC 3986 §2.3) must have been decoded by a normalising proxy already.
_AMBIGUOUS_ESCAPE = re.compile(r"%(2[fF]|5[cC]|[46][1-9a-fA-F]|[57][0-9aA]|3[0-9]|2[dDeE]|5[fF]|7[eE])")
_ANY_ESCAPE = re.compile(r"%(?![0-9a-fA-F]{2})")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


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
    hostname: str = ""
    port: int | None = None
    client_certificate: str | None = None  # the leaf certificate (PEM) of an mTLS connection

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
        client_certificate: str | None = None,
    ) -> RequestContext:
        """Normalise once: split the target, decode the path, lower-case header names."""
        path, query = split_target(target)
        hostname, port = split_authority(host)
        return cls(
            method=method.upper(),
            host=host,
            path=path,
            raw_path=target,
            query=query,
            scheme=scheme or "https",
            headers={k.lower(): v for k, v in (headers or {}).items()},
            source_ip=source_ip,
            request_id=request_id,
            route_id=route_id,
            hostname=hostname,
            port=port,
            client_certificate=client_certificate or None,
        )
