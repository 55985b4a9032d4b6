"""Pomerium Policy Language: parsed once into frozen nodes, evaluated directly."""

from authz.policy.ast import Policy, PolicyInput, Verdict
from authz.policy.legacy import LegacyOptions
from authz.policy.parse import parse_policy

__all__ = ["LegacyOptions", "Policy", "PolicyInput", "Verdict", "parse_policy"]
