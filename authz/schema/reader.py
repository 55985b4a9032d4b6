"""Typed reads from parsed YAML that remember where they are, so every error names its path."""

from __future__ import annotations

import base64
import binascii
import difflib
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from authz.errors import Problem

T = TypeVar("T")

_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ns|us|µs|ms|s|m|h)")  # ASCII digits only
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Parse a Go-style duration (`90s`, `1h30m`, `250ms`) into seconds; ValueError if malformed."""
    text = text.strip()
    if text == "0":
        return 0.0
    pos, total = 0, 0.0
    while pos < len(text):
        match = _DURATION_PART.match(text, pos)
        if match is None:
            shown = text if len(text) <= 40 else f"{text[:40]}…"
            raise ValueError(f"invalid duration {shown!r} (use Go syntax such as 90s, 5m or 1h30m)")
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if not text:
        raise ValueError("empty duration")
    return total


def suggest(word: str, known: Iterable[str]) -> str:
    """A ` (did you mean 'x'?)` hint for a misspelt key, or ''."""
    close = difflib.get_close_matches(word, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def describe(value: Any) -> str:
    """A short, safe rendering of a bad value for an error message."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class Node:
    """A mapping from the config at a known path. Reads consume keys; `finish` reports the rest."""

    def __init__(self, value: Mapping[str, Any], path: str, problems: list[Problem]) -> None:
        self.value = value
        self.path = path
        self.problems = problems
        self._seen: set[str] = set()

    def at(self, key: str | int) -> str:
        """The path of a child key or index."""
        if isinstance(key, int):
            return f"{self.path}[{key}]"
        return f"{self.path}.{key}" if self.path else key

    def error(self, key: str | int | None, message: str) -> None:
        """Record a problem at this node or at one of its keys."""
        self.problems.append(Problem(self.path if key is None else self.at(key), message))

    def has(self, key: str) -> bool:
        return key in self.value and self.value[key] is not None

    def raw(self, key: str) -> Any:
        self._seen.add(key)
        return self.value.get(key)

    def _typed(self, key: str, default: T, kind: type | tuple[type, ...], label: str) -> T:
        value = self.raw(key)
        if value is None:
            return default
        if isinstance(value, bool) and kind is not bool:
            self.error(key, f"expected {label}, got {describe(value)}")
            return default
        if not isinstance(value, kind):
            self.error(key, f"expected {label}, got {describe(value)}")
            return default
        return value  # type: ignore[return-value]

    def text(self, key: str, default: str = "") -> str:
        return self._typed(key, default, str, "a string")

    def flag(self, key: str, default: bool = False) -> bool:
        return self._typed(key, default, bool, "true or false")

    def integer(self, key: str, default: int = 0) -> int:
        return self._typed(key, default, int, "an integer")

    def choice(self, key: str, default: str, choices: Iterable[str]) -> str:
        options = list(choices)
        value = self.text(key, default)
        if value not in options:
            self.error(key, f"{describe(value)} is not one of {', '.join(options)}")
            return default
        return value

    def duration(self, key: str, default: float) -> float:
        value = self.raw(key)
        if value is None:
            return default
        if not isinstance(value, str):
            self.error(key, f"expected a duration such as '30s', got {describe(value)}")
            return default
        try:
            return parse_duration(value)
        except ValueError as exc:
            self.error(key, str(exc))
            return default

    def str_list(self, key: str) -> list[str]:
        """A list of strings; a single string is accepted as a one-element list."""
        value = self.raw(key)
        if value is None:
            return []
        if isinstance(value, str):
            return [value]
        if not isinstance(value, list):
            self.error(key, f"expected a list of strings, got {describe(value)}")
            return []
        out = []
        for i, item in enumerate(value):
            if isinstance(item, str):
                out.append(item)
            else:
                self.problems.append(Problem(f"{self.at(key)}[{i}]", f"expected a string, got {describe(item)}"))
        return out

    def str_map(self, key: str) -> dict[str, str]:
        value = self.raw(key)
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.error(key, f"expected a mapping of strings, got {describe(value)}")
            return {}
        out = {}
        for k, v in value.items():
            if isinstance(k, str) and isinstance(v, str):
                out[k] = v
            else:
                self.problems.append(Problem(f"{self.at(key)}.{k}", f"expected a string, got {describe(v)}"))
        return out

    def child(self, key: str) -> Node | None:
        value = self.raw(key)
        if value is None:
            return None
        if not isinstance(value, Mapping):
            self.error(key, f"expected a mapping, got {describe(value)}")
            return None
        return Node(value, self.at(key), self.problems)

    def inline_or_file(self, key: str, read: Callable[[str], str]) -> tuple[object, str]:
        """The value of `key`, or the text of the file `key_file` names, and the key it came from;
        (None, key) when neither is set or on a problem (recorded). The value is never echoed."""
        inline, path = self.raw(key), self.raw(f"{key}_file")
        if inline is not None and path is not None:
            self.error(key, f"set either {key} or {key}_file, not both")
            return None, key
        if path is None:
            return inline, key
        where = f"{key}_file"
        if not isinstance(path, str):
            self.error(where, f"expected a file path, got {describe(path)}")
            return None, where
        try:
            return read(path), where
        except OSError as exc:
            self.error(where, f"cannot read {path!r}: {exc.strerror}")
            return None, where

    def secret(self, key: str, *, size: int | None = 32, read: Callable[[str], str]) -> bytes | None:
        """A base64 secret from `key` or from the file named by `key_file`; value never echoed."""
        inline = self.raw(key)
        from_file = self.raw(f"{key}_file")
        if inline is not None and from_file is not None:
            self.error(key, f"set either {key} or {key}_file, not both")
            return None
        where, text = key, inline
        if from_file is not None:
            where = f"{key}_file"
            if not isinstance(from_file, str):
                self.error(where, f"expected a file path, got {describe(from_file)}")
                return None
            try:
                text = read(from_file)
            except OSError as exc:
                self.error(where, f"cannot read {from_file!r}: {exc.strerror}")
                return None
        if text is None:
            return None
        if not isinstance(text, str):
            self.error(where, "expected a base64 string (value not shown)")
            return None
        try:
            decoded = base64.b64decode(text.strip(), validate=True)
        except (binascii.Error, ValueError):
            self.error(where, "is not valid base64 (value not shown); generate one with `authz keygen`")
            return None
        if size is not None and len(decoded) != size:
            self.error(
                where,
                f"must decode to {size} bytes, got {len(decoded)} (value not shown); generate one with `authz keygen`",
            )
            return None
        return decoded

    def finish(
        self,
        known: Iterable[str],
        later: Mapping[str, str] | None = None,
        unsupported: Mapping[str, str] | None = None,
    ) -> None:
        """Report every key that was not read: a later feature, a Pomerium feature authz does not
        have, or an unknown key with a suggestion."""
        names = set(known)
        for key in self.value:
            if key in self._seen:
                continue
            if not isinstance(key, str):
                self.error(None, f"keys must be strings, got {describe(key)}")
            elif later and key in later:
                self.error(key, f"not supported yet ({later[key]})")
            elif unsupported and key in unsupported:
                self.error(key, f"is a Pomerium feature not supported ({unsupported[key]})")
            else:
                self.error(key, f"unknown key{suggest(key, names | set(later or ()))}")
