"""Who is calling: over the internal mutual TLS, the caller's certificate must carry
`internal_tls_client_san` (Envoy's name), not merely chain to the client CA, which may sign other
workloads' certificates too. Whoever else reaches the Check port cannot have assertions signed.

gRPC shows a call's peer certificate only to its handler, so Check asks at its start; the HTTP
Check service checks once per connection, when it is made. Health answers anyone with the CA's
certificate: it tells nothing.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

import grpc

from authz.config.pem import dns_matches, is_ip

REFUSED = "the client certificate is not Envoy's (internal_tls_client_san)"


def carries(sans: Iterable[str], expected: str) -> bool:
    """Whether one of a certificate's SANs (DNS names, IP addresses, URIs, as text) is `expected`."""
    sans = list(sans)
    if expected in sans:  # Envoy's own name, as written: the answer on every Check but a refusal
        return True
    if is_ip(expected):  # an address in another spelling (0:0::1 for ::1)
        wanted = ipaddress.ip_address(expected)
        return any(is_ip(san) and ipaddress.ip_address(san) == wanted for san in sans)
    return any(dns_matches(san, expected) for san in sans)


def grpc_sans(context: grpc.ServicerContext | grpc.aio.ServicerContext) -> list[str]:
    """The SANs of a gRPC caller's certificate. `peer_identities` are the SANs when the certificate
    has any, else its common name, which never counts here; it costs a tenth of `auth_context()`."""
    if context.peer_identity_key() != "x509_subject_alternative_name":
        return []
    return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in context.peer_identities() or ()]


def ssl_sans(peercert: dict[str, Any] | None) -> list[str]:
    """The SANs of a peer certificate as Python's ssl module describes it."""
    return [str(value) for _, value in (peercert or {}).get("subjectAltName", ())]
