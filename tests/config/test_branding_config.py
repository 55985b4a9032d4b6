"""`branding` and Pomerium's top-level branding keys: what loads, normalised, and every refusal."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from authz.config import Config, load_config
from authz.config.model import Branding
from authz.errors import ConfigError


def _problems(make_config: Callable[..., Config], **overrides: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        make_config(**overrides)
    return [str(p) for p in info.value.problems]


def test_unset_is_authz_plain_look(make_config: Callable[..., Config]) -> None:
    assert make_config().branding == Branding() == Branding(name="authz")


def test_the_block_loads_normalised(make_config: Callable[..., Config]) -> None:
    branding = make_config(branding={
        "name": "  Example Corp ", "logo_url": "https://static.example.com/logo.svg?v=2",
        "favicon_url": "http://127.0.0.1:8000/favicon.ico", "primary_color": "#6E4", "secondary_color": "#3B2A8F",
        "error_message_first_paragraph": "Need access?\n  Ask in #it-help.",
    }).branding  # fmt: skip
    assert branding == Branding(
        name="Example Corp",
        logo_url="https://static.example.com/logo.svg?v=2",
        favicon_url="http://127.0.0.1:8000/favicon.ico",
        primary_color="#66ee44",
        secondary_color="#3b2a8f",
        error_message_first_paragraph="Need access? Ask in #it-help.",
    )


def test_pomeriums_top_level_keys_load(make_config: Callable[..., Config]) -> None:
    config = make_config(primary_color="#112233", logo_url="https://cdn.example.com/l.png", branding={"name": "Ops"})
    assert config.branding == Branding(name="Ops", primary_color="#112233", logo_url="https://cdn.example.com/l.png")


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("name", "", None),  # empty: the default
        ("name", "x" * 61, "expected 1 to 60 characters of plain text on one line"),
        ("name", "Evil\u202eCorp", "expected 1 to 60 characters of plain text on one line"),
        ("name", "two\nlines", "expected 1 to 60 characters of plain text on one line"),
        ("name", 7, "expected a string, got 7"),
        ("primary_color", "red", "expected a colour as #rgb or #rrggbb"),
        ("primary_color", "#12345", "expected a colour as #rgb or #rrggbb"),
        ("primary_color", "#123;}body{display:none", "expected a colour as #rgb or #rrggbb"),
        ("secondary_color", "#1234567", "expected a colour as #rgb or #rrggbb"),
        ("logo_url", "javascript:alert(1)", "must be an https URL"),
        ("logo_url", "data:image/png;base64,AAAA", "expected an https URL of at most 2000 plain URL characters"),
        ("logo_url", "http://cdn.example.com/logo.png", "must be an https URL (http only on a loopback host)"),
        ("logo_url", "https://user:pw@cdn.example.com/logo.png", "must name a host and carry no user name"),
        ("logo_url", "https:///logo.png", "must name a host"),
        ("logo_url", "https://cdn.example.com/a b.png", "plain URL characters"),
        ("logo_url", "https://cdn.example.com/a.png; script-src *", "plain URL characters"),
        ("logo_url", "https://cdn.example.com/a.png#x", "plain URL characters"),
        ("logo_url", "https://cdn.example.com/'unsafe-inline'", "plain URL characters"),
        ("logo_url", "https://cdn.example.com:99999/a.png", "is not a URL"),
        ("favicon_url", "//cdn.example.com/f.ico", "must be an https URL"),
        ("favicon_url", "http://[::1]:8000/f.ico", "an IPv6 address cannot be named in a Content-Security-Policy"),
        ("error_message_first_paragraph", "x" * 501, "expected 1 to 500 characters of plain text"),
        ("error_message_first_paragraph", "bell\x07", "expected 1 to 500 characters of plain text"),
    ],
)
def test_refusals(make_config: Callable[..., Config], key: str, value: object, message: str | None) -> None:
    if message is None:
        assert make_config(branding={key: value}).branding == Branding()
        return
    problems = _problems(make_config, branding={key: value})
    assert len(problems) == 1 and problems[0].startswith(f"branding.{key}: ") and message in problems[0], problems
    assert "\u202e" not in problems[0]  # the bad value is shown with repr(): escaped


def test_both_ways_unknown_sub_keys_and_wrong_shape(make_config: Callable[..., Config]) -> None:
    both = _problems(make_config, primary_color="#111", branding={"primary_color": "#222"})
    assert both == ["primary_color: set either primary_color or branding.primary_color, not both"]
    unknown = _problems(make_config, branding={"colour": "#111"})
    assert len(unknown) == 1 and unknown[0].startswith("branding.colour: unknown key")
    assert _problems(make_config, branding="Example") == ["branding: expected a mapping, got 'Example'"]
    assert _problems(make_config, logo_url="http://cdn.example.com/x.png")[0].startswith(
        "logo_url: must be an https URL"
    )


def test_from_the_environment(write_config: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRANDING", '{name: Example Corp, primary_color: "#0a0"}')
    monkeypatch.setenv("LOGO_URL", "https://cdn.example.com/logo.png")
    config = load_config(write_config())
    assert config.branding == Branding(
        name="Example Corp", primary_color="#00aa00", logo_url="https://cdn.example.com/logo.png"
    )
    assert ("branding", "BRANDING") in config.from_env
