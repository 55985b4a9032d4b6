from __future__ import annotations

import pytest

from authz.web.negotiate import Format, best_format, is_browser, response_format


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, None),
        ("", None),
        ("*/*", Format.HTML),
        ("text/html", Format.HTML),
        ("application/json", Format.JSON),
        ("text/*", Format.HTML),
        ("application/json, text/html;q=0.9", Format.JSON),
        ("text/html;q=0.1, application/*", Format.JSON),
        ("text/plain", Format.TEXT),
        ("image/png", Format.NONE),
        ("text/html;q=0", Format.NONE),
        ("garbage", None),
        ("text/html;q=abc", None),
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", Format.HTML),
    ],
)
def test_best_format(accept: str | None, expected: Format | None) -> None:
    assert best_format(accept) == expected


def test_browser_rules() -> None:
    assert is_browser({}, session_header=False)
    assert not is_browser({}, session_header=True)
    assert not is_browser({"content-type": "application/grpc+proto"}, session_header=False)
    assert not is_browser({"x-requested-with": "XMLHttpRequest"}, session_header=False)


def test_response_format() -> None:
    assert response_format({"accept": "application/json"}) is Format.JSON
    assert response_format({"content-type": "application/grpc-web+proto"}) is Format.GRPC
    assert response_format({}) is Format.HTML
    assert response_format({"accept": "image/png"}) is Format.JSON
