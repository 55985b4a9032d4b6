"""The sealed sign-in payloads keep their wire forms, and anything malformed is a ValueError."""

from __future__ import annotations

import secrets

import pytest

from authz.sessions.payloads import CsrfCookie, Handoff, LoginState, SignOutLink
from authz.sessions.sealing import Sealer

STATE = LoginState("http://app.localhost/x", "csrf", 1_800_000_000, "")
CSRF = CsrfCookie("csrf", "verifier", "nonce", "ab" * 32)
HANDOFF = Handoff("sid", "uid", "app.localhost", "http://app.localhost/x", False, 1_800_000_060, "jti")


def test_wire_forms_are_the_ones_earlier_releases_sealed() -> None:
    assert STATE.to_wire() == {"t": "http://app.localhost/x", "c": "csrf", "i": 1_800_000_000, "p": "", "b": ""}
    assert CSRF.to_wire() == {"c": "csrf", "v": "verifier", "n": "nonce", "s": "ab" * 32}
    assert HANDOFF.to_wire() == {"s": "sid", "u": "uid", "h": "app.localhost", "t": "http://app.localhost/x",
                                 "p": False, "e": 1_800_000_060, "j": "jti", "b": ""}  # fmt: skip
    assert SignOutLink("sid").to_wire() == "sid"
    # Forms sealed before the login binding (no "b") still open, with no binding.
    assert LoginState.from_wire({k: v for k, v in STATE.to_wire().items() if k != "b"}) == STATE
    assert Handoff.from_wire({k: v for k, v in HANDOFF.to_wire().items() if k != "b"}) == HANDOFF


@pytest.mark.parametrize("value", [STATE, CSRF, HANDOFF, SignOutLink("sid")])
def test_round_trip_through_a_sealer(value: LoginState | CsrfCookie | Handoff | SignOutLink) -> None:
    sealer = Sealer(secrets.token_bytes(32), b"test")
    assert type(value).from_wire(sealer.open(sealer.seal(value.to_wire()))) == value


@pytest.mark.parametrize(
    ("kind", "wire"),
    [
        (LoginState, None),
        (LoginState, ["t", "c", 1, ""]),
        (LoginState, {"t": "x", "c": "c", "p": ""}),
        (LoginState, {"t": "x", "c": "c", "i": "1800000000", "p": ""}),
        (LoginState, {"t": "x", "c": "c", "i": True, "p": ""}),
        (CsrfCookie, {"c": "c", "v": "v", "n": 1, "s": "s"}),
        (Handoff, {**HANDOFF.to_wire(), "p": 1}),
        (Handoff, {**HANDOFF.to_wire(), "e": 1.5}),
        (Handoff, {k: v for k, v in HANDOFF.to_wire().items() if k != "j"}),
        (SignOutLink, {"s": "sid"}),
        (SignOutLink, 7),
    ],
)
def test_malformed_wire_is_a_value_error(kind: type, wire: object) -> None:
    with pytest.raises(ValueError):
        kind.from_wire(wire)


def test_unknown_keys_are_ignored() -> None:
    assert LoginState.from_wire({**STATE.to_wire(), "x": 1}) == STATE
