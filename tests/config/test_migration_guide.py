"""docs/migrating-from-pomerium.md cannot drift from the code: every key its tables mark supported
or different is one authz reads, and every key marked not yet is refused at load, with the
reason the page gives."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from authz.config import Config
from authz.config.load import GLOBAL_KEYS, GLOBAL_UNSUPPORTED, ROUTE_KEYS, ROUTE_UNSUPPORTED
from authz.errors import ConfigError

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "migrating-from-pomerium.md"
STATUSES = ("supported", "different", "not yet")
Rows = dict[str, tuple[str, str]]  # key: (status, note)


def _tables() -> dict[str, Rows]:
    """The rows of each section's table, by key (a row may name several keys)."""
    tables: dict[str, Rows] = {}
    section = ""
    for line in GUIDE.read_text().splitlines():
        if line.startswith("## "):
            section = line[3:].strip()
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("| `") else []
        if len(cells) >= 3:
            keys, status, note = cells[0], cells[1], "|".join(cells[2:])
            assert status in STATUSES, line
            for key in re.findall(r"`([a-z0-9_]+)`", keys):
                assert key not in tables.setdefault(section, {}), f"{key} twice in {section}"
                tables[section][key] = (status, note)
    return tables


TABLES = _tables()
GLOBAL, ROUTE = TABLES["Global settings"], TABLES["Route settings"]


def _keys(rows: Rows, *statuses: str) -> list[str]:
    return sorted(key for key, (status, _) in rows.items() if status in statuses)


def test_the_tables_are_there_and_sizeable() -> None:
    assert len(GLOBAL) > 100 and len(ROUTE) > 40


@pytest.mark.parametrize(("rows", "known"), [(GLOBAL, GLOBAL_KEYS), (ROUTE, ROUTE_KEYS)], ids=["global", "route"])
def test_supported_and_different_keys_are_read(rows: Rows, known: tuple[str, ...]) -> None:
    assert [key for key in _keys(rows, "supported", "different") if key not in known] == []


@pytest.mark.parametrize(("rows", "known"), [(GLOBAL, GLOBAL_KEYS), (ROUTE, ROUTE_KEYS)], ids=["global", "route"])
def test_not_yet_keys_are_not_read(rows: Rows, known: tuple[str, ...]) -> None:
    assert [key for key in _keys(rows, "not yet") if key in known] == []


def test_pomerium_features_authz_names_are_in_the_tables_as_the_page_says() -> None:
    for rows, unsupported in ((GLOBAL, GLOBAL_UNSUPPORTED), (ROUTE, ROUTE_UNSUPPORTED)):
        for key in unsupported:
            status, note = rows[key]
            assert status == "not yet" and "a Pomerium feature not supported" in note, key


def test_every_not_yet_global_key_is_refused_at_load(make_config: Callable[..., Config]) -> None:
    keys = _keys(GLOBAL, "not yet")
    with pytest.raises(ConfigError) as info:
        make_config(**dict.fromkeys(keys, "x"))
    refused = {p.path for p in info.value.problems}
    assert [key for key in keys if key not in refused] == []
    for problem in info.value.problems:
        if problem.path in GLOBAL_UNSUPPORTED:
            assert "is a Pomerium feature not supported" in str(problem)
        elif problem.path in keys:
            assert "unknown key" in str(problem), str(problem)


def test_every_not_yet_route_key_is_refused_at_load(make_config: Callable[..., Config]) -> None:
    keys = _keys(ROUTE, "not yet")
    route = {"from": "http://app.localhost", "to": "http://127.0.0.1:9", "allow_any_authenticated_user": True}
    with pytest.raises(ConfigError) as info:
        make_config(routes=[{**route, **dict.fromkeys(keys, "x")}])
    refused = {p.path.removeprefix("routes[0].") for p in info.value.problems}
    assert [key for key in keys if key not in refused] == []
