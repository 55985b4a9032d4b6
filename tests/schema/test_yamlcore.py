from __future__ import annotations

import pytest

from authz.schema import yamlcore


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("9:00", "9:00"),
        ("12:30:00", "12:30:00"),
        ("no", "no"),
        ("yes", "yes"),
        ("on", "on"),
        ("true", True),
        ("False", False),
        ("2024-01-02", "2024-01-02"),
        ("2024-01-02T10:00:00Z", "2024-01-02T10:00:00Z"),
        ("0777", 777),
        ("0o17", 15),
        ("0x1F", 31),
        ("1.5", 1.5),
        ("~", None),
        ("null", None),
        ("1_000", "1_000"),
    ],
)
def test_core_schema_scalars(text: str, expected: object) -> None:
    assert yamlcore.load(f"v: {text}") == {"v": expected}


def test_duplicate_keys_are_errors() -> None:
    with pytest.raises(yamlcore.YAMLError, match="duplicate key 'a'"):
        yamlcore.load("a: 1\na: 2\n")


def test_no_arbitrary_objects() -> None:
    with pytest.raises(yamlcore.YAMLError):
        yamlcore.load("!!python/object/apply:os.system ['true']")
