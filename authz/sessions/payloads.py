"""The sign-in and sign-out payloads that authz seals (`authz.sessions.sealing.Sealer`), as named values.

Each has an explicit wire form: a JSON object with short keys, or a bare string, kept exactly as
earlier releases sealed it so values in flight across an upgrade still open. `from_wire` takes what
`Sealer.open` returned and raises ValueError for anything malformed; unknown keys are ignored.

  LoginState   the OIDC `state` (travels through the IdP)      {"a", "c", "i"}
  CsrfCookie   the per-login CSRF cookie                        {"c", "v", "n", "s"}
  Handoff      the one-time handoff to a route host's callback  {"s", "u", "h", "p", "e", "j", "b"}
  SignOutLink  the session a signed sign-out link ends          "<session id>"

and one value kept server-side, in the store (single use, 10 minutes), never in a URL or cookie:

  LoginAttempt where a sign-in returns to, however long           {"t", "p", "b"}

The return URL lives only in the store, keyed by the attempt (the `state` names it) and then by
the handoff's `jti`: a `state` stays far under the 512 bytes IdPs accept, whatever the URL's length.

The session cookie's handle is `authz.sessions.session.SessionHandle`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


def _object(data: object, what: str) -> Mapping[str, object]:
    if not isinstance(data, dict):
        raise ValueError(f"{what} is not a JSON object")
    return data


def _text(data: Mapping[str, object], key: str, what: str) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise ValueError(f"{what}: {key!r} is not a string")
    return value


def _integer(data: Mapping[str, object], key: str, what: str) -> int:
    value = data.get(key)
    if type(value) is not int:  # bool is an int subclass; it is not a time
        raise ValueError(f"{what}: {key!r} is not an integer")
    return value


def _optional_text(data: Mapping[str, object], key: str, what: str) -> str:
    return _text(data, key, what) if key in data else ""


def _flag(data: Mapping[str, object], key: str, what: str) -> bool:
    value = data.get(key)
    if not isinstance(value, bool):
        raise ValueError(f"{what}: {key!r} is not a boolean")
    return value


@dataclass(frozen=True, slots=True)
class LoginState:
    """The OIDC `state`: which sign-in attempt, the CSRF token it is bound to, and when it began."""

    attempt: str  # the store key of this attempt's LoginAttempt
    csrf: str  # must match the CSRF cookie's token
    issued_at: int

    def to_wire(self) -> dict[str, str | int]:
        return {"a": self.attempt, "c": self.csrf, "i": self.issued_at}

    @classmethod
    def from_wire(cls, data: object) -> LoginState:
        what = "login state"
        fields = _object(data, what)
        return cls(
            attempt=_text(fields, "a", what),
            csrf=_text(fields, "c", what),
            issued_at=_integer(fields, "i", what),
        )


@dataclass(frozen=True, slots=True)
class LoginAttempt:
    """What a sign-in must remember across the IdP round trip: in the CSRF cookie when short, else
    in the store (single use either way)."""

    target: str  # the signed pomerium_redirect_uri, however long
    callback_host: str  # a programmatic login's route-host origin + "/", else ""
    binding: str  # digest of the route host's binding cookie (authz.web.binding); "" if none

    def to_wire(self) -> dict[str, str]:
        return {"t": self.target, "p": self.callback_host, "b": self.binding}

    @classmethod
    def from_wire(cls, data: object) -> LoginAttempt:
        what = "login attempt"
        fields = _object(data, what)
        return cls(
            target=_text(fields, "t", what),
            callback_host=_text(fields, "p", what),
            binding=_text(fields, "b", what),
        )


@dataclass(frozen=True, slots=True)
class CsrfCookie:
    """What only the browser that started a sign-in holds: the CSRF token, PKCE verifier and nonce."""

    csrf: str
    verifier: str  # the PKCE code verifier (RFC 7636 §4.1)
    nonce: str  # the ID token must carry it (OpenID Connect Core §3.1.2.1)
    state_digest: str  # hex SHA-256 of the sealed state this cookie belongs to
    attempt: LoginAttempt | None = None  # carried here when short enough, else in the store

    def to_wire(self) -> dict[str, object]:
        wire: dict[str, object] = {"c": self.csrf, "v": self.verifier, "n": self.nonce, "s": self.state_digest}
        if self.attempt is not None:
            wire["a"] = self.attempt.to_wire()
        return wire

    @classmethod
    def from_wire(cls, data: object) -> CsrfCookie:
        what = "CSRF cookie"
        fields = _object(data, what)
        return cls(
            csrf=_text(fields, "c", what),
            verifier=_text(fields, "v", what),
            nonce=_text(fields, "n", what),
            state_digest=_text(fields, "s", what),
            attempt=LoginAttempt.from_wire(fields["a"]) if "a" in fields else None,
        )


@dataclass(frozen=True, slots=True)
class Handoff:
    """A session handed from the authenticate host to one route host, once, for a short time."""

    session_id: str
    user_id: str
    host: str  # the route host whose /.pomerium/callback/ may redeem it
    programmatic: bool  # hand the token to the client's local redirect instead of setting a cookie
    expires_at: int
    jti: str  # its single-use key; also the stash key of `target` when that was too long to carry
    binding: str = ""  # the route host redeems it only with the binding cookie of this digest
    target: str = ""  # where the browser (or a programmatic client) goes next; "" when stashed

    def to_wire(self) -> dict[str, str | int | bool]:
        wire: dict[str, str | int | bool] = {
            "s": self.session_id,
            "u": self.user_id,
            "h": self.host,
            "p": self.programmatic,
            "e": self.expires_at,
            "j": self.jti,
            "b": self.binding,
        }
        if self.target:
            wire["t"] = self.target
        return wire

    @classmethod
    def from_wire(cls, data: object) -> Handoff:
        what = "handoff"
        fields = _object(data, what)
        return cls(
            session_id=_text(fields, "s", what),
            user_id=_text(fields, "u", what),
            host=_text(fields, "h", what),
            programmatic=_flag(fields, "p", what),
            expires_at=_integer(fields, "e", what),
            jti=_text(fields, "j", what),
            binding=_optional_text(fields, "b", what),
            target=_optional_text(fields, "t", what),
        )


@dataclass(frozen=True, slots=True)
class SignOutLink:
    """The session that a signed sign-out link (route host → authenticate host) ends."""

    session_id: str

    def to_wire(self) -> str:
        return self.session_id

    @classmethod
    def from_wire(cls, data: object) -> SignOutLink:
        if not isinstance(data, str):
            raise ValueError("sign-out link: the session id is not a string")
        return cls(data)
