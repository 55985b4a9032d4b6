"""The whole Check in process (gather, decide, answer) and the protobuf adapter: no sockets."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jwt
import pytest

from authz._proto.envoy.config.core.v3 import base_pb2
from authz._proto.envoy.service.auth.v3 import external_auth_pb2 as pb
from authz._proto.envoy.type.v3 import http_status_pb2
from authz._proto.google.rpc import status_pb2
from authz.check.answer import Answer, render_template
from authz.check.gather import Pending
from authz.check.request import RequestContext
from authz.check.run import check_blocking
from authz.config import Config
from authz.envoy.adapter import to_response
from authz.envoy.service import Authorization
from authz.runtime.holder import RuntimeHolder
from authz.runtime.state import Runtime
from authz.sessions.session import Session, SessionHandle
from authz.sessions.stores import MemoryStore, SQLiteStore
from authz.signing import signed_url

NOW = 1_800_000_000.0
PRIVATE = {
    "id": "private",
    "from": "http://app.localhost",
    "to": "http://127.0.0.1:9",
    "allowed_domains": ["example.com"],
    "pass_identity_headers": True,
}
PUBLIC = {
    "id": "public",
    "from": "http://public.localhost",
    "to": "http://127.0.0.1:9",
    "allow_public_unauthenticated_access": True,
    "pass_identity_headers": True,
}


@pytest.fixture
def runtime(make_config: Callable[..., Config]) -> Runtime:
    config = make_config(routes=[PRIVATE, PUBLIC], jwt_claims_headers=["email", "team"])
    return Runtime.build(config, MemoryStore())


def request(route_id: str, host: str = "app.localhost:8080", target: str = "/x", **headers: str) -> RequestContext:
    return RequestContext.build(
        method="GET",
        host=host,
        target=target,
        scheme="http",
        headers=headers,
        request_id="req-1",
        route_id=route_id,
    )


def login(rt: Runtime, email: str = "a@example.com", host: str = "app.localhost", **extra: Any) -> str:
    session = Session("sid-1", "user-1", email, "Ann\r\nX-Evil: 1", ("g1", "g2"), extra, int(NOW), int(NOW) + 3600)
    rt.store.put(session)
    return rt.codec.seal(SessionHandle("sid-1", "user-1", host, int(NOW), int(NOW) + 3600))


def headers_of(decision: Answer) -> dict[str, str]:
    return dict(decision.headers)


def test_unknown_route_is_404(runtime: Runtime) -> None:
    d = check_blocking(runtime, request("nope", accept="application/json"), NOW)
    assert (d.allowed, d.status, d.reasons) == (False, 404, ("route-not-found",))
    assert '"error": "Not Found"' in d.body


def test_browser_redirect_is_signed_for_the_original_url(runtime: Runtime) -> None:
    d = check_blocking(runtime, request("private", target="/x?y=1", accept="text/html"), NOW)
    assert d.status == 302
    location = urlsplit(headers_of(d)["location"])
    endpoint = f"{location.scheme}://{location.netloc}{location.path}"
    assert endpoint == "http://authenticate.localhost:8080/.pomerium/sign_in"
    signed = signed_url.verify(runtime.url_key, endpoint, location.query, NOW + 10)
    assert signed.target == "http://app.localhost:8080/x?y=1"


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"accept": "application/json"}, 401),
        ({"accept": "text/html;q=0.5, application/json"}, 401),
        ({"accept": "text/html, application/json;q=0.9"}, 302),
        ({"accept": "*/*"}, 302),
        ({}, 302),
        ({"accept": "image/png"}, 401),
        ({"accept": "text/html", "x-requested-with": "XMLHttpRequest"}, 401),
        ({"content-type": "application/grpc"}, 401),
        ({"authorization": "Pomerium not-a-token"}, 401),
    ],
)
def test_login_answer_depends_on_client(runtime: Runtime, headers: dict[str, str], status: int) -> None:
    assert check_blocking(runtime, request("private", **headers), NOW).status == status


def test_grpc_clients_get_grpc_status(runtime: Runtime) -> None:
    d = check_blocking(runtime, request("private", **{"content-type": "application/grpc"}), NOW)
    assert headers_of(d)["grpc-status"] == "16"


def test_allowed_session_gets_signed_assertion(runtime: Runtime) -> None:
    cookie = login(runtime, team=["red", "blue"])
    d = check_blocking(runtime, request("private", cookie=f"a=1; _pomerium={cookie}"), NOW)
    assert d.allowed and d.reasons == ("domain-ok",)
    headers = headers_of(d)
    key = runtime.config.signing_keys[0]
    claims = jwt.decode(
        headers["x-pomerium-jwt-assertion"],
        key.private.public_key(),
        algorithms=["ES256"],
        audience="app.localhost",
        options={"verify_exp": False, "verify_iat": False},
    )
    assert claims["email"] == "a@example.com" and claims["groups"] == ["g1", "g2"]
    assert claims["team"] == "red,blue" and claims["iat"] == int(NOW)
    assert headers["x-pomerium-claim-team"] == "red,blue"
    assert headers["cookie"] == "a=1"
    assert "\n" not in headers["x-pomerium-claim-email"]


def test_cookie_header_removed_when_only_session(runtime: Runtime) -> None:
    cookie = login(runtime)
    d = check_blocking(runtime, request("private", cookie=f"_pomerium={cookie}"), NOW)
    assert "cookie" in d.headers_to_remove and "cookie" not in headers_of(d)


def test_foreign_identity_headers_are_removed(runtime: Runtime) -> None:
    d = check_blocking(
        runtime,
        request(
            "public",
            host="public.localhost",
            **{"x-pomerium-foo": "1", "x-pomerium-jwt-assertion": "forged", "x-pomerium-authorization": "x"},
        ),
        NOW,
    )
    assert d.allowed
    assert set(d.headers_to_remove) == {"x-pomerium-foo", "x-pomerium-authorization"}
    assert headers_of(d)["x-pomerium-jwt-assertion"] != "forged"


def test_headers_that_rewrite_path_method_host_or_client_are_removed(make_config: Callable[..., Config]) -> None:
    from authz.config.load import STRIPPED_REQUEST_HEADERS

    kept = {**PUBLIC, "id": "kept", "from": "http://kept.localhost", "keep_request_headers": ["X-Forwarded-Host"]}
    rt = Runtime.build(make_config(routes=[PRIVATE, PUBLIC, kept]), MemoryStore())
    sent = dict.fromkeys(STRIPPED_REQUEST_HEADERS, "x")
    public = check_blocking(rt, request("public", host="public.localhost", **sent), NOW)
    assert public.allowed and set(STRIPPED_REQUEST_HEADERS) <= set(public.headers_to_remove)
    other = check_blocking(rt, request("kept", host="kept.localhost", **sent), NOW)
    assert "x-forwarded-host" not in other.headers_to_remove and "x-http-method-override" in other.headers_to_remove


def test_underscore_spellings_of_removed_headers_are_removed(make_config: Callable[..., Config]) -> None:
    """An Envoy that lets `_` through (its default) would pass `x_pomerium_claim_email`, which a
    CGI-style upstream reads as X-Pomerium-Claim-Email."""
    public_ = {**PUBLIC, "set_request_headers": {"X-Remote-User": "someone"}}
    rt = Runtime.build(make_config(routes=[PRIVATE, public_], jwt_claims_headers=["email"]), MemoryStore())
    sent = {"x_pomerium_claim_email": "admin@example.com", "x_forwarded_host": "evil", "X_Pomerium_Jwt_Assertion": "f",
            "x_remote_user": "admin", "x_forwarded_for": "10.0.0.1", "x_envoy_external_address": "10.0.0.1",
            "x_request_id": "1", "e_mail": "kept", "x_custom": "kept"}  # fmt: skip
    public = check_blocking(rt, request("public", host="public.localhost", **sent), NOW)
    assert public.allowed
    assert set(public.headers_to_remove) == set(sent) - {"e_mail", "x_custom"} - {"X_Pomerium_Jwt_Assertion"} | {
        "x_pomerium_jwt_assertion"
    }


def test_a_login_302_binds_the_attempt_to_this_browser(runtime: Runtime) -> None:
    first = check_blocking(runtime, request("private", accept="text/html"), NOW)
    (line,) = [v for k, v in first.headers if k == "set-cookie"]
    assert line.startswith("_pomerium_bind_") and "SameSite=Lax" in line and "HttpOnly" in line
    location = urlsplit(headers_of(first)["location"])
    signed = signed_url.verify(runtime.url_key, runtime.sign_in_endpoint, location.query, NOW)
    assert signed.extra["pomerium_binding"]
    api = check_blocking(runtime, request("private", accept="application/json"), NOW)
    assert not [k for k, _ in api.headers if k == "set-cookie"]


def test_denied_session_gets_403(runtime: Runtime) -> None:
    cookie = login(runtime, email="x@other.test")
    d = check_blocking(runtime, request("private", cookie=f"_pomerium={cookie}", accept="application/json"), NOW)
    assert (d.status, d.reasons, d.user) == (403, ("domain-unauthorized",), "user-1")


def test_session_bound_to_host_and_store(runtime: Runtime) -> None:
    cookie = login(runtime, host="public.localhost")
    assert check_blocking(runtime, request("private", cookie=f"_pomerium={cookie}"), NOW).status == 302
    cookie = login(runtime)
    runtime.store.delete("sid-1")
    assert check_blocking(runtime, request("private", cookie=f"_pomerium={cookie}"), NOW).status == 302
    cookie = login(runtime)
    assert check_blocking(runtime, request("private", cookie=f"_pomerium={cookie}"), NOW + 7200).status == 302


def test_templates() -> None:
    values = {"pomerium.jwt": "J", "pomerium.id_token": "I"}
    assert render_template("Bearer ${pomerium.jwt}", values) == "Bearer J"
    assert render_template("$pomerium.id_token/$$/${unknown}", values) == "I/$/"


def _check(route_id: str = "private", path: str = "/", **headers: str) -> pb.CheckRequest:
    check = pb.CheckRequest()
    http = check.attributes.request.http
    http.method, http.host, http.path, http.scheme = "GET", "app.localhost", path, "http"
    http.headers.update({"x-request-id": "rid", **headers})
    check.attributes.context_extensions["route_id"] = route_id
    return check


def test_incomplete_check_request_is_denied(runtime: Runtime) -> None:
    service = Authorization(RuntimeHolder(runtime))
    for check in (pb.CheckRequest(), _check(path=""), _check(path="no-slash")):
        d = service.answer(check, NOW)
        assert not d.allowed and d.status == 400


@pytest.mark.parametrize("path", ["/a%2Fb", "/a%5cb", "/%61dmin", "/a%zz", "/a%00b", "/%ff", "/%C3%28", "/a\x01b"])
def test_ambiguous_paths_are_400(runtime: Runtime, path: str) -> None:
    d = Authorization(RuntimeHolder(runtime)).answer(_check(path=path), NOW)
    assert (d.allowed, d.status) == (False, 400)


def test_internal_fault_fails_closed(runtime: Runtime) -> None:
    class Broken(MemoryStore):
        def get(self, session_id: str, now: float | None = None) -> Session | None:
            raise RuntimeError("disk on fire")

    broken = Runtime.build(runtime.config, Broken())
    cookie = login(runtime)
    d = Authorization(RuntimeHolder(broken)).answer(_check(cookie=f"_pomerium={cookie}"), NOW)
    assert (d.allowed, d.status, d.reasons) == (False, 503, ("internal-error",))


def test_response_headers_always_overwrite(runtime: Runtime) -> None:
    cookie = login(runtime)
    allowed = to_response(Authorization(RuntimeHolder(runtime)).answer(_check(cookie=f"_pomerium={cookie}; x=1"), NOW))
    assert allowed.status.code == 0 and allowed.ok_response.headers
    denied = to_response(Authorization(RuntimeHolder(runtime)).answer(_check(route_id="nope"), NOW))
    assert denied.status.code == 7 and denied.denied_response.status.code == 404
    for option in [*allowed.ok_response.headers, *denied.denied_response.headers]:
        assert option.append_action == base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
    assert not any(o.HasField("append") for o in allowed.ok_response.headers)


def _reference(answer: Answer) -> pb.CheckResponse:
    """The CheckResponse built message by message, the plain way, for comparison."""
    options = [
        base_pb2.HeaderValueOption(
            header=base_pb2.HeaderValue(key=k, value=v),
            append_action=base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD
            if k == "set-cookie"
            else base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
        )
        for k, v in answer.headers
    ]
    if answer.allowed:
        ok = pb.OkHttpResponse(headers=options, headers_to_remove=list(answer.headers_to_remove))
        return pb.CheckResponse(status=status_pb2.Status(code=0), ok_response=ok)
    denied = pb.DeniedHttpResponse(
        status=http_status_pb2.HttpStatus(code=answer.status),  # type: ignore[arg-type]
        headers=options,
        body=answer.body,
    )
    return pb.CheckResponse(status=status_pb2.Status(code=7, message="Access Denied"), denied_response=denied)


def test_the_response_is_encoded_as_the_plain_construction_would(runtime: Runtime) -> None:
    service = Authorization(RuntimeHolder(runtime))
    cookie = login(runtime)
    answers = [
        service.answer(_check(cookie=f"_pomerium={cookie}; other=1"), NOW),  # allowed, signed, cookie kept
        service.answer(_check(route_id="public"), NOW),
        service.answer(_check(), NOW),  # 302 with set-cookie lines
        service.answer(_check(route_id="nope", accept="application/json"), NOW),
        Answer(True, 200, (), (), (), "", "r", ""),
    ]
    for answer in answers:
        assert to_response(answer).SerializeToString() == _reference(answer).SerializeToString(), answer


def test_groups_are_the_union_of_id_token_and_userinfo() -> None:
    from authz.identity.claims import merge_groups

    assert merge_groups(["a", "b"], ["b", "c"]) == ("a", "b", "c")
    assert merge_groups("solo", None) == ("solo",)
    assert merge_groups([True, 3, {"x": 1}], []) == ("3",)


def test_routes_that_sign_are_known_at_load(make_config: Callable[..., Config]) -> None:
    templated = {
        "id": "t",
        "from": "http://t.localhost",
        "to": "http://127.0.0.1:9",
        "allow_any_authenticated_user": True,
        "set_request_headers": {"X-Token": "Bearer ${pomerium.jwt}"},
    }
    plain = {**templated, "id": "p", "from": "http://p.localhost", "set_request_headers": {"X-A": "b"}}
    rt = Runtime.build(make_config(routes=[PRIVATE, templated, plain]), MemoryStore())
    assert rt.signing_routes == {"private", "t"}


def test_a_blocking_store_is_read_off_the_event_loop(make_config: Callable[..., Config], tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "sessions.db", secret=os.urandom(32))
    rt = Runtime.build(make_config(routes=[PRIVATE]), store)
    now = int(time.time())
    store.put(Session("sid-1", "user-1", "a@example.com", issued_at=now, expires_at=now + 600))
    cookie = rt.codec.seal(SessionHandle("sid-1", "user-1", "app.localhost", now, now + 600))
    readers: list[int] = []
    read = store.get

    def spy(session_id: str, at: float | None = None) -> Session | None:
        readers.append(threading.get_ident())
        return read(session_id, at)

    store.get = spy  # type: ignore[method-assign]
    service = Authorization(RuntimeHolder(rt))
    assert isinstance(service.begin(_check(cookie=f"_pomerium={cookie}"), now), Pending)

    async def check() -> tuple[int, pb.CheckResponse]:
        return threading.get_ident(), await service.Check(_check(cookie=f"_pomerium={cookie}"), None)  # type: ignore[arg-type]

    loop_thread, response = asyncio.run(check())
    assert response.status.code == 0 and response.ok_response.headers
    assert readers and loop_thread not in readers
    store.close()


def test_show_error_details_adds_the_evaluation_and_the_request(make_config: Callable[..., Config]) -> None:
    detailed = {**PRIVATE, "id": "detailed", "show_error_details": True}
    rt = Runtime.build(make_config(routes=[detailed, PRIVATE]), MemoryStore())
    cookie = login(rt, email="eve@evil.example")
    json_answer = check_blocking(rt, request("detailed", cookie=f"_pomerium={cookie}", accept="application/json"), NOW)
    details = json.loads(json_answer.body)["details"]
    assert json_answer.status == 403 and details["route"] == "detailed"
    assert details["request"] == "GET app.localhost/x"
    assert details["allow"] == "not matched: domain-unauthorized" and details["deny"] == "not matched: -"
    assert details["user"] == "user-1 <eve@evil.example>" and details["time"].startswith("2027-01-15T")
    page = check_blocking(rt, request("detailed", cookie=f"_pomerium={cookie}", accept="text/html"), NOW)
    assert "not matched: domain-unauthorized" in page.body and "<th>route</th>" in page.body
    plain = check_blocking(rt, request("private", cookie=f"_pomerium={cookie}", accept="application/json"), NOW)
    assert plain.status == 403 and "details" not in json.loads(plain.body)


@pytest.mark.parametrize("accept", ["text/html", "application/json", "text/plain"])
def test_claims_utf8_cannot_carry_still_get_a_clear_page(make_config: Callable[..., Config], accept: str) -> None:
    # JSON lets an IdP send "\ud800" (a lone surrogate): a 403 naming it must still encode.
    detailed = {**PRIVATE, "id": "detailed", "show_error_details": True, "allowed_domains": ["other.example"]}
    rt = Runtime.build(make_config(routes=[detailed]), MemoryStore())
    session = Session("sid-1", "user-1", "a@example.com", "Ann\ud800", ("eng\ud800",), {}, int(NOW), int(NOW) + 3600)
    rt.store.put(session)
    cookie = rt.codec.seal(SessionHandle("sid-1", "user-1", "app.localhost", int(NOW), int(NOW) + 3600))
    service = Authorization(RuntimeHolder(rt))
    check = _check("detailed", cookie=f"_pomerium={cookie}", accept=accept)
    response = service.respond(check, service.answer(check, NOW))
    assert response.denied_response.status.code == 403
    assert response.SerializeToString()


def test_an_answer_that_cannot_be_encoded_is_a_plain_503(runtime: Runtime) -> None:
    broken = Answer(False, 403, ("x",), (("content-type", "text/html"),), (), "\ud800", "private", "")
    response = Authorization(RuntimeHolder(runtime)).respond(_check(accept="text/html"), broken)
    assert response.denied_response.status.code == 503 and "\ud800" not in response.denied_response.body


def test_paths_an_upstream_may_read_differently_are_400_unless_the_route_allows(
    make_config: Callable[..., Config],
) -> None:
    lenient = {**PUBLIC, "id": "lenient", "from": "http://lenient.localhost", "allow_path_parameters": True,
               "allow_double_encoding": True}  # fmt: skip
    rt = Runtime.build(make_config(routes=[PRIVATE, PUBLIC, lenient]), MemoryStore())
    for target in ("/x;jsessionid=1/admin", "/a%252e%252e/admin", "/x%3Badmin"):
        refused = check_blocking(
            rt, request("public", host="public.localhost", target=target, accept="application/json"), NOW
        )
        assert (refused.allowed, refused.status, refused.reasons) == (False, 400, ("bad-request",)), target
        assert "detail" in refused.body
        allowed = check_blocking(rt, request("lenient", host="lenient.localhost", target=target), NOW)
        assert allowed.allowed, target


def test_a_routes_own_removed_headers_are_removed_by_authz_too(make_config: Callable[..., Config]) -> None:
    """An Envoy without the route's request_headers_to_remove (a pasted snippet) still never passes them on."""
    route = {**PUBLIC, "remove_request_headers": ["X-Internal-Admin"]}
    rt = Runtime.build(make_config(routes=[route]), MemoryStore())
    answer = check_blocking(rt, request("public", host="public.localhost", **{"x-internal-admin": "1"}), NOW)
    assert answer.allowed and "x-internal-admin" in answer.headers_to_remove
