"""Attacks through the real Envoy, one module per class of the hardening issue (issue 9).

Each module shares one stack (module-scoped, `tests.e2e.conftest._launch` with the overrides the
class needs) and waits on conditions, never on sleeps.
"""
