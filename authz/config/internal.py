"""Envoy ↔ authz over mutual TLS (`internal_tls_*`, authz's own keys: Pomerium has none).

    internal_tls_certificate_file: authz.pem     # authz's server certificate, on grpc_address (every
    internal_tls_key_file: authz.key             #   worker), the HTTP Check service and http_address
    internal_tls_client_ca_file: ca.pem          # a caller's client certificate must chain to this
    internal_tls_envoy_certificate_file: envoy.pem  # what the generated Envoy config presents
    internal_tls_envoy_key_file: envoy.key
    internal_tls_ca_file: ca.pem                 # what Envoy verifies authz's certificate against
    internal_tls_server_name: authz.internal     # the name it requires (default: grpc_address's host)
    insecure_internal: true                      # plain text to a non-loopback address, with a warning

authz's three take the inline base64 PEM form too (`internal_tls_certificate`, …_key, …_client_ca),
as the metrics keys do. Envoy's are file paths, relative to the config's folder: Envoy reads them
on its own host, so authz neither reads them nor requires them where it runs.

Whoever reaches the Check port can have assertions signed for any user, so a `grpc_address` or
`http_address` that other hosts can reach is refused without these keys, unless
`insecure_internal: true` says the network in between is trusted.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509

from authz.config import pem
from authz.config.model import Address, Config, InternalTls, Secret
from authz.config.ops import is_loopback, read_pem
from authz.schema.reader import Node, describe

INTERNAL_KEYS = (
    "internal_tls_certificate", "internal_tls_certificate_file", "internal_tls_key", "internal_tls_key_file",
    "internal_tls_client_ca", "internal_tls_client_ca_file", "internal_tls_envoy_certificate_file",
    "internal_tls_envoy_key_file", "internal_tls_ca_file", "internal_tls_server_name", "insecure_internal",
    "internal_tls_client_san", "authorize_service_url", "authorize_service_urls",
)  # fmt: skip
# authz's side (PEM it serves) and Envoy's side (paths Envoy reads): all of them, or none.
AUTHZ_SIDE = ("internal_tls_certificate", "internal_tls_key", "internal_tls_client_ca")
ENVOY_SIDE = ("internal_tls_envoy_certificate_file", "internal_tls_envoy_key_file", "internal_tls_ca_file")


def _is_set(node: Node, key: str) -> bool:
    return node.has(key) or (key in AUTHZ_SIDE and node.has(f"{key}_file"))


def _unspecified(host: str) -> bool:
    """0.0.0.0 or ::, which name every interface and no host a certificate could carry."""
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def _server_name(node: Node, explicit: str, grpc: Address) -> str:
    """The name Envoy requires on authz's certificate: `internal_tls_server_name`, else grpc_address's host."""
    name = pem.normalized_name(explicit)
    if name:
        return name
    if _unspecified(grpc.host):
        node.error(
            "internal_tls_server_name",
            f"is required: grpc_address {grpc} names no host; set the name on authz's certificate",
        )
    return grpc.host.lower()


def _san_matches(certificate: x509.Certificate, name: str) -> bool:
    """Whether `name` (a DNS name or an IP address) is among the certificate's SANs, exactly as
    Envoy's `match_typed_subject_alt_names` with an exact matcher compares them."""
    try:
        sans = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    try:
        return ipaddress.ip_address(name) in sans.get_values_for_type(x509.IPAddress)
    except ValueError:
        return any(pem.dns_matches(dns, name) for dns in sans.get_values_for_type(x509.DNSName))


def _check_pair(node: Node, certificate: bytes, key: bytes, client_ca: bytes, server_name: str) -> bool:
    """Whether authz's PEMs parse and fit together; each problem is recorded with its key."""
    chain = pem.certificates(certificate)
    if chain is None:
        node.error("internal_tls_certificate", "holds no readable certificate (value not shown)")
        return False
    if pem.certificates(client_ca) is None:
        node.error("internal_tls_client_ca", "holds no readable certificate (value not shown)")
        return False
    private = pem.private_key(key)
    if private is None:
        node.error("internal_tls_key", "is not an unencrypted PEM private key (value not shown)")
        return False
    if not pem.fits(private, chain[0]):
        node.error("internal_tls_key", "is not the key of internal_tls_certificate's first certificate")
        return False
    if not _san_matches(chain[0], server_name):
        # Envoy would refuse every handshake: say so now rather than as a 503 on every request.
        node.error(
            "internal_tls_server_name",
            f"{server_name!r} is not among the names of internal_tls_certificate (set the name it carries)",
        )
        return False
    return True


def _envoy_files(node: Node, base: Path) -> tuple[str, str, str]:
    """Envoy's three paths, resolved against the config's folder (as certificate_file)."""
    paths = []
    for key in ENVOY_SIDE:
        name = node.text(key)
        if node.has(key) and not name.strip():
            node.error(key, "expected a file path, got ''")
        paths.append(str(base / name) if name.strip() else "")
    return paths[0], paths[1], paths[2]


def _require_plain_ok(node: Node, config: Config, warnings: list[str]) -> None:
    """A non-loopback grpc_address or http_address in plain text: refused, or warned of when
    `insecure_internal` says the network in between is trusted."""
    exposed = [(key, address) for key, address in (("grpc_address", config.grpc_address),
               ("http_address", config.http_address)) if not is_loopback(address.host)]  # fmt: skip
    insecure = node.flag("insecure_internal")
    for key, address in exposed:
        if insecure:
            warnings.append(
                f"insecure_internal: {key} {address} takes plain-text calls from other hosts; whoever"
                " reaches it can have assertions signed for any user"
            )
        else:
            node.error(
                key,
                f"{address} is reachable from other hosts, and whoever reaches it can have assertions signed:"
                " set internal_tls_certificate_file, internal_tls_key_file and internal_tls_client_ca_file"
                " (with Envoy's internal_tls_envoy_certificate_file, internal_tls_envoy_key_file and"
                " internal_tls_ca_file), or listen on 127.0.0.1, or set insecure_internal: true",
            )


def read_internal_tls(
    node: Node, config: Config, base: Path, read: Callable[[str], str], warnings: list[str]
) -> InternalTls | None:
    """The Envoy ↔ authz mutual TLS settings, or None for plain text (loopback, or allowed)."""
    given = [
        key for key in (*AUTHZ_SIDE, *ENVOY_SIDE, "internal_tls_server_name", "internal_tls_client_san")
        if _is_set(node, key)
    ]  # fmt: skip
    certificate, key = read_pem(node, "internal_tls_certificate", read), read_pem(node, "internal_tls_key", read)
    client_ca = read_pem(node, "internal_tls_client_ca", read)
    envoy_certificate, envoy_key, ca = _envoy_files(node, base)
    explicit_name = node.text("internal_tls_server_name")
    client_san = pem.normalized_name(node.text("internal_tls_client_san"))
    if not given:
        _require_plain_ok(node, config, warnings)
        return None
    if node.flag("insecure_internal"):
        node.error("insecure_internal", "has no effect with internal_tls_*: leave it out")
    missing = [key for key in (*AUTHZ_SIDE, *ENVOY_SIDE) if not _is_set(node, key)]
    if missing:
        node.error(
            given[0],
            "mutual TLS between Envoy and authz needs every one of its keys; missing: "
            + ", ".join(f"{key}_file" if key in AUTHZ_SIDE else key for key in missing),
        )
        return None
    server_name = _server_name(node, explicit_name, config.grpc_address)
    if certificate is None or key is None or client_ca is None:
        return None  # unreadable: recorded by read_pem
    if not _check_pair(node, certificate, key, client_ca, server_name):
        return None
    if not client_san:
        warnings.append(
            "internal_tls_client_san is unset: any certificate internal_tls_client_ca signed can call Check"
            " and have assertions signed; set it to the name on Envoy's client certificate, or keep that CA"
            " for Envoy's certificate alone"
        )
    return InternalTls(
        certificate=certificate,
        key=Secret(key),
        client_ca=client_ca,
        envoy_certificate_file=envoy_certificate,
        envoy_key_file=envoy_key,
        ca_file=ca,
        server_name=server_name,
        client_san=client_san,
    )


def read_authorize_urls(node: Node, config: Config, warnings: list[str]) -> tuple[Address, ...]:
    """`authorize_service_url(s)` (Pomerium's keys): where Envoy dials authz, one URL per replica,
    as `http://host:port` (or `https://` with internal_tls_*). Each replica runs `workers` Check
    ports from that port up and its sidecar on http_address's port, as this config does. Empty:
    Envoy dials grpc_address (one replica, on this host)."""
    single, several = node.raw("authorize_service_url"), node.raw("authorize_service_urls")
    if single is not None and several is not None:
        node.error("authorize_service_url", "set either authorize_service_url or authorize_service_urls, not both")
        return ()
    key = "authorize_service_url" if single is not None else "authorize_service_urls"
    values = [single] if single is not None else node.str_list("authorize_service_urls")
    if not values:
        return ()
    scheme = "https" if config.internal_tls is not None else "http"
    found: list[Address] = []
    for i, value in enumerate(values):
        where = key if single is not None else f"{key}[{i}]"
        try:
            parts = urlsplit(value) if isinstance(value, str) else None
            port = parts.port if parts else None
        except ValueError:
            parts, port = None, None
        if parts is None or not parts.hostname or port is None or parts.path not in ("", "/") or parts.query:
            node.error(where, f"expected {scheme}://host:port, got {describe(value)}")
            continue
        if parts.scheme != scheme:
            why = "internal_tls_* is set" if scheme == "https" else "https:// needs internal_tls_*"
            node.error(where, f"must be {scheme}://host:port ({why}), got {describe(value)}")
            continue
        address = Address(parts.hostname, port)
        if address in found:
            node.error(where, f"{address} is listed twice")
            continue
        found.append(address)
    exposed = [a for a in found if not is_loopback(a.host)]
    if exposed and config.internal_tls is None:
        if node.flag("insecure_internal"):
            warnings.append(
                f"insecure_internal: Envoy calls authz at {', '.join(map(str, exposed))} in plain text;"
                " whoever reaches those ports can have assertions signed for any user"
            )
        else:
            node.error(
                key, f"Envoy would call {exposed[0]} in plain text: set internal_tls_* or insecure_internal: true"
            )
    return tuple(found)
