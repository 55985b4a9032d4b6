"""The OIDC client: discovery and JWKS caching, and every IdP answer mapped to one IdpError class."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

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
    assert first.algorithms == {"RS256"}


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


VERIFIER = "v" * 43 + "-verifier_of_rfc7636"


def _pkce_sign_in(client: OidcClient, idp: FakeIdp) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Start a sign-in and trade its code: (the authorization URL's query, the token request's form)."""
    idp.token = lambda request: httpx2.Response(200, json={"access_token": "a", "token_type": "Bearer"})

    async def go() -> tuple[str, bytes]:
        meta = await client.metadata()
        url = client.authorization_url(meta, state="s", nonce="n", verifier=VERIFIER)
        await client.exchange(meta, "code", VERIFIER)
        await client.close()
        (token_request,) = [r for r in idp.requests if r.url.path == "/token"]
        return url, token_request.content

    url, form = _run(go())
    return parse_qs(urlsplit(url).query), parse_qs(form.decode())


@pytest.mark.parametrize("advertised", [None, [], ["plain"], ["S256"]])
def test_pkce_s256_is_sent_whatever_discovery_says(make_config: Callable[..., Config], advertised: Any) -> None:
    """RFC 7636: many providers support S256 without listing code_challenge_methods_supported."""
    idp = FakeIdp()
    idp.pkce_methods = advertised
    query, form = _pkce_sign_in(_client(make_config, idp), idp)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(VERIFIER.encode()).digest()).rstrip(b"=").decode()  # §4.2
    assert query["code_challenge"] == [challenge] and query["code_challenge_method"] == ["S256"]
    assert form["code_verifier"] == [VERIFIER]


def test_idp_disable_pkce_sends_no_challenge_and_no_verifier(make_config: Callable[..., Config]) -> None:
    idp = FakeIdp()  # even one that advertises S256
    query, form = _pkce_sign_in(idp.client(make_config, idp_disable_pkce=True), idp)
    assert "code_challenge" not in query and "code_challenge_method" not in query
    assert "code_verifier" not in form and form["code"] == ["code"]


# JSON with a repeated key, wherever the IdP sends it: parsers disagree on which value counts.
REPEATED = {
    "/userinfo": b'{"sub": "u", "email": "u@example.com", "email": "admin@example.com"}',
    "/.well-known/openid-configuration": b'{"issuer": "https://idp.example.com", "issuer": "https://idp.example.com"}',
    "/jwks": b'{"keys": [{"kty": "RSA", "kty": "oct"}]}',
    "/token": b'{"access_token": "a", "token_type": "Bearer", "id_token": "x", "id_token": "y"}',
}  # fmt: skip


@pytest.mark.parametrize("path", list(REPEATED))
def test_an_idp_answer_with_a_repeated_key_is_unusable(make_config: Callable[..., Config], path: str) -> None:
    idp = FakeIdp()
    idp.raw[path] = REPEATED[path]

    async def go() -> None:
        client = _client(make_config, idp)
        try:
            meta = await client.metadata()
            if path == "/userinfo":
                await client.userinfo(meta, "at")
            elif path == "/jwks":
                await client.verify(meta, idp.id_token(), "n", idp.now)
            else:
                await client.exchange(meta, "code", VERIFIER)
        finally:
            await client.close()

    key = {"/userinfo": "email", "/jwks": "kty", "/token": "id_token"}.get(path, "issuer")
    with pytest.raises(IdpUnavailable, match=f"something unusable: duplicate key '{key}'"):
        _run(go())


def test_userinfo_nested_too_deep_is_unusable_not_a_crash(make_config: Callable[..., Config]) -> None:
    idp = FakeIdp()
    idp.raw["/userinfo"] = b"[" * 100_000 + b"]" * 100_000

    async def go() -> None:
        client = _client(make_config, idp)
        try:
            await client.userinfo(await client.metadata(), "at")
        finally:
            await client.close()

    with pytest.raises(IdpUnavailable, match="userinfo"):
        _run(go())


def test_every_idp_call_is_counted_by_outcome_an_unexpected_failure_as_error(
    make_config: Callable[..., Config],
) -> None:
    from authz.ops.metrics import Metrics

    idp, metrics = FakeIdp(), Metrics()
    client = _client(make_config, idp)
    client.metrics = metrics

    async def boom() -> None:
        raise RuntimeError("a bug, not the IdP")

    async def go() -> None:
        await client.metadata()
        with pytest.raises(RuntimeError):
            await client._guard("the code exchange", boom)
        await client.close()

    _run(go())
    text = metrics.exposition().decode()
    assert 'authz_idp_requests_total{endpoint="discovery",outcome="ok"} 1.0' in text
    assert 'authz_idp_requests_total{endpoint="token",outcome="error"} 1.0' in text
    assert 'authz_idp_requests_total{endpoint="token",outcome="ok"} 0.0' in text
