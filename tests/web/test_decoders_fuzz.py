"""Hostile input for the decoders and validators the sign-in trusts: whatever arrives, each either
accepts something it should or refuses with its own error class, never anything else.

`make test` runs a few hundred examples each; `make fuzz` raises AUTHZ_FUZZ_EXAMPLES.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from authz.check.request import origin
from authz.config import Config
from authz.errors import BadRequest, InvalidSession
from authz.runtime.state import Runtime
from authz.sessions.codec import HandleCodec
from authz.sessions.payloads import CsrfCookie, Handoff, LoginState, SignOutLink
from authz.sessions.sealing import Sealer
from authz.sessions.stores import MemoryStore
from authz.signing import signed_url
from authz.web import binding, cookies, login

EXAMPLES = int(os.environ.get("AUTHZ_FUZZ_EXAMPLES", "200"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=3), inner, max_size=8),
    max_leaves=20,
)
tokens = st.text(max_size=200) | st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
                                         max_size=300)  # fmt: skip
urls = st.one_of(
    st.text(max_size=120),
    st.builds(
        lambda scheme, host, port, rest: f"{scheme}://{host}{port}{rest}",
        st.sampled_from(["http", "https", "HTTP", "javascript", "", "ftp"]),
        st.sampled_from(["app.localhost", "other.localhost", "authenticate.localhost", "evil.example", "localhost",
                         "127.0.0.1", "[::1]", "app.localhost@evil.example", "APP.localhost", "app.localhost."]),
        st.sampled_from(["", ":8080", ":80", ":443", ":8444", ":0", ":99999", ":x"]),
        st.text(max_size=40),
    ),
)  # fmt: skip
ROUTES = [
    {"from": "http://app.localhost", "to": "http://127.0.0.1:9", "allow_any_authenticated_user": True},
    {"from": "http://other.localhost:9000", "to": "http://127.0.0.1:9", "allow_any_authenticated_user": True},
]


@pytest.fixture(scope="module")
def rt(signing_pem: bytes, tmp_path_factory: pytest.TempPathFactory) -> Runtime:
    from authz.config import parse_config
    from tests.conftest import base_config

    config: Config = parse_config(base_config(signing_pem, routes=ROUTES), base_dir=tmp_path_factory.mktemp("d"))
    return Runtime.build(config, MemoryStore())


@FUZZ
@given(data=json_values)
def test_payload_wire_forms_refuse_with_value_error(data: Any) -> None:
    kinds: list[Callable[[object], object]] = [
        LoginState.from_wire, CsrfCookie.from_wire, Handoff.from_wire, SignOutLink.from_wire
    ]  # fmt: skip
    for from_wire in kinds:
        with contextlib.suppress(ValueError):
            from_wire(data)


@FUZZ
@given(token=tokens)
def test_sealed_tokens_refuse_with_their_own_errors(rt: Runtime, token: str) -> None:
    for open_sealed in (rt.state.open, rt.csrf.open, rt.handoff.open, rt.signout.open):
        with pytest.raises(ValueError):
            open_sealed(token)
    for codec in (rt.codec, rt.auth_codec):
        with pytest.raises(InvalidSession):
            codec.open(token, "app.localhost", 1_800_000_000)


def test_a_handle_sealed_for_one_purpose_never_opens_for_another() -> None:
    secret = secrets.token_bytes(32)
    from authz.sessions.session import SessionHandle

    handle = SessionHandle("s", "u", "app.localhost", 1, 2_000_000_000)
    sealed = HandleCodec(secret, b"authenticate-cookie").seal(handle)
    with pytest.raises(InvalidSession):
        HandleCodec(secret).open(sealed, "app.localhost", 1_800_000_000)
    other = Sealer(secret, b"session-handoff").seal(json.loads(json.dumps(handle.to_wire())))
    with pytest.raises(InvalidSession):
        HandleCodec(secret).open(other, "app.localhost", 1_800_000_000)


@FUZZ
@given(target=urls)
def test_the_redirect_validator_accepts_only_configured_origins(rt: Runtime, target: str) -> None:
    try:
        route, target_origin = login.check_target(rt, target)
    except BadRequest:
        return
    url = urlsplit(target)
    assert route.host == url.hostname and url.scheme == route.scheme
    assert target_origin == origin(route.scheme, url.hostname, route.port)
    assert "@" not in url.netloc and not any(c in target for c in "\\\r\n\t ")


@FUZZ
@given(target=urls)
def test_programmatic_targets_are_never_route_hosts(rt: Runtime, target: str) -> None:
    try:
        login._programmatic_target(rt, target)
    except BadRequest:
        return
    host = (urlsplit(target).hostname or "").rstrip(".")
    assert rt.route_for_host(host) is None and host != rt.config.authenticate_host
    assert host == "localhost" or host.startswith("127.") or host == "::1"


@FUZZ
@given(query=st.text(max_size=300))
def test_signed_links_refuse_with_bad_request(rt: Runtime, query: str) -> None:
    try:
        signed_url.verify(rt.url_key, rt.sign_in_endpoint, query, 1_800_000_000)
    except BadRequest:
        return
    raise AssertionError("an unsigned query verified")


@FUZZ
@given(header=st.text(max_size=300), wanted=st.text(max_size=30))
@example(header="0=.0", wanted="\x80")  # a non-ASCII digest once raised TypeError in compare_digest
@example(header="x=1,_pomerium=a", wanted="")  # one cookie named `x` (split on `;` only)
def test_cookie_parsing_and_binding_lookup_never_raise(rt: Runtime, header: str, wanted: str) -> None:
    parsed = cookies.parse(header)
    assert all(";" not in name for name in parsed)
    assert binding.find(cookies.pairs(header), wanted, 1_800_000_000) is None or wanted
