"""The OpenID Connect relying party: discovery, JWKS, code exchange, userinfo, refresh, revocation.

Protocol steps use authlib's OAuth 2.0 client (on httpx2); ID tokens are verified by `idtoken`.
Discovery and the JWKS are fetched asynchronously and cached; an unknown `kid` refetches the JWKS
once (at most every 10 s), so key rotation works and a flood of bogus kids cannot hammer the IdP.

Every failure of a step becomes one class of `authz.errors` (`_guard`): no answer in time is
IdpTimeout; unreachable, HTTP 5xx or an unusable answer is IdpUnavailable; an OAuth `error`
(RFC 6749 §5.2) in a 2xx or 4xx answer is IdpRefused with that code. JSON that repeats a key is
unusable wherever the IdP sends it (discovery, keys, tokens, userinfo): which `sub` or `email`
counts would depend on the parser, as it would in an ID token (see `idtoken`).

Every sign-in uses PKCE S256 (RFC 7636), whether or not discovery lists it: many providers
support it without saying so. `idp_disable_pkce` turns it off for one that chokes on it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlencode

import httpx2
from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.httpx_client import AsyncOAuth2Client

from authz.config import IdentityProvider
from authz.errors import IdpError, IdpRefused, IdpTimeout, IdpUnavailable, InvalidIdToken
from authz.identity.idtoken import (
    ProviderKey,
    allowed_algorithms,
    loads_unique,
    unverified_header,
    verify_id_token,
)
from authz.ops.metrics import NO_METRICS, Recorder

T = TypeVar("T")
METADATA_TTL = 3600.0
JWKS_MIN_REFETCH = 10.0


@dataclass(frozen=True, slots=True)
class Metadata:
    """What discovery told us (OpenID Connect Discovery 1.0 §3)."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    userinfo_endpoint: str = ""
    end_session_endpoint: str = ""
    revocation_endpoint: str = ""
    algorithms: frozenset[str] = frozenset({"RS256"})


@dataclass(frozen=True, slots=True)
class Tokens:
    """A token endpoint response, with the absolute expiry of the access token (0 if none given)."""

    access_token: str
    id_token: str
    refresh_token: str
    expires_at: int


def _oauth_error(response: httpx2.Response) -> str | None:
    """The OAuth `error` code of an error response (RFC 6749 §5.2), or None if it has none."""
    try:
        body = response.json()
    except ValueError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, str) and error else None


def _check_answer(response: httpx2.Response) -> httpx2.Response:
    """Pass a 2xx; raise OAuthError for a 4xx with an OAuth `error`, httpx2.HTTPStatusError for the rest.

    authlib raises httpx2.HTTPStatusError itself for a 5xx or a body that is not a JSON object, but
    hands a 4xx JSON object without `error` back as if it were tokens, and never looks at the status
    of a revocation; this hook (and `revoke`) makes every endpoint answer the same way.
    """
    if response.is_success:
        return response
    error = _oauth_error(response) if response.status_code < 500 else None
    if error is not None:
        raise OAuthError(error=error)
    # A 5xx is the IdP's fault, even when its body names an OAuth error (`temporarily_unavailable`).
    # A 4xx without an OAuth `error` is not the refusal RFC 6749 §5.2 defines (it MUST carry one):
    # it is a gateway, firewall or rate limiter speaking (403 page, 429), or a wrong endpoint (404).
    # It says nothing about the user's grant, so it is "answered something unusable" (502, and the
    # refresher retries it) rather than a refusal with an error code we would have to make up.
    response.raise_for_status()
    return response


def _check_tokens(response: httpx2.Response) -> httpx2.Response:
    """`_check_answer`, then ValueError for a token response whose JSON repeats a key."""
    loads_unique(_check_answer(response).content)  # authlib parses it again, keeping the last
    return response


async def _guard(what: str, call: Callable[[], Awaitable[T]]) -> T:
    """Map every failure of an IdP call to IdpTimeout, IdpUnavailable or IdpRefused, naming the step."""
    try:
        return await call()
    except httpx2.TimeoutException:
        raise IdpTimeout(f"the identity provider timed out during {what}") from None
    except (httpx2.TransportError, OSError) as exc:
        raise IdpUnavailable(f"the identity provider is unreachable during {what}: {type(exc).__name__}") from None
    except httpx2.HTTPStatusError as exc:  # see _check_answer: a 5xx, or a 4xx without an OAuth error
        status = exc.response.status_code
        raise IdpUnavailable(f"the identity provider answered {what} with HTTP {status}") from None
    except OAuthError as exc:
        error = str(exc.error)[:64]  # the IdP's words: bounded before they reach a page or a log
        raise IdpRefused(error, f"the identity provider refused {what}: {error}") from None
    except (ValueError, KeyError, TypeError, RecursionError) as exc:  # RecursionError: JSON nested too deep
        raise IdpUnavailable(f"the identity provider answered {what} with something unusable: {exc}") from None


_ENDPOINTS = {
    "discovery": "discovery",
    "fetching its keys": "jwks",
    "the code exchange": "token",
    "userinfo": "userinfo",
    "the token refresh": "refresh",
    "revocation": "revoke",
}  # the step a `_guard` names → the endpoint label of its metrics


class OidcClient:
    """One identity provider, shared by every request of a process."""

    def __init__(
        self,
        idp: IdentityProvider,
        redirect_uri: str,
        transport: httpx2.AsyncBaseTransport | None = None,
        metrics: Recorder = NO_METRICS,
    ):
        self.idp = idp
        self.metrics = metrics
        self.redirect_uri = redirect_uri
        self._transport = transport or httpx2.AsyncHTTPTransport(retries=0)
        self._http = httpx2.AsyncClient(transport=self._transport, timeout=idp.timeout, follow_redirects=False)
        self._metadata: Metadata | None = None
        self._metadata_at = 0.0
        self._keys: dict[str, ProviderKey] = {}
        self._keys_at = 0.0
        self._lock = asyncio.Lock()

    async def close(self) -> None:
        await self._http.aclose()

    async def _guard(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """`_guard`, timed and counted by endpoint and outcome."""
        started = time.perf_counter()
        outcome = "ok"
        try:
            return await _guard(what, call)
        except IdpError as exc:
            outcome = str(exc.reason)
            raise
        except BaseException:  # anything else (a bug, a cancelled sign-in) is not an "ok" call
            outcome = "error"
            raise
        finally:
            self.metrics.idp_call(_ENDPOINTS.get(what, "other"), outcome, time.perf_counter() - started)

    async def _get_json(self, url: str, what: str, **kwargs: Any) -> dict[str, Any]:
        async def call() -> dict[str, Any]:
            response = await self._http.get(url, **kwargs)
            if response.status_code != 200:
                raise ValueError(f"HTTP {response.status_code}")
            data = loads_unique(response.content)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            return data

        return await self._guard(what, call)

    async def metadata(self) -> Metadata:
        """The discovery document, cached for an hour."""
        if self._metadata is not None and time.monotonic() - self._metadata_at < METADATA_TTL:
            return self._metadata
        async with self._lock:
            if self._metadata is not None and time.monotonic() - self._metadata_at < METADATA_TTL:
                return self._metadata
            doc = await self._get_json(f"{self.idp.url}/.well-known/openid-configuration", "discovery")
            issuer = str(doc.get("issuer", ""))
            if issuer.rstrip("/") != self.idp.url.rstrip("/"):
                raise IdpUnavailable(f"discovery names issuer {issuer[:80]!r}, not idp_provider_url")
            try:
                meta = Metadata(
                    issuer=issuer,
                    authorization_endpoint=str(doc["authorization_endpoint"]),
                    token_endpoint=str(doc["token_endpoint"]),
                    jwks_uri=str(doc["jwks_uri"]),
                    userinfo_endpoint=str(doc.get("userinfo_endpoint", "")),
                    end_session_endpoint=str(doc.get("end_session_endpoint", "")),
                    revocation_endpoint=str(doc.get("revocation_endpoint", "")),
                    algorithms=allowed_algorithms(doc.get("id_token_signing_alg_values_supported")),
                )
            except KeyError as exc:
                raise IdpUnavailable(f"discovery lacks {exc.args[0]}") from None
            if not meta.algorithms:
                raise IdpUnavailable("the identity provider signs ID tokens with no algorithm authz accepts")
            self._metadata, self._metadata_at = meta, time.monotonic()
            return meta

    async def _key(self, kid: str, meta: Metadata) -> ProviderKey:
        if kid in self._keys:
            return self._keys[kid]
        async with self._lock:
            if kid not in self._keys and time.monotonic() - self._keys_at >= JWKS_MIN_REFETCH:
                doc = await self._get_json(meta.jwks_uri, "fetching its keys")
                keys: dict[str, ProviderKey] = {}
                for jwk in doc.get("keys", []):
                    try:
                        key = ProviderKey.from_jwk(jwk)
                    except ValueError:
                        continue
                    keys[key.kid] = key
                self._keys, self._keys_at = keys, time.monotonic()
        if kid not in self._keys:
            if not kid and len(self._keys) == 1:
                return next(iter(self._keys.values()))
            raise InvalidIdToken("the ID token is signed with a key the identity provider does not publish")
        return self._keys[kid]

    def _oauth(self, scope: str | None = None) -> AsyncOAuth2Client:
        client = AsyncOAuth2Client(
            client_id=self.idp.client_id,
            client_secret=self.idp.client_secret.value.decode(),
            scope=scope if scope is not None else " ".join(self.idp.scopes),
            redirect_uri=self.redirect_uri,
            code_challenge_method="S256" if self.idp.pkce else None,
            transport=self._transport,
            timeout=self.idp.timeout,
        )
        client.register_compliance_hook("access_token_response", _check_tokens)
        client.register_compliance_hook("refresh_token_response", _check_tokens)
        return client

    def authorization_url(self, meta: Metadata, *, state: str, nonce: str, verifier: str) -> str:
        """The IdP's authorization URL: code flow, query response mode, nonce, PKCE S256."""
        params = dict(self.idp.request_params)
        url, _ = self._oauth().create_authorization_url(
            meta.authorization_endpoint,
            state=state,
            code_verifier=verifier if self.idp.pkce else None,
            nonce=nonce,
            response_mode="query",
            **params,
        )
        return str(url)

    @staticmethod
    def _tokens(data: dict[str, Any], now: float, what: str, previous: Tokens | None = None) -> Tokens:
        access_token = data.get("access_token")
        if not isinstance(access_token, str) or not access_token:
            # RFC 6749 §5.1: required. Empty tokens stored as if fresh would never be refreshed again.
            raise IdpUnavailable(f"the identity provider answered {what} without an access_token")
        try:
            lifetime = float(data.get("expires_in") or 0)
        except (TypeError, ValueError):
            lifetime = 0.0
        # Unknown, zero or negative lifetimes are "unknown" (0): never an expiry already past,
        # which would make the refresher renew the session on every pass.
        expires_at = int(now + lifetime) if lifetime > 0 else 0
        return Tokens(
            access_token=access_token,
            id_token=str(data.get("id_token") or (previous.id_token if previous else "")),
            refresh_token=str(data.get("refresh_token") or (previous.refresh_token if previous else "")),
            expires_at=expires_at,
        )

    async def exchange(self, meta: Metadata, code: str, verifier: str, now: float | None = None) -> Tokens:
        """Trade an authorization code for tokens (RFC 6749 §4.1.3, RFC 7636 §4.5)."""
        now = time.time() if now is None else now
        client = self._oauth()
        kwargs = {"code_verifier": verifier} if self.idp.pkce else {}
        what = "the code exchange"
        data = await self._guard(what, lambda: client.fetch_token(meta.token_endpoint, code=code, **kwargs))
        return self._tokens(dict(data), now, what)

    async def verify(self, meta: Metadata, raw: str, nonce: str | None, now: float) -> dict[str, Any]:
        """Verify an ID token against the provider's keys and this sign-in's nonce (None: not checked)."""
        alg, kid = unverified_header(raw, meta.algorithms)
        key = await self._key(kid, meta)
        return verify_id_token(
            raw, key, alg=alg, issuer=meta.issuer, client_id=self.idp.client_id, nonce=nonce, now=now
        )

    async def verify_refreshed(self, meta: Metadata, raw: str, subject: str, now: float) -> dict[str, Any]:
        """Verify an ID token from a refresh (OpenID Connect Core §12.2): as at sign-in, same subject, no nonce."""
        # §12.2 has no nonce for a refresh (the sign-in's is not kept, and some IdPs repeat it); iss, aud,
        # azp, exp, iat and the signature are checked exactly as at sign-in, and the user must not change.
        claims = await self.verify(meta, raw, None, now)
        if claims["sub"] != subject:
            raise InvalidIdToken("the refreshed ID token names another subject than the session's")
        return claims

    async def userinfo(self, meta: Metadata, access_token: str) -> dict[str, Any]:
        """The UserInfo claims (OpenID Connect Core §5.3), or {} if the provider has no endpoint."""
        if not meta.userinfo_endpoint or not access_token:
            return {}
        return await self._get_json(
            meta.userinfo_endpoint, "userinfo", headers={"authorization": f"Bearer {access_token}"}
        )

    async def refresh(self, meta: Metadata, previous: Tokens, now: float | None = None) -> Tokens:
        """Use the refresh token (RFC 6749 §6); IdpRefused when the IdP refuses it."""
        now = time.time() if now is None else now
        client = self._oauth(scope="")
        what = "the token refresh"
        data = await self._guard(
            what, lambda: client.refresh_token(meta.token_endpoint, refresh_token=previous.refresh_token)
        )
        return self._tokens(dict(data), now, what, previous)

    async def revoke(self, meta: Metadata, token: str, hint: str) -> None:
        """Revoke a token where the IdP offers revocation (RFC 7009 §2); IdpError if that fails."""
        if not meta.revocation_endpoint or not token:
            return
        client = self._oauth()

        async def call() -> None:
            # authlib hands back the raw response of a revocation, whatever its status (RFC 7009 §2.2).
            _check_answer(await client.revoke_token(meta.revocation_endpoint, token=token, token_type_hint=hint))

        await self._guard("revocation", call)

    @staticmethod
    def end_session_url(
        meta: Metadata, *, id_token: str, client_id: str, post_logout_redirect_uri: str, state: str = ""
    ) -> str:
        """RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0 §2), or '' if unsupported;
        `state` comes back to post_logout_redirect_uri as its `state` parameter."""
        if not meta.end_session_endpoint:
            return ""
        params = {"post_logout_redirect_uri": post_logout_redirect_uri, "client_id": client_id}
        if state:
            params["state"] = state
        if id_token:
            params["id_token_hint"] = id_token
        separator = "&" if "?" in meta.end_session_endpoint else "?"
        return f"{meta.end_session_endpoint}{separator}{urlencode(params)}"
