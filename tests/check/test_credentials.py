"""Finding authz's credentials and cookies in every casing and split (hardening class 1 and 5)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from authz.check.credentials import find_credentials
from authz.config import Config
from authz.web.cookies import CookieNames


def names(make_config: Any, **overrides: Any) -> CookieNames:
    config: Config = make_config(**overrides)
    return CookieNames.build(config)


def test_names_follow_cookie_secure_and_cookie_domain(make_config: Any) -> None:
    plain = names(make_config)  # cookie_secure: false in the test config
    assert (plain.session, plain.authenticate) == ("_pomerium", "_pomerium_authenticate")
    secure = names(make_config, cookie_secure=True)
    assert secure.session == "__Host-_pomerium" and secure.authenticate == "__Host-_pomerium_authenticate"
    assert secure.csrf_prefix == "__Host-_pomerium_csrf_" and secure.binding_prefix == "__Host-_pomerium_bind_"
    shared = names(make_config, cookie_secure=True, cookie_domain="example.com")
    # A Domain cookie cannot be __Host-; the authenticate cookie stays host-only and prefixed.
    assert shared.session == "_pomerium" and shared.authenticate == "__Host-_pomerium_authenticate"


def test_cookie_and_authorization_forms(make_config: Any) -> None:
    n = names(make_config)
    creds = find_credentials({"cookie": 'a=1; _pomerium="tok"; b=2', "authorization": "Bearer Pomerium-t2"}, n)
    assert creds.tokens == ["t2", "tok"] and creds.in_authorization and creds.other_cookies == "a=1; b=2"
    assert find_credentials({"cookie": "a=1"}, n).other_cookies is None
    assert find_credentials({"authorization": "Bearer abc"}, n).tokens == []
    assert not find_credentials({"authorization": "Bearer abc"}, n).in_authorization


@pytest.mark.parametrize(
    "value",
    [
        "Pomerium tok",
        "pomerium tok",
        "POMERIUM   tok",
        "bearer pomerium-tok",
        "BEARER Pomerium-tok",
        "Bearer\tPOMERIUM-tok",
        "Basic abc, Pomerium tok",  # a second Authorization line, joined by Envoy
    ],
)
def test_pomerium_authorization_in_any_case_and_split(make_config: Any, value: str) -> None:
    creds = find_credentials({"authorization": value}, names(make_config))
    assert creds.tokens == ["tok"] and creds.in_authorization and creds.from_header


def test_x_pomerium_authorization_prefix_any_case(make_config: Any) -> None:
    creds = find_credentials({"x-pomerium-authorization": "pOmErIuM tok"}, names(make_config))
    assert creds.tokens == ["tok"] and creds.from_header and not creds.in_authorization


def test_a_cookie_after_a_comma_is_removed_but_never_believed(make_config: Any) -> None:
    # Envoy joins repeated Cookie lines with ',' in the CheckRequest, and browsers allow commas in
    # values, so `x=1,__Host-_pomerium=…` is how a sibling site smuggles a cookie past `__Host-`.
    for header in ("a=1,_pomerium=tok", "a=1, _pomerium=tok", "_pomerium=tok,a=1", "a=1,_pomerium_bind_1=b"):
        creds = find_credentials({"cookie": header}, names(make_config))
        assert (creds.tokens, creds.bindings, creds.other_cookies) == ([], (), ""), header
    secure = names(make_config, cookie_secure=True)
    smuggled = find_credentials({"cookie": "x=1,__Host-_pomerium=attacker; __Host-_pomerium=victim"}, secure)
    assert smuggled.tokens == ["victim"] and smuggled.other_cookies == ""


def test_other_cookies_reach_the_upstream_as_they_came(make_config: Any) -> None:
    creds = find_credentials({"cookie": 'prefs="a,b"; sess=1,2; _pomerium=tok; z=9'}, names(make_config))
    assert creds.tokens == ["tok"] and creds.other_cookies == 'prefs="a,b"; sess=1,2; z=9'


def test_every_authz_cookie_is_stripped_whatever_its_case_or_prefix(make_config: Any) -> None:
    header = (
        "app=1; _POMERIUM=x; _pomerium_authenticate=y; __Host-_pomerium=z; _pomerium_csrf_ab=c; "
        "__Secure-_Pomerium_bind_1=d; _pomeriumx=keep; x_pomerium=keep"
    )
    creds = find_credentials({"cookie": header}, names(make_config))
    assert creds.other_cookies == "app=1; _pomeriumx=keep; x_pomerium=keep"
    assert creds.tokens == []  # none of them is the session cookie by its exact name


def test_only_prefixed_session_cookies_are_read_while_the_prefix_is_in_use(make_config: Any) -> None:
    n = names(make_config, cookie_secure=True)
    creds = find_credentials({"cookie": "_pomerium=planted; __Host-_pomerium=mine"}, n)
    assert creds.tokens == ["mine"] and creds.other_cookies == ""


def test_bindings_and_conflict_marker(make_config: Any) -> None:
    n = names(make_config)
    creds = find_credentials({"cookie": "_pomerium_bind_a=1.x; _pomerium_conflict=1; k=v"}, n)
    assert creds.bindings == (("_pomerium_bind_a", "1.x"),) and creds.conflict_marked
    assert creds.other_cookies == "k=v"


def test_a_name_inside_another_cookie_leaves_the_header_alone(make_config: Any) -> None:
    creds = find_credentials({"cookie": "pref=a_pomerium=b"}, names(make_config))
    assert creds.other_cookies is None


@given(st.dictionaries(st.sampled_from(["cookie", "authorization", "x-pomerium-authorization", "x"]), st.text()))
def test_never_raises_and_never_keeps_a_session_cookie(headers: dict[str, str]) -> None:
    n = CookieNames("_pomerium", "_pomerium_authenticate", "_pomerium_csrf_", "_pomerium_bind_", "_pomerium_conflict",
                    "_pomerium", "", False)  # fmt: skip
    creds = find_credentials(headers, n)
    if creds.other_cookies is not None:
        kept = [part.split("=", 1)[0].strip().lower() for part in creds.other_cookies.split(";")]
        assert "_pomerium" not in kept
