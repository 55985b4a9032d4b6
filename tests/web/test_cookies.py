from __future__ import annotations

from collections.abc import Callable

from authz.config import Config
from authz.web import cookies


def test_default_attributes(make_config: Callable[..., Config]) -> None:
    config = make_config(cookie_secure=True)
    assert cookies.set_cookie(config, "_pomerium", "v", 50400) == (
        "_pomerium=v; Path=/; Max-Age=50400; HttpOnly; SameSite=Lax; Secure"
    )


def test_domain_and_options(make_config: Callable[..., Config]) -> None:
    config = make_config(cookie_domain="example.com", cookie_same_site="strict", cookie_http_only=False)
    assert cookies.set_cookie(config, "c", "v", 10) == "c=v; Path=/; Max-Age=10; Domain=example.com; SameSite=Strict"
    assert cookies.clear_cookie(config, "c").startswith("c=; Path=/; Max-Age=0;")


def test_parse() -> None:
    assert cookies.parse('a=1; b="two"; a=3; bad; =x') == {"a": "1", "b": "two"}
