"""The test PKI's certificates for Envoy ↔ authz mutual TLS, as files and as the config keys naming them."""

from __future__ import annotations

from pathlib import Path

from tests.pki import Pki


def write_internal_tls(pki: Pki, folder: Path) -> dict[str, str]:
    """Write authz's and Envoy's certificates, the CA and a foreign client certificate into `folder`;
    the `internal_tls_*` keys that name them (paths relative to `folder`, the config's)."""
    files = {
        "authz.pem": pki.authz.cert_pem,
        "authz.key": pki.authz.key_pem,
        "envoy.pem": pki.envoy.cert_pem,
        "envoy.key": pki.envoy.key_pem,
        "ca.pem": pki.root.cert_pem,
        "foreign.pem": pki.foreign.cert_pem,
        "foreign.key": pki.foreign.key_pem,
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
        (folder / name).chmod(0o600)
    return {
        "internal_tls_certificate_file": "authz.pem",
        "internal_tls_key_file": "authz.key",
        "internal_tls_client_ca_file": "ca.pem",
        "internal_tls_envoy_certificate_file": "envoy.pem",
        "internal_tls_envoy_key_file": "envoy.key",
        "internal_tls_ca_file": "ca.pem",
        "internal_tls_client_san": "envoy",  # pki.envoy's name: other certificates of the CA are refused
    }
