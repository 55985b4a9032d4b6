"""The answer bodies: JSON and text exactly as before, HTML from templates with every value escaped."""

from __future__ import annotations

import json
from html.parser import HTMLParser

import pytest
from jinja2 import UndefinedError

from authz.web import pages
from authz.web.negotiate import Format

HOSTILE = "<script>alert('x')</script>\"&"
ESCAPED = "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&#34;&amp;"


def test_json_and_text_forms() -> None:
    assert pages.DEFAULT.error_body(403, ("email-unauthorized",), "r-1", Format.JSON) == (
        "application/json",
        '{"status": 403, "error": "Forbidden", "reasons": ["email-unauthorized"], "request_id": "r-1"}',
    )
    content_type, body = pages.DEFAULT.error_body(
        401, ("user-unauthenticated",), "r", Format.GRPC, sign_in_url="u", detail="d"
    )
    assert content_type == "application/json"
    assert json.loads(body) == {"status": 401, "error": "Unauthenticated", "reasons": ["user-unauthenticated"],
                                "request_id": "r", "sign_in_url": "u", "detail": "d"}  # fmt: skip
    assert pages.DEFAULT.error_body(404, ("route-not-found",), "r-2", Format.TEXT) == (
        "text/plain; charset=utf-8",
        "404 Not Found\nreason: route-not-found\nrequest id: r-2\n",
    )
    assert json.loads(pages.DEFAULT.error_body(599, (), "", Format.JSON)[1])["error"] == "Error"


def test_details_in_json_and_html() -> None:
    details = [("route", "app"), ("request", "GET app.localhost /x"), ("trace", "allow.or[0]: email-unauthorized")]
    _, body = pages.DEFAULT.error_body(403, ("email-unauthorized",), "r", Format.JSON, details=details)
    assert json.loads(body)["details"] == dict(details)
    _, html = pages.DEFAULT.error_body(403, ("email-unauthorized",), "r", Format.HTML, details=details)
    assert "<tr><th>route</th><td><code>app</code></td></tr>" in html
    assert "allow.or[0]: email-unauthorized" in html
    _, plain = pages.DEFAULT.error_body(403, ("email-unauthorized",), "r", Format.HTML)
    assert "<table>" not in plain


def test_every_value_is_escaped() -> None:
    content_type, body = pages.DEFAULT.error_body(
        403,
        (HOSTILE,),
        HOSTILE,
        Format.HTML,
        sign_in_url=f"https://a.example/?x=1&y={HOSTILE}",
        detail=HOSTILE,
        account=HOSTILE,
        details=[(HOSTILE, HOSTILE)],
    )
    assert content_type == "text/html; charset=utf-8"
    assert "<script>" not in body and "alert('x')" not in body
    assert body.count(ESCAPED) == 7  # reason, request id, link, detail, account, detail name and value
    assert 'href="https://a.example/?x=1&amp;y=&lt;script&gt;' in body


def test_the_login_page_links_to_sign_in() -> None:
    url = "http://authenticate.localhost/.pomerium/sign_in?pomerium_redirect_uri=x&pomerium_signature=s"
    _, body = pages.DEFAULT.error_body(302, (), "r-9", Format.HTML, sign_in_url=url)
    assert f'<a href="{url.replace("&", "&amp;")}">Sign in</a>' in body
    assert "<h1>302 Found</h1>" in body and "Request ID: <code>r-9</code>" in body


def test_a_denied_page_names_the_account_and_offers_sign_out() -> None:
    _, body = pages.DEFAULT.error_body(403, ("email-unauthorized",), "r", Format.HTML, account="alice@example.com")
    assert "Signed in as <b>alice@example.com</b>" in body
    # A GET to the confirmation page: the Check's cached page has no session to bind a token to.
    assert '<form method="get" action="/.pomerium/sign_out">' in body
    assert "<code>email-unauthorized</code> " in body  # the reason, then its explanation


class _Checker(HTMLParser):
    """Every tag that opens is closed, in order (void elements aside)."""

    VOID = frozenset({"meta", "br", "input", "link"})

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, (self.stack, tag)
        self.stack.pop()


@pytest.mark.parametrize(
    "body",
    [
        pages.DEFAULT.error_body(
            403,
            ("email-unauthorized",),
            "r",
            Format.HTML,
            sign_in_url="u",
            detail="d",
            account="a",
            details=[("k", "v")],
        )[1],
        pages.DEFAULT.account_page("user", "Signed in", rows=[("Name", "n")], token="t"),
        pages.DEFAULT.account_page("sign_out", "Sign out", host="h", token="t", redirect=""),
        pages.DEFAULT.account_page("sign_out", "Sign out", host="h", token="t", redirect="http://h/"),
        pages.DEFAULT.account_page("signed_out", "Signed out", back=""),
        pages.DEFAULT.account_page("signed_out", "Signed out", back="https://app.example.com/"),
    ],
)
def test_pages_share_the_layout_and_are_well_formed(body: str) -> None:
    checker = _Checker()
    checker.feed(body.removeprefix("<!doctype html>"))
    assert checker.stack == []
    assert body.startswith("<!doctype html>") and '<p class="brand">authz</p>' in body
    assert "http://" not in body.partition("<main")[0] and "https://" not in body.partition("<main")[0]  # no assets


def test_a_missing_template_value_is_an_error() -> None:
    with pytest.raises(UndefinedError):
        pages.DEFAULT.account_page("user", "Signed in")  # no rows


@pytest.mark.parametrize(
    ("reasons", "request_id", "sign_in_url", "account"),
    [
        (("email-unauthorized",), "rid-1", None, "ann@example.com"),
        ((), "r", "https://auth.example.com/.pomerium/sign_in?a=1&b='2'\"", None),
        (("groups-unauthorized", "<b>x</b>"), "<script>alert(1)</script>", None, "<authz-request-id>\"'&"),
        (("user-unauthenticated",), "<authz-account>", "http://x/<authz-sign-in-url>", "<authz-account>"),
        ((), "", "", ""),
    ],
)
def test_a_page_from_the_cached_shell_is_exactly_the_rendered_page(
    reasons: tuple[str, ...], request_id: str, sign_in_url: str | None, account: str | None
) -> None:
    from authz.web import pages

    cached = pages.DEFAULT.error_body(403, reasons, request_id, Format.HTML, sign_in_url=sign_in_url, account=account)
    values = pages._error_values(reasons, request_id, sign_in_url, account, "")
    assert cached[1] == pages.DEFAULT._page("403 Forbidden", pages._ERROR, values)
    assert "<script>" not in cached[1] and "<authz-" not in cached[1]


def test_error_pages_are_ascii() -> None:
    # The Check sends these bodies in every deny and login answer: an ASCII str needs no UTF-8
    # encoding on its way into the protobuf, a single "·" made every answer pay for one.
    from authz.web import pages

    for status in (302, 401, 403, 404, 503):
        body = pages.DEFAULT.error_body(
            status, ("email-unauthorized",), "rid", Format.HTML, sign_in_url="https://a/b", account="a"
        )
        assert body[1].isascii()
