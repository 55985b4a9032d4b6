"""TLS keys of the edge, as Pomerium names them: the listener's certificates, the HTTP → HTTPS
redirect listener, and each route's TLS to its upstream.

    certificate_file: edge.pem              # the listener's certificate (or several, by SNI:)
    key_file: edge.key
    certificates:
      - {cert: other.pem, key: other.key}   # file paths, chosen by the client's SNI
    http_redirect_addr: :80                 # plain HTTP, every request 301 to https
    routes:
      - from: https://app.example.com
        to: https://app.internal:8443       # TLS with SNI app.internal, verified against the system CAs
        tls_custom_ca_file: internal-ca.pem  # or tls_custom_ca (base64 PEM): replaces the system CAs
        tls_server_name: app.internal       # the SNI sent and the name checked (default: the `to` host)
        tls_client_cert_file: edge-client.pem  # or tls_client_cert/tls_client_key (base64 PEM):
        tls_client_key_file: edge-client.key   #   the edge proves itself to the app
        tls_skip_verify: false              # true: any certificate is accepted (warned at load)

A PEM given by file reaches Envoy as that file's path (Envoy reads it; no key is copied into its
config); one given inline (base64) reaches it inline.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from pathlib import Path

from authz.config.model import Pem, Upstream, UpstreamTls
from authz.schema.reader import Node, describe

ROUTE_TLS_KEYS = (
    "tls_custom_ca", "tls_custom_ca_file", "tls_server_name", "tls_upstream_server_name", "tls_skip_verify",
    "tls_client_cert", "tls_client_cert_file", "tls_client_key", "tls_client_key_file",
)  # fmt: skip


def _pem(node: Node, key: str, base: Path, read: Callable[[str], str], marker: str) -> Pem | None:
    """`key` (base64 PEM) or `key_file` (a path), checked to hold a PEM `marker` block."""
    inline, path = node.raw(key), node.raw(f"{key}_file")
    if inline is not None and path is not None:
        node.error(key, f"set either {key} or {key}_file, not both")
        return None
    if path is not None:
        where = f"{key}_file"
        if not isinstance(path, str) or not path:
            node.error(where, f"expected a file path, got {describe(path)}")
            return None
        try:
            text = read(path)
        except OSError as exc:
            node.error(where, f"cannot read {path!r}: {exc.strerror}")
            return None
        if f"-----BEGIN {marker}" not in text and not (marker == "PRIVATE KEY" and "PRIVATE KEY-----" in text):
            node.error(where, f"{path!r} holds no PEM {marker.lower()}")
            return None
        return Pem("filename", str(base / path))
    if inline is None:
        return None
    try:
        text = base64.b64decode(str(inline).strip(), validate=True).decode("ascii")
    except (binascii.Error, ValueError):
        node.error(key, "is not base64 PEM (value not shown)")
        return None
    if "-----BEGIN " not in text:
        node.error(key, "is not base64 PEM (value not shown)")
        return None
    return Pem("inline_string", text)


def read_upstream_tls(
    node: Node, to: tuple[Upstream, ...], base: Path, read: Callable[[str], str], warnings: list[str]
) -> UpstreamTls:
    """A route's TLS to its upstreams; `to` is what `_upstreams` read."""
    custom_ca = _pem(node, "tls_custom_ca", base, read, "CERTIFICATE")
    client_cert = _pem(node, "tls_client_cert", base, read, "CERTIFICATE")
    client_key = _pem(node, "tls_client_key", base, read, "PRIVATE KEY")
    if (client_cert is None) != (client_key is None):
        node.error("tls_client_cert", "set both tls_client_cert and tls_client_key (or their _file forms)")
        client_cert = client_key = None
    name = node.text("tls_server_name") or node.text("tls_upstream_server_name") or None
    if node.has("tls_server_name") and node.has("tls_upstream_server_name"):
        node.error("tls_server_name", "set either tls_server_name or tls_upstream_server_name, not both")
    skip = node.flag("tls_skip_verify")
    tls = UpstreamTls(custom_ca=custom_ca, server_name=name, skip_verify=skip, client_cert=client_cert,
                      client_key=client_key)  # fmt: skip
    schemes = {u.scheme for u in to}
    if len(schemes) > 1:
        node.error("to", "mixes http and https upstreams: one route speaks one of them to all its upstreams")
    if tls != UpstreamTls() and schemes == {"http"}:
        key = next(k for k in ROUTE_TLS_KEYS if node.has(k))
        node.error(key, "has no effect: the route's upstreams are http:// (use https://)")
    if skip and schemes == {"https"}:
        warnings.append(
            f"{node.at('tls_skip_verify')}: the upstream's certificate is NOT verified: anyone on the path"
            " to it can read and change this route's traffic, identity headers and assertion included"
        )
    return tls


def read_certificates(node: Node, base: Path) -> tuple[tuple[str, str], ...]:
    """`certificates`: more certificate and key files for the listener, chosen by SNI."""
    raw = node.raw("certificates")
    if raw is None:
        return ()
    if not isinstance(raw, list):
        node.error("certificates", f"expected a list of {{cert, key}} file paths, got {describe(raw)}")
        return ()
    pairs = []
    for i, item in enumerate(raw):
        where = f"certificates[{i}]"
        if not isinstance(item, dict) or set(item) - {"cert", "key"} or not {"cert", "key"} <= set(item):
            node.error(where, "expected {cert: <file>, key: <file>}")
            continue
        paths = []
        for part in ("cert", "key"):
            value = item[part]
            if not isinstance(value, str) or not (base / value).is_file():
                node.error(f"{where}.{part}", f"no such file {describe(value)}")
            paths.append(str(base / str(value)))
        pairs.append((paths[0], paths[1]))
    return tuple(pairs)
