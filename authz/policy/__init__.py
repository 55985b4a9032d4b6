"""Pomerium Policy Language: parsed once into frozen nodes (`parse`), evaluated directly (`ast`).

The package imports nothing on its own, so `authz.policy.reasons` stays importable from anywhere.
"""
