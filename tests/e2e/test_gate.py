"""Through a real Envoy: public routes, the assertion, spoofing, sessions, denials, failure."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlsplit

import pytest
from joserfc import jwt as jose_jwt
from joserfc.jwk import KeySet

from .conftest import Stack

pytestmark = pytest.mark.e2e


def _verify(stack: Stack, host: str, token: str) -> dict[str, object]:
    """Verify with joserfc (not the library that signed) against the JWKS fetched through Envoy."""
    jwks = stack.get(host, "/.well-known/pomerium/jwks.json")
    assert jwks.status_code == 200
    keys = KeySet.import_key_set(jwks.json())
    token_obj = jose_jwt.decode(token, keys, algorithms=["ES256"])
    claims = dict(token_obj.claims)
    assert token_obj.header["kid"] == jwks.json()["keys"][0]["kid"]
    assert token_obj.header["typ"] == "JWT"
    return claims


def test_public_route_reaches_upstream_with_verifiable_assertion(stack: Stack) -> None:
    response = stack.get("public.localhost", "/hello?x=1")
    assert response.status_code == 200
    seen = stack.upstream.last()
    assert seen.path == "/hello?x=1"
    claims = _verify(stack, "public.localhost", seen.one("x-pomerium-jwt-assertion") or "")
    now = time.time()
    assert claims["iss"] == claims["aud"] == "public.localhost"
    assert claims["sub"] == claims["email"] == claims["sid"] == "" and claims["groups"] == []
    assert claims["exp"] - claims["iat"] == 300 and abs(claims["iat"] - now) < 30  # type: ignore[operator]
    assert "nbf" not in claims


def test_jwks_headers(stack: Stack) -> None:
    response = stack.get("public.localhost", "/.well-known/pomerium/jwks.json")
    assert response.headers["cache-control"] == "max-age=60"
    assert response.headers["access-control-allow-origin"] == "*"
    etag = response.headers["etag"]
    again = stack.get("public.localhost", "/.well-known/pomerium/jwks.json", headers={"if-none-match": etag})
    assert again.status_code == 304
    (key,) = response.json()["keys"]
    assert key["kty"] == "EC" and key["alg"] == "ES256" and len(key["kid"]) == 64
    assert "d" not in key
    assert stack.upstream.requests == []


def test_discovery_document(stack: Stack) -> None:
    doc = stack.get("public.localhost", "/.well-known/pomerium").json()
    assert doc["jwks_uri"] == f"http://public.localhost:{stack.envoy_port}/.well-known/pomerium/jwks.json"
    assert doc["authentication_callback_endpoint"].endswith("/oauth2/callback")


def test_spoofed_identity_headers_never_reach_upstream(stack: Stack) -> None:
    forged = {
        "x-pomerium-jwt-assertion": "forged.token.value",
        "x-pomerium-claim-email": "ceo@example.com",
        "x-pomerium-claim-department": "finance",
        "x-pomerium-anything": "x",
        "x-pomerium-authorization": "nonsense",
    }
    assert stack.get("public.localhost", "/", headers=forged).status_code == 200
    seen = stack.upstream.last()
    assert seen.one("x-pomerium-jwt-assertion") != "forged.token.value"
    assert seen.one("x-pomerium-claim-email") == ""
    assert seen.one("x-pomerium-claim-department") == ""
    assert seen.one("x-pomerium-anything") is None
    assert seen.one("x-pomerium-authorization") is None
    # pass_identity_headers: false — nothing identity-like reaches the upstream at all.
    assert stack.get("hidden.localhost", "/", headers=forged).status_code == 200
    seen = stack.upstream.last()
    for name in forged:
        assert seen.one(name) is None, name


def test_browser_without_session_is_redirected_to_sign_in(stack: Stack) -> None:
    response = stack.get("private.localhost", "/dash?a=b", headers={"accept": "text/html"})
    assert response.status_code == 302
    location = urlsplit(response.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == (
        f"http://authenticate.localhost:{stack.envoy_port}/.pomerium/sign_in"
    )
    query = parse_qs(location.query)
    assert query["pomerium_redirect_uri"] == [f"http://private.localhost:{stack.envoy_port}/dash?a=b"]
    assert int(query["pomerium_expiry"][0]) - int(query["pomerium_issued"][0]) == 300
    assert query["pomerium_signature"][0]
    assert stack.upstream.requests == []
    for accept in (None, "*/*"):
        headers = {"accept": accept} if accept else {}
        assert stack.get("private.localhost", "/", headers=headers).status_code == 302


def test_api_client_without_session_gets_401_json(stack: Stack) -> None:
    response = stack.get("private.localhost", "/api", headers={"accept": "application/json"})
    assert response.status_code == 401
    body = response.json()
    assert body["status"] == 401 and body["error"] == "Unauthenticated"
    assert body["reasons"] == ["user-unauthenticated"]
    assert body["request_id"] == response.headers["x-request-id"]
    assert body["sign_in_url"].startswith(f"http://authenticate.localhost:{stack.envoy_port}/.pomerium/sign_in?")
    xhr = stack.get("private.localhost", "/", headers={"x-requested-with": "XMLHttpRequest"})
    assert xhr.status_code == 401
    assert stack.upstream.requests == []


def test_valid_session_reaches_upstream(stack: Stack) -> None:
    cookie = stack.seed_session(
        "private.localhost",
        user_id="u-123",
        email="alice@example.com",
        name="Alice",
        groups=("eng", "ops"),
        claims={"department": ["research", "ml"]},
    )
    response = stack.get(
        "private.localhost",
        "/dash",
        headers={"cookie": f"theme=dark; _pomerium={cookie}; lang=en", "x-secret-internal": "1"},
    )
    assert response.status_code == 200
    seen = stack.upstream.last()
    claims = _verify(stack, "private.localhost", seen.one("x-pomerium-jwt-assertion") or "")
    assert claims["sub"] == claims["user"] == "u-123"
    assert claims["email"] == "alice@example.com" and claims["name"] == "Alice"
    assert claims["groups"] == ["eng", "ops"]
    assert claims["department"] == "research,ml"
    assert seen.one("x-pomerium-claim-email") == "alice@example.com"
    assert seen.one("x-pomerium-claim-groups") == "eng,ops"
    assert seen.one("x-jwt-copy") == seen.one("x-pomerium-jwt-assertion")
    assert seen.one("x-literal") == "$5"
    assert seen.one("cookie") == "theme=dark; lang=en"
    assert seen.one("x-secret-internal") is None


def test_session_as_authorization_header(stack: Stack) -> None:
    token = stack.seed_session("private.localhost", user_id="u-9", email="bob@example.com")
    for header in (f"Pomerium {token}", f"Bearer Pomerium-{token}"):
        response = stack.get("private.localhost", "/", headers={"authorization": header})
        assert response.status_code == 200
        assert stack.upstream.last().one("authorization") is None
    other = stack.get(
        "private.localhost",
        "/",
        headers={"authorization": "Basic dXNlcjpwYXNz", "cookie": f"_pomerium={token}"},
    )
    assert other.status_code == 200
    assert stack.upstream.last().one("authorization") == "Basic dXNlcjpwYXNz"
    assert stack.upstream.last().one("cookie") is None


def test_denied_request_gets_403_and_upstream_is_not_hit(stack: Stack) -> None:
    cookie = stack.seed_session("private.localhost", user_id="u-2", email="mallory@evil.test")
    response = stack.get("private.localhost", "/", headers={"cookie": f"_pomerium={cookie}", "accept": "text/html"})
    assert response.status_code == 403
    assert "domain-unauthorized" in response.text
    assert response.headers["x-request-id"] in response.text
    as_json = stack.get(
        "private.localhost", "/", headers={"cookie": f"_pomerium={cookie}", "accept": "application/json"}
    )
    assert as_json.status_code == 403
    assert as_json.json() == {
        "status": 403,
        "error": "Forbidden",
        "reasons": ["domain-unauthorized"],
        "request_id": as_json.headers["x-request-id"],
    }
    assert stack.upstream.requests == []


def test_deny_rule_beats_allow(stack: Stack) -> None:
    cookie = stack.seed_session("private.localhost", user_id="u-1", email="admin@example.com")
    headers = {"cookie": f"_pomerium={cookie}", "accept": "application/json"}
    with stack.client("private.localhost") as client:
        assert client.get("/admin/x", headers=headers).status_code == 200
        denied = client.delete("/admin/x", headers=headers)
    assert denied.status_code == 403 and denied.json()["reasons"] == ["http-method-ok"]
    assert [r.method for r in stack.upstream.requests] == ["GET"]


def test_route_without_policy_denies_everyone(stack: Stack) -> None:
    cookie = stack.seed_session("nobody.localhost", user_id="u-1", email="admin@example.com")
    response = stack.get("nobody.localhost", "/", headers={"cookie": f"_pomerium={cookie}"})
    assert response.status_code == 403
    assert stack.get("nobody.localhost", "/").status_code == 403  # no login redirect either
    assert stack.upstream.requests == []


@pytest.mark.parametrize(
    "cookie",
    [
        "garbage",
        "",
        "A" * 5000,
        "AQ" + "A" * 60,
        "%00%ff",
    ],
)
def test_bad_cookies_are_no_session(stack: Stack, cookie: str) -> None:
    response = stack.get("private.localhost", "/", headers={"cookie": f"_pomerium={cookie}", "accept": "text/html"})
    assert response.status_code == 302
    assert stack.upstream.requests == []


def test_tampered_foreign_host_expired_and_deleted_sessions(stack: Stack) -> None:
    good = stack.seed_session("private.localhost", user_id="u-5", email="eve@example.com")
    tampered = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
    other_host = stack.seed_session("public.localhost", user_id="u-5", email="eve@example.com")
    expired = stack.seed_session("private.localhost", user_id="u-5", email="eve@example.com", lifetime=-10)
    deleted = stack.seed_session("private.localhost", user_id="u-5", email="eve@example.com")
    stack.delete_session(deleted, "private.localhost")
    for cookie in (tampered, other_host, expired, deleted):
        response = stack.get("private.localhost", "/", headers={"cookie": f"_pomerium={cookie}"})
        assert response.status_code == 302
    assert stack.upstream.requests == []


def test_unknown_host_is_404_without_calling_upstream(stack: Stack) -> None:
    assert stack.get("unknown.localhost", "/").status_code == 404
    assert stack.upstream.requests == []


def test_healthz_is_not_served_on_public_hosts(stack: Stack) -> None:
    assert stack.get("authenticate.localhost", "/healthz").status_code == 404
    assert stack.get("public.localhost", "/healthz").status_code == 200  # the upstream's own /healthz
    assert stack.upstream.last().path == "/healthz"


def test_encoded_path_variants(stack: Stack) -> None:
    # Envoy unescapes %2F/%5C and redirects, and decodes unreserved characters and dot-segments
    # before ext_authz runs, so the policy and the upstream see the same path.
    for raw in ("/a%2Fb", "/a%5Cb"):
        redirect = stack.get("public.localhost", raw)
        assert redirect.status_code == 307 and redirect.headers["location"].endswith("/a/b")
    assert stack.upstream.requests == []
    for raw, seen in (("/x/../admin", "/admin"), ("/%61dmin", "/admin"), ("/%7Euser", "/~user")):
        assert stack.get("public.localhost", raw).status_code == 200
        assert stack.upstream.last().path == seen
    stack.upstream.clear()
    for raw in ("/a%00b", "/a%zz", "/%ff", "/%C3%28"):
        assert stack.get("public.localhost", raw).status_code == 400
    assert stack.upstream.requests == []


def test_authz_down_means_503_and_upstream_not_hit(fresh_stack: Stack) -> None:
    assert fresh_stack.get("public.localhost", "/").status_code == 200
    fresh_stack.upstream.clear()
    assert fresh_stack.authz.stop() == 0  # clean exit on SIGTERM
    response = fresh_stack.get("public.localhost", "/")
    assert response.status_code == 503
    assert fresh_stack.upstream.requests == []


def test_sidecar_pages_find_the_session_as_check_does(stack: Stack) -> None:
    token = stack.seed_session("private.localhost", user_id="u-7", email="dora@example.com")
    as_header = stack.get("private.localhost", "/.pomerium/user", headers={"authorization": f"Pomerium {token}"})
    assert as_header.status_code == 200 and as_header.json()["email"] == "dora@example.com"
    stale_first = stack.get(
        "private.localhost", "/.pomerium/user", headers={"cookie": f"_pomerium=stale; _pomerium={token}"}
    )
    assert stale_first.status_code == 200
    assert (
        stack.get("private.localhost", "/", headers={"cookie": f"_pomerium=stale; _pomerium={token}"}).status_code
        == 200
    )
