"""authz: an identity-aware access gate for Envoy (a Pomerium-compatible ext_authz service)."""

__version__ = "0.1.0"
