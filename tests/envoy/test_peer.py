"""Who may call over the internal mutual TLS: a SAN of the caller's certificate must be Envoy's."""

from __future__ import annotations

from authz.envoy.peer import carries, ssl_sans


def test_a_san_is_matched_as_envoy_matches_names() -> None:
    assert carries(["alice.example.com", "envoy"], "envoy")
    assert carries(["*.mesh.internal"], "envoy.mesh.internal")
    assert carries(["0:0::1"], "::1") and carries(["10.0.0.5"], "10.0.0.5")
    assert not carries(["envoy.evil.example"], "envoy") and not carries([], "envoy")
    assert not carries(["*.internal"], "a.b.internal") and not carries(["10.0.0.6"], "10.0.0.5")


def test_python_ssl_peer_certificates_give_their_sans() -> None:
    peer = {"subject": ((("commonName", "envoy"),),), "subjectAltName": (("DNS", "envoy"), ("URI", "spiffe://x"))}
    assert ssl_sans(peer) == ["envoy", "spiffe://x"]
    assert ssl_sans({"subject": ((("commonName", "envoy"),),)}) == [] and ssl_sans(None) == []
