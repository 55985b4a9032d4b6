"""Sessions as plain values: the stored record, and the handle that the `_pomerium` cookie carries.

The handle is sealed and opened by `authz.sessions.codec`; this module holds data only, so the
decision core can name a Session without importing any cryptography.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Session:
    """A signed-in user's session as stored (IdP tokens included; never logged)."""

    id: str
    user_id: str
    email: str = ""
    name: str = ""
    groups: tuple[str, ...] = ()
    claims: Mapping[str, Any] = field(default_factory=dict)
    issued_at: int = 0
    expires_at: int = 0
    id_token: str = field(default="", repr=False)
    access_token: str = field(default="", repr=False)
    refresh_token: str = field(default="", repr=False)
    token_expires_at: int = 0  # when the IdP access token expires (0: unknown or never)
    unverified_email: str = ""  # an address the IdP did not vouch for: no identity, only for the 403 page

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Session:
        return cls.from_dict(json.loads(text))

    def to_dict(self) -> dict[str, Any]:
        """Every field as a JSON value (tokens included)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Session:
        """The session from `to_dict`'s form; TypeError for unknown or missing fields."""
        return cls(**{**data, "groups": tuple(data.get("groups") or ())})


@dataclass(frozen=True, slots=True)
class SessionHandle:
    """What the cookie carries: enough to find the session, bound to one host and a lifetime."""

    session_id: str
    user_id: str
    host: str
    issued_at: int
    expires_at: int

    def to_wire(self) -> list[str | int]:
        """The sealed form: a positional list, the shortest JSON for a value in every cookie."""
        return [self.session_id, self.user_id, self.host, self.issued_at, self.expires_at]

    @classmethod
    def from_wire(cls, data: object) -> SessionHandle:
        """The handle from its sealed form; ValueError for anything else."""
        if not isinstance(data, list) or len(data) != 5:
            raise ValueError("a session handle is a list of five values")
        sid, uid, host, iat, exp = data
        # Spelt out rather than all(...) over generators: this runs in every Check with a session.
        if type(sid) is not str or type(uid) is not str or type(host) is not str or type(iat) is not int:
            raise ValueError("a session handle holds three strings and two integers")
        if type(exp) is not int:
            raise ValueError("a session handle holds three strings and two integers")
        return cls(sid, uid, host, iat, exp)

    def valid_for(self, hostname: str) -> bool:
        """Host-only handles name one host; `.example.com` (with cookie_domain) covers subdomains."""
        if self.host.startswith("."):
            return hostname == self.host[1:] or hostname.endswith(self.host)
        return hostname == self.host
