"""Server names and SANs compared as Envoy compares them."""

from __future__ import annotations

from authz.config.pem import dns_matches, normalized_name


def test_a_wildcard_covers_one_left_most_label() -> None:
    assert dns_matches("*.example.com", "a.example.com") and dns_matches("A.Example.com", "a.example.COM")
    assert not dns_matches("*.example.com", "a.b.example.com")
    assert not dns_matches("*.example.com", "example.com") and not dns_matches("*.example.com", ".example.com")
    assert not dns_matches("a.example.com", "b.example.com")


def test_names_are_normalised() -> None:
    assert normalized_name(" [0:0:0:0:0:0:0:1] ") == "::1"
    assert normalized_name("Authz.Internal") == "authz.internal"
    assert normalized_name("127.000.0.1") == "127.000.0.1"  # not an IP to Python either: left as a name
