"""The test PKI, made once per session (tests/conftest.py `pki`): every certificate case the TLS
tests need, from authz.dev.certs' builders."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from authz.dev.certs import Issued, authority, issue, revocation_list


@dataclass(frozen=True)
class Pki:
    root: Issued  # the CA that downstream_mtls and the internal links trust
    intermediate: Issued  # signed by root; its leaves need max_verify_depth 2
    other_root: Issued  # a CA nobody trusts
    server: Issued  # the edge: *.localhost, localhost, 127.0.0.1
    client: Issued  # a valid client certificate, straight from root
    via_intermediate: Issued  # a valid client certificate from the intermediate
    revoked: Issued  # listed in `crl`
    expired: Issued
    foreign: Issued  # from other_root
    wrong_san: Issued  # valid, but its SAN matches no `match_subject_alt_names`
    authz: Issued  # authz's listeners (server and client usage)
    envoy: Issued  # Envoy's client certificate toward authz and upstreams
    upstream: Issued  # an app over TLS
    crl: bytes  # root's CRL, listing `revoked`
    intermediate_crl: bytes  # the intermediate's CRL, listing `revoked_via_intermediate`
    revoked_via_intermediate: Issued
    forged: Issued  # alice's names, from other_root: what anyone can make for themselves


def make_pki() -> Pki:
    root = authority("test root CA")
    intermediate = authority("test intermediate CA", root, path_length=0)
    other_root = authority("some other CA")
    now = dt.datetime.now(dt.UTC)
    revoked = issue(root, "revoked user", emails=["revoked@example.com"], client=True)
    revoked_via_intermediate = issue(intermediate, "revoked bob", emails=["rbob@example.com"], client=True)
    alice = {
        "emails": ["alice@example.com"],
        "dns": ["alice.devices.example.com"],
        "uris": ["spiffe://example.com/alice"],
    }
    return Pki(
        root=root,
        intermediate=intermediate,
        other_root=other_root,
        server=issue(root, "edge", dns=["localhost", "*.localhost", "*.edge.test"], ips=["127.0.0.1"], server=True),
        client=issue(root, "alice", **alice, client=True),
        via_intermediate=issue(intermediate, "bob", emails=["bob@example.com"], client=True),
        revoked=revoked,
        expired=issue(
            root,
            "expired user",
            emails=["old@example.com"],
            client=True,
            not_before=now - dt.timedelta(days=30),
            not_after=now - dt.timedelta(days=1),
        ),
        foreign=issue(other_root, "mallory", emails=["mallory@example.com"], client=True),
        wrong_san=issue(root, "eve", emails=["eve@elsewhere.example"], client=True),
        authz=issue(root, "authz", dns=["localhost"], ips=["127.0.0.1"], server=True, client=True),
        envoy=issue(root, "envoy", dns=["envoy"], client=True),
        upstream=issue(root, "upstream", dns=["localhost", "upstream.test"], ips=["127.0.0.1"], server=True),
        crl=revocation_list(root, [revoked.cert]),
        intermediate_crl=revocation_list(intermediate, [revoked_via_intermediate.cert]),
        revoked_via_intermediate=revoked_via_intermediate,
        forged=issue(other_root, "alice", **alice, client=True),
    )
