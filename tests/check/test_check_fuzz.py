"""Hostile CheckRequests: whatever arrives, Check answers, and never allows without a session."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from authz._proto.envoy.service.auth.v3 import external_auth_pb2 as pb
from authz.config import Config
from authz.envoy.adapter import to_response
from authz.envoy.service import Authorization
from authz.runtime.holder import RuntimeHolder
from authz.runtime.state import Runtime
from authz.sessions.stores import MemoryStore

PRIVATE = {"id": "private", "from": "http://app.localhost", "to": "http://127.0.0.1:9",
           "allowed_domains": ["example.com"], "pass_identity_headers": True}  # fmt: skip
text = st.text(max_size=80)
header_names = st.sampled_from(
    ["cookie", "authorization", "x-pomerium-authorization", "accept", "content-type", "x-requested-with",
     "x-pomerium-jwt-assertion", "x-forwarded-for", "host", "x-request-id"]
) | st.text(min_size=1, max_size=20)  # fmt: skip
cookie_values = st.one_of(
    text,
    st.builds(lambda v: f"_pomerium={v}", text),
    st.builds(lambda v: f"_pomerium=AQ{v}", st.text(alphabet="ABCDEFabcdef0123456789-_", max_size=120)),
)


@pytest.fixture(scope="module")
def service(signing_pem: bytes, tmp_path_factory: pytest.TempPathFactory) -> Authorization:
    from authz.config import parse_config
    from tests.conftest import base_config

    config: Config = parse_config(base_config(signing_pem, routes=[PRIVATE]), base_dir=tmp_path_factory.mktemp("f"))
    return Authorization(RuntimeHolder(Runtime.build(config, MemoryStore())))


# `make fuzz` raises the count (AUTHZ_FUZZ_EXAMPLES); `make test` keeps it quick.
@settings(
    max_examples=int(os.environ.get("AUTHZ_FUZZ_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    method=st.sampled_from(["GET", "POST", "OPTIONS", "", "G\x00T"]) | text,
    host=st.sampled_from(["app.localhost", "app.localhost:8080", "", "[::1]:99999"]) | text,
    path=st.sampled_from(["/", "/%ff", "/a%2Fb", "", "/..", "/?x=%zz"]) | text,
    headers=st.dictionaries(header_names, text | cookie_values, max_size=6),
    route_id=st.sampled_from(["private", "", "nope"]) | text,
    certificate=text,
)
def test_check_never_raises_and_never_allows_without_a_session(
    service: Authorization, method: str, host: str, path: str, headers: dict[str, str], route_id: str,
    certificate: str,
) -> None:  # fmt: skip
    check = pb.CheckRequest()
    http = check.attributes.request.http
    http.method, http.host, http.path = method, host, path
    http.headers.update(headers)
    check.attributes.context_extensions["route_id"] = route_id
    check.attributes.source.certificate = certificate
    decision = service.answer(check, 1_800_000_000.0)
    assert not decision.allowed
    assert decision.status in (302, 400, 401, 403, 404)
    to_response(decision).SerializeToString()
