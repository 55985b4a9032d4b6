"""Config: YAML with Pomerium's key names, validated with a path on every error."""

from authz.config.load import load_config, parse_config
from authz.config.model import Address, Config, IdentityProvider, IssuerFormat, Route, Secret, Upstream

__all__ = [
    "Address",
    "Config",
    "IdentityProvider",
    "IssuerFormat",
    "Route",
    "Secret",
    "Upstream",
    "load_config",
    "parse_config",
]
