"""The OIDC client: discovery and JWKS caching, and every IdP answer mapped to one IdpError class."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx2
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from authz.config import Config
from authz.errors import IdpError, IdpRefused, IdpUnavailable, InvalidIdToken
from authz.identity.oidc import OidcClient, Tokens
from tests.identity.fake_idp import SECRET, FakeIdp


def _client(make_config: Callable[..., Config], idp: FakeIdp) -> OidcClient:
    return idp.client(make_config)


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_discovery_is_cached_and_hs256_is_not_allowed(make_config: Callable[..., Config]) -> None:
    idp = FakeIdp()

    async def go() -> Any:
        client = _client(make_config, idp)
        first, second = await client.metadata(), await client.metadata()
        await client.close()
        return first, second

    first, second = _run(go())
    assert first is second and idp.hits["/.well-known/openid-configuration"] == 1
    assert first.algorithms == {"RS256"} and first.pkce_s256


def test_unknown_kid_refetches_once_then_is_rate_limited(make_config: Callable[..., Config]) -> None:
    idp = FakeIdp()

    async def go() -> None:
        client = _client(make_config, idp)
        meta = await client.metadata()
        assert (await client.verify(meta, idp.id_token("k1"), "n", idp.now))["sub"] == "u"
        idp.keys["k2"] = rsa.generate_private_key(65537, 2048)  # rotation at the IdP
        client._keys_at = 0.0  # the cached set is older than the refetch interval
        assert (await client.verify(meta, idp.id_token("k2"), "n", idp.now))["sub"] == "u"
        assert idp.hits["/jwks"] == 2
        forged = jwt.encode({"sub": "x"}, rsa.generate_private_key(65537, 2048), algorithm="RS256",
                            headers={"kid": "bogus"})  # fmt: skip
        for _ in range(5):
            with pytest.raises(InvalidIdToken, match="does not publish"):
                await client.verify(meta, forged, "n", idp.now)
        assert idp.hits["/jwks"] == 2  # a flood of unknown kids does not hammer the IdP
        await client.close()

    _run(go())


def test_discovery_with_another_issuer_is_refused(make_config: Callable[..., Config]) -> None:
    idp = FakeIdp()
    idp.issuer = "https://evil.example.com"

    async def go() -> None:
        client = _client(make_config, idp)
        with pytest.raises(IdpUnavailable, match="issuer"):
            await client.metadata()
        await client.close()

    _run(go())


def test_odd_token_responses_never_escape_as_faults(make_config: Callable[..., Config]) -> None:
    """A token endpoint answering nonsense is the IdP's fault (502/400), never an unhandled error."""
    idp = FakeIdp()
    answers = iter([
        httpx2.Response(200, json={"access_token": "a", "id_token": "i", "expires_in": "soon"}),
        httpx2.Response(200, json={"access_token": "a", "id_token": "i", "expires_in": -5}),
        httpx2.Response(200, text="<html>oops</html>"),
        httpx2.Response(400, json={"error": "invalid_grant"}),
    ])  # fmt: skip

    idp.token = lambda request: next(answers)

    async def go() -> list[object]:
        client = _client(make_config, idp)
        meta = await client.metadata()
        out: list[object] = []
        for _ in range(4):
            try:
                out.append(await client.exchange(meta, "code", "verifier"))
            except IdpError as exc:
                out.append(type(exc).__name__)
        await client.close()
        return out

    first, second, third, fourth = _run(go())
    assert first == "IdpUnavailable"  # authlib refuses a non-numeric expires_in: a 502, not a fault
    assert second.expires_at == 0  # type: ignore[attr-defined]  # a negative lifetime is "unknown"
    assert third == "IdpUnavailable" and fourth == "IdpRefused"


# What the token and revocation endpoints may answer, and the IdpError each must become: a 5xx (with
# or without a body, even one naming an OAuth `error`) is the IdP's fault, 502 idp-unavailable; a 4xx
# with an OAuth `error` is a refusal carrying that code; a 4xx without one is an unusable answer.
ANSWERS = {
    "500 text": (httpx2.Response(500, text="oops"), IdpUnavailable, None),
    "502 empty": (httpx2.Response(502), IdpUnavailable, None),
    "503 json": (httpx2.Response(503, json={"status": "down"}), IdpUnavailable, None),
    "500 oauth error": (httpx2.Response(500, json={"error": "server_error"}), IdpUnavailable, None),
    "503 with error": (httpx2.Response(503, json={"error": "temporarily_unavailable"}), IdpUnavailable, None),
    "400 invalid_grant": (httpx2.Response(400, json={"error": "invalid_grant"}), IdpRefused, "invalid_grant"),
    "401 invalid_client": (httpx2.Response(401, json={"error": "invalid_client"}), IdpRefused, "invalid_client"),
    "400 json without error": (httpx2.Response(400, json={"message": "no"}), IdpUnavailable, None),
    "403 gateway page": (httpx2.Response(403, text="<html>blocked</html>"), IdpUnavailable, None),
    "429 rate limited": (httpx2.Response(429, json={"message": "slow down"}), IdpUnavailable, None),
}  # fmt: skip
STEPS = ("exchange", "refresh", "revoke")


async def _step(client: OidcClient, step: str) -> None:
    meta = await client.metadata()
    if step == "exchange":
        await client.exchange(meta, "code", "verifier")
    elif step == "refresh":
        await client.refresh(meta, Tokens("at", "idt", "rt", 0))
    else:
        await client.revoke(meta, "rt", "refresh_token")


@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("answer", list(ANSWERS))
def test_http_errors_of_the_token_and_revocation_endpoints_map_to_idp_errors(
    make_config: Callable[..., Config], answer: str, step: str
) -> None:
    response, expected, code = ANSWERS[answer]
    idp = FakeIdp()
    idp.token = idp.revoke = lambda request: response

    async def go() -> IdpError:
        client = _client(make_config, idp)
        try:
            with pytest.raises(IdpError) as caught:
                await _step(client, step)
        finally:
            await client.close()
        return caught.value

    error = _run(go())
    assert type(error) is expected, error
    if expected is IdpUnavailable:
        assert (error.status, error.reason) == (502, "idp-unavailable")
        assert f"HTTP {response.status_code}" in error.detail
    else:
        assert isinstance(error, IdpRefused) and error.error == code
    assert SECRET not in error.detail


def test_a_token_answer_without_an_access_token_is_unusable(make_config: Callable[..., Config]) -> None:
    """RFC 6749 §5.1: access_token is required; an answer without one must not become empty tokens."""
    idp = FakeIdp()
    idp.token = lambda request: httpx2.Response(200, json={"token_type": "Bearer", "id_token": "x"})

    async def go() -> None:
        client = _client(make_config, idp)
        for step in ("exchange", "refresh"):
            with pytest.raises(IdpUnavailable, match="access_token"):
                await _step(client, step)
        await client.close()

    _run(go())


def test_revocation_that_succeeds_raises_nothing(make_config: Callable[..., Config]) -> None:
    idp = FakeIdp()

    async def go() -> None:
        client = _client(make_config, idp)
        await _step(client, "revoke")
        await client.close()

    _run(go())
    assert idp.hits["/revoke"] == 1
