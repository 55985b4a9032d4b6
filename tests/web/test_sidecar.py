"""The sidecar app's route table, errors and limits, in process."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable

import httpx2
import pytest

from authz.config import Config
from authz.errors import BadRequest
from authz.web import login
from authz.web.sidecar import MAX_BODY
from authz.web.wellknown import Published

from .conftest import APP, AUTH, Web

pytestmark = pytest.mark.anyio

EVERY_HOST = ["/.well-known/pomerium/jwks.json", "/.well-known/pomerium", "/.well-known/pomerium/"]
HEALTH = ["/healthz", "/readyz"]  # only for a host that is neither the authenticate host nor a route's
PROBE = "http://10.0.0.7:9192"  # how a probe names the pod
AUTHENTICATE_ONLY = ["/.pomerium/sign_in", "/oauth2/callback", "/.pomerium/signed_out"]
ROUTE_ONLY = ["/.pomerium/callback/", "/.pomerium/callback", "/.pomerium", "/.pomerium/", "/.pomerium/user",
              "/.pomerium/api/v1/login"]  # fmt: skip


async def test_healthz_follows_readiness(web: Web) -> None:
    async with web.client() as client:
        ok = await client.get(f"{PROBE}/healthz")
        web.ready[0] = False
        starting = await client.get("http://anything.example/healthz")
    assert (ok.status_code, ok.text, ok.headers["content-type"]) == (200, "ok\n", "text/plain; charset=utf-8")
    assert (starting.status_code, starting.text) == (503, "starting\n")


async def test_readyz_asks_the_stores(
    web: Web, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """/readyz is /healthz plus a read from each store: 503 naming the store that does not answer,
    never a 500; /healthz stays 200 (a store outage is not a reason to restart the process)."""

    def down() -> None:
        raise OSError("disk I/O error")

    async with web.client() as client:
        ready = await client.get(f"{PROBE}/readyz")
        monkeypatch.setattr(web.rt.store, "ping", down)
        with caplog.at_level(logging.WARNING):
            store_down = await client.get(f"{PROBE}/readyz")
        alive = await client.get(f"{PROBE}/healthz")
        web.ready[0] = False
        starting = await client.get(f"{PROBE}/readyz")
    assert (ready.status_code, ready.text) == (200, "ready\n")
    assert (store_down.status_code, store_down.text) == (503, "session store unreachable\n")
    assert "disk I/O error" in caplog.text
    assert alive.status_code == 200
    assert (starting.status_code, starting.text) == (503, "starting\n")


async def test_paths_are_served_only_on_their_hosts(web: Web) -> None:
    async with web.client() as client:
        for path in AUTHENTICATE_ONLY:
            assert (await client.get(f"{APP}{path}")).status_code == 404, path
            assert (await client.get(f"http://unknown.localhost{path}")).status_code == 404, path
        for path in ROUTE_ONLY:
            assert (await client.get(f"{AUTH}{path}")).status_code == 404, path
            assert (await client.get(f"http://unknown.localhost{path}")).status_code == 404, path
        for path in EVERY_HOST:
            for host in (AUTH, APP, "http://unknown.localhost"):
                assert (await client.get(f"{host}{path}")).status_code == 200, (host, path)
        for path in HEALTH:
            assert (await client.get(f"{PROBE}{path}")).status_code == 200, path
            for host in (AUTH, APP):  # an Envoy that routes these hosts here wholesale never exposes them
                assert (await client.get(f"{host}{path}")).status_code == 404, (host, path)
        missing = await client.get(f"{APP}/.pomerium/user/")  # no trailing-slash redirect
    assert (missing.status_code, missing.text, missing.headers["content-type"]) == (
        404,
        "not found\n",
        "text/plain; charset=utf-8",
    )
    assert "location" not in missing.headers


@pytest.mark.parametrize(
    ("url", "allow"),
    [
        (f"{AUTH}/.pomerium/sign_in", "GET, HEAD"),
        (f"{AUTH}/oauth2/callback", "GET, HEAD"),
        (f"{APP}/.pomerium/callback/", "GET, HEAD"),
        (f"{APP}/.pomerium/api/v1/login", "GET, HEAD"),
        (f"{APP}/.pomerium/sign_out", "GET, HEAD, POST"),
        (f"{AUTH}/.pomerium/sign_out", "GET, HEAD, POST"),
        (f"{APP}/.well-known/pomerium/jwks.json", "GET, HEAD, OPTIONS"),
        (f"{APP}/.well-known/pomerium", "GET, HEAD, OPTIONS"),
    ],
)
async def test_wrong_method_is_405_with_allow(web: Web, url: str, allow: str) -> None:
    async with web.client() as client:
        response = await client.request("DELETE", url)
    assert (response.status_code, response.text, response.headers["allow"]) == (405, "method not allowed\n", allow)


async def test_head_is_answered_like_get_without_a_body(web: Web) -> None:
    async with web.client() as client:
        get = await client.get(f"{APP}/.well-known/pomerium/jwks.json")
        head = await client.head(f"{APP}/.well-known/pomerium/jwks.json")
        refused = await client.head("/.pomerium/sign_in")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(get.content)) and head.headers["etag"] == get.headers["etag"]
    assert refused.status_code == 400  # the unsigned link, as for GET


async def test_jwks_etag_304_and_preflight(web: Web) -> None:
    async with web.client() as client:
        first = await client.get(f"{APP}/.well-known/pomerium/jwks.json")
        etag = first.headers["etag"]
        again = await client.get(f"{APP}/.well-known/pomerium/jwks.json", headers={"if-none-match": f'W/"x", {etag}'})
        preflight = await client.options(f"{APP}/.well-known/pomerium/jwks.json")
    keys = first.json()["keys"]
    assert [k["kid"] for k in keys] == [k.kid for k in web.config.signing_keys]
    assert first.headers["cache-control"] == "max-age=60" and first.headers["access-control-allow-origin"] == "*"
    assert first.headers["content-type"] == "application/json"
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
    assert preflight.status_code == 204 and preflight.headers["access-control-allow-methods"] == "GET, HEAD, OPTIONS"


async def test_jwks_is_built_once_per_config(
    web: Web, make_web: Callable[..., Web], monkeypatch: pytest.MonkeyPatch
) -> None:
    builds: list[Config] = []
    build = Published.build

    def counted(config: Config) -> Published:
        builds.append(config)
        return build(config)

    monkeypatch.setattr(Published, "build", counted)
    other = make_web()  # a new config, as a reload brings
    async with web.client() as client:
        first = await client.get(f"{APP}/.well-known/pomerium/jwks.json")
        second = await client.get(f"{AUTH}/.well-known/pomerium/jwks.json")
        web.holder.swap(other.rt)
        after = await client.get(f"{APP}/.well-known/pomerium/jwks.json")
    assert builds == [web.config, other.config]
    assert first.content == second.content and first.headers["etag"] == second.headers["etag"]
    assert after.json()["keys"] == [dict(k.jwk) for k in other.config.signing_keys]


async def test_discovery_names_the_host_it_was_asked_on(web: Web) -> None:
    async with web.client() as client:
        on_route = (await client.get(f"{APP}/.well-known/pomerium")).json()
        on_auth = (await client.get(f"{AUTH}/.well-known/pomerium/")).json()
        elsewhere = (await client.get("http://unknown.localhost/.well-known/pomerium")).json()
    assert on_route == {
        "issuer": f"{APP}/",
        "authentication_callback_endpoint": f"{AUTH}/oauth2/callback",
        "jwks_uri": f"{APP}/.well-known/pomerium/jwks.json",
    }
    assert on_auth["issuer"] == f"{AUTH}/" and elsewhere["issuer"] == f"{AUTH}/"


async def test_discovery_never_echoes_the_hosts_port(web: Web) -> None:
    async with web.client() as client:
        foreign = await client.get("http://app.localhost:8444/.well-known/pomerium")
        default = await client.get("http://app.localhost/.well-known/pomerium/")
    assert foreign.json() == default.json()
    assert foreign.json()["issuer"] == f"{APP}/" and foreign.json()["jwks_uri"].startswith(f"{APP}/")
    assert "8444" not in foreign.text and "frontchannel_logout_uri" not in foreign.text
    assert foreign.headers["cache-control"] == "max-age=60" and foreign.headers["access-control-allow-origin"] == "*"


async def test_a_declared_big_body_is_413_without_being_read(web: Web) -> None:
    async with web.client() as client:
        response = await client.post("/.pomerium/sign_out", content=b"x" * (MAX_BODY + 1))
        fits = await client.post("/.pomerium/sign_out", content=b"x" * MAX_BODY)
    assert (response.status_code, response.text) == (413, "request body too large\n")
    assert response.headers["connection"] == "close"
    assert fits.status_code == 302


async def test_a_streamed_big_body_is_counted(web: Web) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(5):
            yield b"x" * (MAX_BODY // 4)

    async with web.client() as client:
        response = await client.post("/.pomerium/sign_out", content=chunks())
    assert "content-length" not in response.request.headers  # sent chunked
    assert (response.status_code, response.text) == (413, "request body too large\n")


@pytest.mark.parametrize(
    ("accept", "content_type"),
    [("text/html", "text/html; charset=utf-8"), ("application/json", "application/json"),
     ("text/plain", "text/plain; charset=utf-8")],
)  # fmt: skip
async def test_request_errors_answer_in_the_asked_format(web: Web, accept: str, content_type: str) -> None:
    async with web.client() as client:
        response = await client.get("/.pomerium/sign_in", headers={"accept": accept, "x-request-id": "r-1"})
    assert response.status_code == 400 and response.headers["content-type"] == content_type
    assert response.headers["cache-control"] == "no-store"
    assert "the link is not signed" in response.text or "bad-request" in response.text
    if accept == "application/json":
        assert response.json() == {"status": 400, "error": "Bad Request", "reasons": ["bad-request"],
                                   "request_id": "r-1", "detail": "the link is not signed"}  # fmt: skip


async def test_a_fault_is_a_plain_500_and_a_log_line(
    web: Web, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("secret-ish internals")

    monkeypatch.setattr(login, "check_target", broken)
    async with web.client() as client:
        with caplog.at_level(logging.ERROR, logger="authz.http"):
            response = await client.get(web.sign_in_link(), headers={"accept": "text/html"})
    assert (response.status_code, response.text) == (500, "internal error\n")
    assert "secret-ish" not in response.text and "Traceback" not in response.text
    assert [r.getMessage() for r in caplog.records] == ["sidecar handler failed for GET /.pomerium/sign_in"]


async def test_the_runtime_is_read_once_per_request(web: Web, make_web: Callable[..., Web]) -> None:
    """A reload while a request waits on the IdP: the request finishes on the Runtime it started with."""
    other = make_web(cookie_name="_reloaded")
    web.idp.hook = lambda: web.holder.swap(other.rt)  # runs while sign-in fetches the IdP's discovery
    async with web.client() as client:
        response = await client.get(web.sign_in_link())
    assert response.status_code == 302 and response.headers["location"].startswith("https://idp.example.com/auth?")
    (cookie,) = response.headers.get_list("set-cookie")
    assert cookie.startswith("_pomerium_csrf_")
    assert web.holder.current is other.rt


FOREIGN = "evil.example"
SPOOF = {
    "x-forwarded-host": FOREIGN,
    "x-forwarded-proto": "gopher",
    "x-forwarded-for": "203.0.113.9",
    "forwarded": f"for=203.0.113.9;host={FOREIGN};proto=gopher",
    "x-original-host": FOREIGN,
    "x-pomerium-authenticate-url": f"https://{FOREIGN}/",
}


def _everything(response: httpx2.Response) -> str:
    head = f"HTTP/1.1 {response.status_code} {response.reason_phrase}\n"
    head += "".join(f"{k}: {v}\n" for k, v in response.headers.multi_items())
    return head + response.content.decode("utf-8", "replace")


async def test_no_answer_echoes_a_foreign_host_or_forwarded_header(web: Web) -> None:
    cookie = web.seed("app.localhost")
    own = web.seed("authenticate.localhost")
    urls = [f"http://{FOREIGN}{p}" for p in EVERY_HOST + AUTHENTICATE_ONLY + ROUTE_ONLY + ["/.pomerium/sign_out"]]
    urls += [f"{AUTH}{p}" for p in EVERY_HOST + AUTHENTICATE_ONLY + ["/.pomerium/sign_out"]]
    urls += [f"{APP}{p}" for p in EVERY_HOST + ROUTE_ONLY + ["/.pomerium/sign_out"]]
    urls += [web.sign_in_link(), f"{APP}/.pomerium/api/v1/login?pomerium_redirect_uri=http://localhost:9/cb"]
    headers = {**SPOOF, "cookie": f"_pomerium={cookie}; _pomerium_authenticate={own}"}
    answers = []
    async with web.client() as client:
        for url in urls:
            for method in ("GET", "POST", "OPTIONS"):
                response = await client.request(method, url, headers=headers)
                answers.append((method, url, _everything(response)))
    assert len(answers) == 3 * len(urls)
    for method, url, text in answers:
        assert FOREIGN not in text and "gopher" not in text and "203.0.113.9" not in text, (method, url, text[:500])


async def test_a_bad_request_error_escapes_its_detail(web: Web, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object) -> None:
        raise BadRequest("<script>alert('x')</script> \"quoted\"")

    monkeypatch.setattr(login, "check_target", refuse)
    async with web.client() as client:
        response = await client.get(web.sign_in_link(), headers={"accept": "text/html", "x-request-id": "<b>id</b>"})
    assert response.status_code == 400
    assert "<script>" not in response.text and "<b>id</b>" not in response.text
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &#34;quoted&#34;" in response.text
    assert "&lt;b&gt;id&lt;/b&gt;" in response.text
