"""In-process micro-benchmarks of the Check's parts (pytest-benchmark; never part of `make test`).

    make bench-micro          # .venv/bin/pytest bench/micro --benchmark-only

Each function times one part on a warmed-up Runtime with a SQLite store behind the session cache,
as `authz serve` runs it: the adapter in and out, opening the cookie, the session lookup (cold and
cached), the policy, signing, and a whole Check per scenario.
"""

from __future__ import annotations

import base64
import secrets
import time
from datetime import datetime
from typing import Any

import pytest

from authz._proto.envoy.service.auth.v3 import external_auth_pb2 as pb
from authz.check.answer import Answer
from authz.check.run import check_blocking
from authz.config import parse_config
from authz.envoy import adapter
from authz.envoy.service import Authorization
from authz.policy.ast import PolicyInput
from authz.runtime.holder import RuntimeHolder
from authz.runtime.state import Runtime
from authz.sessions.session import Session, SessionHandle
from authz.sessions.stores import SQLiteStore
from authz.signing import assertion
from authz.signing.keys import generate_p256_pem

POLICY = {"allow": {"and": [{"domain": {"is": "example.com"}}, {"groups": {"has": "eng"}},
                            {"http_method": {"in": ["GET", "POST"]}}]}}  # fmt: skip
NOW = time.time()


@pytest.fixture(scope="module")
def rt(tmp_path_factory: pytest.TempPathFactory) -> Runtime:
    tmp = tmp_path_factory.mktemp("micro")
    secret = secrets.token_bytes(32)

    def route(rid: str, **extra: Any) -> dict[str, Any]:
        return {"id": rid, "from": f"http://{rid}.localhost", "to": "http://127.0.0.1:9", **extra}

    config = parse_config({
        "insecure_server": True, "authenticate_service_url": "http://authenticate.localhost:8080",
        "shared_secret": base64.b64encode(secrets.token_bytes(32)).decode(),
        "cookie_secret": base64.b64encode(secret).decode(), "cookie_secure": False,
        "signing_key": base64.b64encode(generate_p256_pem()).decode(), "jwt_claims_headers": ["email", "groups"],
        "routes": [route("session", policy=POLICY, pass_identity_headers=True), route("nosign", policy=POLICY),
                   route("public", allow_public_unauthenticated_access=True, pass_identity_headers=True),
                   route("deny", policy={"allow": {"and": [{"domain": {"is": "example.org"}}]}})],
    })  # fmt: skip
    runtime = Runtime.build(config, SQLiteStore(tmp / "sessions.db", secret=secret))
    now = int(NOW)
    runtime.store.put(Session("sid-1", "u-1", "ann@example.com", "Ann", ("eng", "ops"), {}, now, now + 86400))
    return runtime


def cookie(rt: Runtime, host: str) -> str:
    now = int(NOW)
    return f"{rt.cookies.session}={rt.codec.seal(SessionHandle('sid-1', 'u-1', host, now, now + 86400))}"


def check_request(rt: Runtime, route_id: str, signed_in: bool = True) -> pb.CheckRequest:
    message = pb.CheckRequest()
    http = message.attributes.request.http
    host = f"{route_id}.localhost"
    http.method, http.host, http.path, http.scheme, http.id = "GET", host, "/dashboard?tab=1", "http", "42"
    headers = {":authority": host, ":path": "/dashboard?tab=1", ":method": "GET", ":scheme": "http",
               "accept": "text/html", "user-agent": "wrk", "x-request-id": "42",
               "x-forwarded-proto": "http"}  # fmt: skip
    if signed_in:
        headers["cookie"] = cookie(rt, host)
    http.headers.update(headers)
    message.attributes.context_extensions["route_id"] = route_id
    message.attributes.source.address.socket_address.address = "127.0.0.1"
    return message


def test_adapter_in(benchmark: Any, rt: Runtime) -> None:
    message = check_request(rt, "session")
    benchmark(adapter.to_request, message)


def test_adapter_out(benchmark: Any, rt: Runtime) -> None:
    answer = check_blocking(rt, adapter.to_request(check_request(rt, "session")), NOW)
    assert isinstance(answer, Answer) and answer.allowed
    benchmark(adapter.to_response, answer)


def test_cookie_open(benchmark: Any, rt: Runtime) -> None:
    token = cookie(rt, "session.localhost").split("=", 1)[1]
    benchmark(rt.codec.open, token, "session.localhost", NOW)


def test_session_lookup_cached(benchmark: Any, rt: Runtime) -> None:
    rt.store.get("sid-1", NOW)
    assert rt.cache is not None
    benchmark(rt.cache.peek, "sid-1", NOW)


def test_session_lookup_cold(benchmark: Any, rt: Runtime) -> None:
    assert rt.cache is not None
    benchmark(rt.cache.fresh, "sid-1", NOW)  # past the cache: the SQLite read and the record's decoding


def test_policy(benchmark: Any, rt: Runtime) -> None:
    req = adapter.to_request(check_request(rt, "session"))
    session = rt.store.get("sid-1", NOW)
    policy = rt.config.routes_by_id["session"].policy
    inp = PolicyInput(req, session, datetime.fromtimestamp(NOW))
    assert policy.evaluate(inp).allowed
    benchmark(policy.evaluate, inp)


def test_signing(benchmark: Any, rt: Runtime) -> None:
    session = rt.store.get("sid-1", NOW)
    key = rt.config.signing_keys[0]

    def sign() -> str:
        claims = assertion.build_claims(hostname="session.localhost", session=session, now=int(NOW),
                                        issuer_format=rt.config.jwt_issuer_format, extra=rt.extra_claims)  # fmt: skip
        return assertion.sign(key, claims)

    benchmark(sign)


@pytest.mark.parametrize(
    ("scenario", "route_id", "signed_in", "status"),
    [("session", "session", True, 200), ("session-nosign", "nosign", True, 200), ("public", "public", False, 200),
     ("deny", "deny", True, 403), ("login", "session", False, 302)],
)  # fmt: skip
def test_whole_check(benchmark: Any, rt: Runtime, scenario: str, route_id: str, signed_in: bool, status: int) -> None:
    service = Authorization(RuntimeHolder(rt))
    message = check_request(rt, route_id, signed_in)
    first = service.answer(message, NOW)
    assert first.status == status, (scenario, first.status)
    benchmark(lambda: adapter.to_response(service.answer(message, time.time())))
