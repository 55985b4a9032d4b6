"""The sealed sign-in payloads keep their wire forms, and anything malformed is a ValueError."""

from __future__ import annotations

import secrets

import pytest

from authz.sessions.payloads import CsrfCookie, Handoff, LoginAttempt, LoginState, SignOutLink
from authz.sessions.sealing import Sealer

STATE = LoginState("attempt", "csrf", 1_800_000_000)
ATTEMPT = LoginAttempt("http://app.localhost/x", "", "digest")
CSRF = CsrfCookie("csrf", "verifier", "nonce", "ab" * 32)
HANDOFF = Handoff("sid", "uid", "app.localhost", False, 1_800_000_060, "jti", "digest")
CARRIED = CsrfCookie("csrf", "verifier", "nonce", "ab" * 32, ATTEMPT)
CARRYING = Handoff("sid", "uid", "app.localhost", False, 1_800_000_060, "jti", "digest", "http://app.localhost/x")


def test_wire_forms_are_the_ones_earlier_releases_sealed() -> None:
    assert STATE.to_wire() == {"a": "attempt", "c": "csrf", "i": 1_800_000_000}
    assert ATTEMPT.to_wire() == {"t": "http://app.localhost/x", "p": "", "b": "digest"}
    assert CSRF.to_wire() == {"c": "csrf", "v": "verifier", "n": "nonce", "s": "ab" * 32}
    assert HANDOFF.to_wire() == {"s": "sid", "u": "uid", "h": "app.localhost", "p": False, "e": 1_800_000_060,
                                 "j": "jti", "b": "digest"}  # fmt: skip
    assert SignOutLink("sid").to_wire() == "sid"
    # A short return URL rides in the CSRF cookie and the handoff; "a" and "t" only then.
    assert CARRIED.to_wire() == {**CSRF.to_wire(), "a": ATTEMPT.to_wire()}
    assert CARRYING.to_wire() == {**HANDOFF.to_wire(), "t": "http://app.localhost/x"}
    # A handoff sealed before the login binding (no "b") opens with no binding, which no route redeems.
    assert Handoff.from_wire({k: v for k, v in HANDOFF.to_wire().items() if k != "b"}).binding == ""


@pytest.mark.parametrize("value", [STATE, ATTEMPT, CSRF, CARRIED, HANDOFF, CARRYING, SignOutLink("sid")])
def test_round_trip_through_a_sealer(value: LoginState | LoginAttempt | CsrfCookie | Handoff | SignOutLink) -> None:
    sealer = Sealer(secrets.token_bytes(32), b"test")
    assert type(value).from_wire(sealer.open(sealer.seal(value.to_wire()))) == value


@pytest.mark.parametrize(
    ("kind", "wire"),
    [
        (LoginState, None),
        (LoginState, ["t", "c", 1, ""]),
        (LoginState, {"a": "x", "c": "c"}),
        (LoginState, {"a": "x", "c": "c", "i": "1800000000"}),
        (LoginState, {"a": "x", "c": "c", "i": True}),
        (LoginState, {"t": "x", "c": "c", "i": 1, "p": ""}),  # the form that carried the URL itself
        (LoginAttempt, {"t": "x", "p": ""}),
        (CsrfCookie, {"c": "c", "v": "v", "n": 1, "s": "s"}),
        (CsrfCookie, {**CSRF.to_wire(), "a": "http://app.localhost/x"}),
        (CsrfCookie, {**CSRF.to_wire(), "a": {"t": "x"}}),
        (Handoff, {**HANDOFF.to_wire(), "t": 7}),
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
