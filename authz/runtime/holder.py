"""The one owner of the live Runtime: read once per request, swapped whole (reload).

Pomerium's authorize service keeps an atomic pointer to its state and loads it at the top of each
Check; this is the same idea. Rebinding one attribute is atomic in CPython, so a reader sees the
old Runtime or the new one, never a mix, and a request that started on the old one finishes on it.
"""

from __future__ import annotations

from authz.runtime.state import Runtime


class RuntimeHolder:
    """Holds the current Runtime; the gRPC servicer, the web app and background tasks read it here."""

    # `current` is a plain slot, not a property: it is read on every Check, and an attribute read
    # costs no Python call.
    __slots__ = ("current",)

    def __init__(self, runtime: Runtime) -> None:
        self.current = runtime  # the Runtime to use for the whole of one request or background pass

    def swap(self, runtime: Runtime) -> Runtime:
        """Make `runtime` current and return the previous one (close it once its requests are done)."""
        previous, self.current = self.current, runtime
        return previous
