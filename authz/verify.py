"""Verify authz's `X-Pomerium-Jwt-Assertion` in a Python app behind the gate: the upstream verifier.

    from authz.verify import AssertionMiddleware, Verifier

    verifier = Verifier(
        "https://app.example.com/.well-known/pomerium/jwks.json",
        audience="app.example.com",  # the route's host: set by you, never read from the request
        issuer="app.example.com",    # the same (or https://app.example.com/ with jwt_issuer_format: uri)
    )
    app = AssertionMiddleware(app, verifier)          # ASGI (Starlette, FastAPI, …)
    app = WSGIAssertionMiddleware(app, verifier)      # WSGI (Flask, Django, …)

A request without a valid assertion gets 401 and never reaches the app; the app finds the verified
`Identity` in `scope["state"]["identity"]` (ASGI) or `environ["authz.identity"]` (WSGI).

What is checked: the signature against the JWKS (fetched over HTTPS or from loopback, cached for the
server's `Cache-Control: max-age` within [60 s, 1 day], fetched again once when a token names an
unknown key id, at most once per `refetch_interval` so forged key ids cannot make it hammer the
JWKS); the algorithm, from an allow-list of asymmetric ones that must also match the key; `aud` and
`iss` against the values you pass; `exp` and `iat` with `leeway`; and a non-empty `sub` (a public
route's assertion names nobody) unless `allow_anonymous=True`.

This module imports only the standard library and PyJWT (`pip install authz` without the `server`
extra installs just those), so any Python app can use it.
"""

from __future__ import annotations

import json
import re
import ssl
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt

HEADER = "x-pomerium-jwt-assertion"
ASYMMETRIC = frozenset({"ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "EdDSA"})
MIN_TTL, DEFAULT_TTL, MAX_TTL = 60.0, 300.0, 86_400.0
MAX_JWKS_BYTES = 256 * 1024
_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*(\d+)", re.IGNORECASE)


class InvalidAssertion(Exception):
    """The assertion is missing, malformed, or fails a check; `str()` says which (safe to log)."""


@dataclass(frozen=True, slots=True)
class Identity:
    """Who the gate let through, from a verified assertion."""

    sub: str
    email: str = ""
    name: str = ""
    groups: tuple[str, ...] = ()
    claims: Mapping[str, Any] = field(default_factory=dict)

    @property
    def anonymous(self) -> bool:
        return not self.sub


class Verifier:
    """Verifies assertions for one route host; thread-safe, one per app."""

    def __init__(
        self,
        jwks_url: str,
        *,
        audience: str,
        issuer: str,
        algorithms: Iterable[str] = ("ES256", "RS256"),
        leeway: float = 30.0,
        allow_anonymous: bool = False,
        timeout: float = 5.0,
        refetch_interval: float = 10.0,
        ssl_context: ssl.SSLContext | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not audience or not issuer:
            raise ValueError("audience and issuer are required: the route's host, as you configured it")
        allowed = frozenset(algorithms)
        if not allowed or not allowed <= ASYMMETRIC:
            raise ValueError(f"algorithms must be asymmetric ones from {sorted(ASYMMETRIC)}, got {sorted(allowed)}")
        parts = urllib.parse.urlsplit(jwks_url)
        loopback = parts.hostname in ("localhost", "127.0.0.1", "::1")
        if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
            raise ValueError(f"the JWKS URL must be https:// (or http:// on loopback), got {jwks_url!r}")
        self.jwks_url, self.audience, self.issuer = jwks_url, audience, issuer
        self.algorithms, self.leeway, self.allow_anonymous = allowed, leeway, allow_anonymous
        self._timeout, self._refetch_interval, self._ssl, self._clock = timeout, refetch_interval, ssl_context, clock
        self._keys: dict[str, jwt.PyJWK] = {}
        self._expires = 0.0  # when the cached JWKS must be fetched again
        self._last_fetch = float("-inf")
        self._fetched = True  # whether the last fetch answered (a failed one is retried after the interval)
        self._lock = threading.Lock()

    # -- the JWKS ------------------------------------------------------------------------------

    def _fetch(self) -> None:
        """Fetch the JWKS (called with the lock held); keys that do not load are left out."""
        self._last_fetch = self._clock()
        request = urllib.request.Request(self.jwks_url, headers={"accept": "application/json"})  # noqa: S310 - scheme checked
        with urllib.request.urlopen(request, timeout=self._timeout, context=self._ssl) as answer:  # noqa: S310
            body = answer.read(MAX_JWKS_BYTES + 1)
            cache_control = answer.headers.get("cache-control", "")
        if len(body) > MAX_JWKS_BYTES:
            raise ValueError("the JWKS is too large")
        document = json.loads(body)
        if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
            raise ValueError("the JWKS is not a JSON object with a keys list")
        keys: dict[str, jwt.PyJWK] = {}
        for entry in document["keys"]:
            if not isinstance(entry, dict) or not isinstance(entry.get("kid"), str):
                continue
            try:
                keys[entry["kid"]] = jwt.PyJWK(entry)
            except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError):
                continue
        found = _MAX_AGE.search(cache_control)
        ttl = min(max(float(found.group(1)), MIN_TTL), MAX_TTL) if found else DEFAULT_TTL
        self._keys, self._expires = keys, self._last_fetch + ttl

    def _key(self, kid: str) -> jwt.PyJWK:
        with self._lock:
            now = self._clock()
            waited = now - self._last_fetch >= self._refetch_interval
            # Fetched when the cached JWKS has expired (after a failed fetch, not before the interval),
            # or for an unknown key id (not before the interval: forged ids must not hammer the JWKS).
            stale = now >= self._expires and (self._fetched or waited)
            if stale or (kid not in self._keys and waited):
                try:
                    self._fetch()
                    self._fetched = True
                except (OSError, ValueError) as exc:
                    self._fetched = False
                    # Keys that answered before keep working while the JWKS is briefly away.
                    if now >= self._expires + MAX_TTL:
                        self._keys = {}
                    if not self._keys:
                        raise InvalidAssertion(f"the JWKS could not be fetched: {exc}") from None
            found = self._keys.get(kid)
        if found is None:
            raise InvalidAssertion(f"no published key has the key id {kid[:64]!r}")
        return found

    # -- an assertion --------------------------------------------------------------------------

    def verify(self, token: str) -> Identity:
        """The identity in `token`, or InvalidAssertion saying what failed."""
        if not token:
            raise InvalidAssertion("no assertion")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidAssertion("the assertion is not a JWT") from None
        algorithm, kid = header.get("alg"), header.get("kid")
        if algorithm not in self.algorithms:
            raise InvalidAssertion(f"the algorithm {str(algorithm)[:16]!r} is not allowed")
        if not isinstance(kid, str) or not kid:
            raise InvalidAssertion("the assertion names no key id")
        key = self._key(kid)
        if key.algorithm_name != algorithm:
            raise InvalidAssertion(f"the key {kid[:64]!r} is not a {algorithm} key")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[algorithm],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": ["exp", "iat", "aud", "iss"]},
            )
        except jwt.PyJWTError as exc:
            raise InvalidAssertion(f"the assertion fails verification: {exc}") from None
        sub = claims.get("sub")
        if not isinstance(sub, str):
            raise InvalidAssertion("the assertion's sub is not a string")
        if not sub and not self.allow_anonymous:
            raise InvalidAssertion("the assertion names no user (a public route's); allow_anonymous is off")
        groups = claims.get("groups")
        return Identity(
            sub=sub,
            email=_text(claims.get("email")),
            name=_text(claims.get("name")),
            groups=tuple(g for g in groups if isinstance(g, str)) if isinstance(groups, list) else (),
            claims=claims,
        )


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


# -- middlewares ---------------------------------------------------------------------------------

_UNAUTHORIZED = b"401 Unauthorized: this app is reached through the access gate only\n"


class AssertionMiddleware:
    """ASGI: HTTP and WebSocket requests without a valid assertion are refused (401, or a WebSocket
    close); the others reach the app with `scope["state"]["identity"]`."""

    def __init__(self, app: Any, verifier: Verifier, header: str = HEADER) -> None:
        self.app, self.verifier, self.header = app, verifier, header.lower().encode("latin-1")

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        values = [v for k, v in scope.get("headers", ()) if k.lower() == self.header]
        try:
            if len(values) != 1:
                raise InvalidAssertion("no assertion" if not values else "more than one assertion")
            identity = self.verifier.verify(values[0].decode("latin-1"))
        except InvalidAssertion:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"cache-control", b"no-store")]
            await send({"type": "http.response.start", "status": 401, "headers": headers})
            await send({"type": "http.response.body", "body": _UNAUTHORIZED})
            return
        scope = {**scope, "state": {**scope.get("state", {}), "identity": identity}}
        await self.app(scope, receive, send)


class WSGIAssertionMiddleware:
    """WSGI: requests without a valid assertion are refused (401); the others reach the app with
    `environ["authz.identity"]`."""

    def __init__(self, app: Any, verifier: Verifier, header: str = HEADER) -> None:
        self.app, self.verifier = app, verifier
        self.key = "HTTP_" + header.upper().replace("-", "_")

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        try:
            identity = self.verifier.verify(environ.get(self.key, ""))
        except InvalidAssertion:
            start_response("401 Unauthorized", [("Content-Type", "text/plain; charset=utf-8"),
                                                ("Cache-Control", "no-store")])  # fmt: skip
            return [_UNAUTHORIZED]
        environ["authz.identity"] = identity
        result: Iterable[bytes] = self.app(environ, start_response)
        return result
