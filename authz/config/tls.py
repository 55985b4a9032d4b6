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
import re
from collections.abc import Callable
from pathlib import Path

from authz.config import pem
from authz.config.model import Pem, Upstream, UpstreamTls
from authz.schema.reader import Node, describe

_SERVER_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$")
ROUTE_TLS_KEYS = (
    "tls_custom_ca", "tls_custom_ca_file", "tls_server_name", "tls_upstream_server_name", "tls_skip_verify",
    "tls_client_cert", "tls_client_cert_file", "tls_client_key", "tls_client_key_file",
)  # fmt: skip


def pem_source(node: Node, key: str, base: Path, read: Callable[[str], str]) -> tuple[Pem, bytes] | None:
    """`key` (base64 PEM) or `key_file` (a path): where Envoy will find it, and its bytes."""
    value, where = node.inline_or_file(key, read)
    if value is None:
        return None
    if where != key:  # read from the file: Envoy reads the same file
        return Pem("filename", str(base / str(node.raw(where)))), str(value).encode()
    try:
        text = base64.b64decode(str(value).strip(), validate=True).decode("ascii")
    except (binascii.Error, ValueError):
        node.error(key, "is not base64 PEM (value not shown)")
        return None
    return Pem("inline_string", text), text.encode()


def _server_name(node: Node) -> str | None:
    """`tls_server_name` or Pomerium's newer `tls_upstream_server_name` (both read: neither is unknown)."""
    names = {key: node.text(key) for key in ("tls_server_name", "tls_upstream_server_name") if node.has(key)}
    if len(names) > 1:
        node.error("tls_server_name", "set either tls_server_name or tls_upstream_server_name, not both")
    if not names:
        return None
    key, raw = next(iter(names.items()))
    name = pem.normalized_name(raw)
    if not name or (not _SERVER_NAME.match(name) and not pem.is_ip(name)):
        node.error(key, f"{describe(raw)} is not a host name or an IP address")
        return None
    return name


def read_upstream_tls(
    node: Node, to: tuple[Upstream, ...], base: Path, read: Callable[[str], str], warnings: list[str]
) -> UpstreamTls:
    """A route's TLS to its upstreams; `to` is what `_upstreams` read. Every PEM is parsed here,
    and the client key checked against its certificate: what Envoy would refuse at start (and
    with it every route) is a config error naming the key."""
    custom_ca = pem_source(node, "tls_custom_ca", base, read)
    if custom_ca is not None and pem.certificates(custom_ca[1]) is None:
        node.error(_where(node, "tls_custom_ca"), "holds no PEM certificate (value not shown)")
        custom_ca = None
    client_cert = pem_source(node, "tls_client_cert", base, read)
    client_key = pem_source(node, "tls_client_key", base, read)
    if (client_cert is None) != (client_key is None):
        node.error("tls_client_cert", "set both tls_client_cert and tls_client_key (or their _file forms)")
        client_cert = client_key = None
    if client_cert is not None and client_key is not None:
        chain, key = pem.certificates(client_cert[1]), pem.private_key(client_key[1])
        if chain is None:
            node.error(_where(node, "tls_client_cert"), "holds no PEM certificate (value not shown)")
        elif key is None:
            node.error(_where(node, "tls_client_key"), "is not an unencrypted PEM private key (value not shown)")
        elif not pem.fits(key, chain[0]):
            node.error(_where(node, "tls_client_key"), "is not the key of tls_client_cert's first certificate")
        if chain is None or key is None or not pem.fits(key, chain[0]):
            client_cert = client_key = None
    name = _server_name(node)
    skip = node.flag("tls_skip_verify")
    tls = UpstreamTls(
        custom_ca=custom_ca[0] if custom_ca else None, server_name=name, skip_verify=skip,
        client_cert=client_cert[0] if client_cert else None, client_key=client_key[0] if client_key else None,
    )  # fmt: skip
    schemes = {u.scheme for u in to}
    if len(schemes) > 1:
        node.error("to", "mixes http and https upstreams: one route speaks one of them to all its upstreams")
    if tls != UpstreamTls() and schemes == {"http"}:
        key_set = next((k for k in ROUTE_TLS_KEYS if node.has(k)), "tls_skip_verify")
        node.error(key_set, "has no effect: the route's upstreams are http:// (use https://)")
    hosts = sorted({u.host for u in to})
    if schemes == {"https"} and len(hosts) > 1 and name is None and not skip:
        # One cluster, one TLS context: every upstream is verified under one name.
        node.error("to", f"https upstreams {', '.join(hosts)} are verified under one name: set tls_server_name"
                         " to the name their certificates share")  # fmt: skip
    if skip and schemes == {"https"}:
        warnings.append(
            f"{node.at('tls_skip_verify')}: the upstream's certificate is NOT verified: anyone on the path"
            " to it can read and change this route's traffic, identity headers and assertion included"
        )
    return tls


def _where(node: Node, key: str) -> str:
    return f"{key}_file" if node.has(f"{key}_file") else key


def read_certificates(node: Node, base: Path, read: Callable[[str], str]) -> tuple[tuple[str, str], ...]:
    """`certificates`: more certificate and key files for the listener, chosen by SNI; each pair
    parsed, and the key checked against its certificate (Envoy would not start otherwise)."""
    raw = node.raw("certificates")
    if raw is None:
        return ()
    if not isinstance(raw, list):
        node.error("certificates", f"expected a list of {{cert, key}} file paths, got {describe(raw)}")
        return ()
    pairs = []
    for i, item in enumerate(raw):
        where = f"certificates[{i}]"
        if not isinstance(item, dict) or set(item) != {"cert", "key"}:
            node.error(where, "expected {cert: <file>, key: <file>}")
            continue
        texts = []
        for part in ("cert", "key"):
            value = item[part]
            try:
                texts.append(read(str(value)).encode() if isinstance(value, str) and value else b"")
            except OSError as exc:
                node.error(f"{where}.{part}", f"cannot read {describe(value)}: {exc.strerror or exc}")
                texts.append(b"")
        if not all(texts):
            continue
        chain, key = pem.certificates(texts[0]), pem.private_key(texts[1])
        if chain is None:
            node.error(f"{where}.cert", "holds no PEM certificate")
        elif key is None:
            node.error(f"{where}.key", "is not an unencrypted PEM private key")
        elif not pem.fits(key, chain[0]):
            node.error(f"{where}.key", "is not the key of its cert")
        else:
            pairs.append((str(base / item["cert"]), str(base / item["key"])))
    return tuple(pairs)
