"""String and string-list matchers (reference §1.5): all operators of one matcher are AND'ed."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from authz.errors import Problem
from authz.schema.reader import describe, suggest

STRING_OPS = ("is", "not", "contains", "starts_with", "ends_with", "in", "not_in")
LIST_OPS = ("has", "is", "exclude")

_STRING_TESTS: dict[str, Callable[[str, Any], bool]] = {
    "is": lambda s, v: s == v,
    "not": lambda s, v: s != v,
    "contains": lambda s, v: v in s,
    "starts_with": lambda s, v: s.startswith(v),
    "ends_with": lambda s, v: s.endswith(v),
    "in": lambda s, v: s in v,
    "not_in": lambda s, v: s not in v,
}


@dataclass(frozen=True, slots=True)
class StringMatcher:
    """`{starts_with: a, ends_with: b}` and friends; a bare string means `{is: ...}`."""

    ops: tuple[tuple[str, str | frozenset[str]], ...]

    def match(self, value: str) -> bool:
        return all(_STRING_TESTS[op](value, arg) for op, arg in self.ops)


@dataclass(frozen=True, slots=True)
class ListMatcher:
    """`{has: a}`, `{is: a}` (exactly that one element), `{exclude: a}`; a bare string means has."""

    ops: tuple[tuple[str, str], ...]

    def match(self, values: Iterable[str]) -> bool:
        items = list(values)
        for op, arg in self.ops:
            if op == "has" and arg not in items:
                return False
            if op == "is" and items != [arg]:
                return False
            if op == "exclude" and arg in items:
                return False
        return True


def parse_string_matcher(
    value: Any, path: str, problems: list[Problem], normalise: Callable[[str], str] = str
) -> StringMatcher | None:
    """Compile a string matcher, recording problems with their paths."""
    if isinstance(value, str):
        return StringMatcher((("is", normalise(value)),))
    if not isinstance(value, dict) or not value:
        problems.append(Problem(path, f"expected a string or a matcher object, got {describe(value)}"))
        return None
    ops: list[tuple[str, str | frozenset[str]]] = []
    ok = True
    for op, arg in value.items():
        where = f"{path}.{op}"
        if op not in STRING_OPS:
            problems.append(
                Problem(
                    where,
                    f"unknown string matcher operator{suggest(str(op), STRING_OPS)} (known: {', '.join(STRING_OPS)})",
                )
            )
            ok = False
        elif op in ("in", "not_in"):
            if not isinstance(arg, list) or not all(isinstance(a, str) for a in arg):
                problems.append(Problem(where, f"{op} requires a list of strings, got {describe(arg)}"))
                ok = False
            else:
                ops.append((op, frozenset(normalise(a) for a in arg)))
        elif not isinstance(arg, str):
            problems.append(Problem(where, f"expected a string, got {describe(arg)}"))
            ok = False
        else:
            ops.append((op, normalise(arg)))
    return StringMatcher(tuple(ops)) if ok else None


def canonical(value: Any) -> str | None:
    """A claim value as the string matchers compare: strings as they are, JSON for scalars."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float) or value is None:
        return json.dumps(value)
    return None


def parse_list_matcher(value: Any, path: str, problems: list[Problem], *, scalars: bool = False) -> ListMatcher | None:
    """Compile a string-list matcher; with `scalars`, booleans and numbers match their JSON form."""
    if scalars and not isinstance(value, dict) and canonical(value) is not None:
        value = canonical(value)
    if isinstance(value, str):
        return ListMatcher((("has", value),))
    if not isinstance(value, dict) or not value:
        problems.append(Problem(path, f"expected a string or a matcher object, got {describe(value)}"))
        return None
    ops: list[tuple[str, str]] = []
    ok = True
    for op, arg in value.items():
        where = f"{path}.{op}"
        if op not in LIST_OPS:
            problems.append(
                Problem(
                    where,
                    f"unknown list matcher operator{suggest(str(op), LIST_OPS)} (known: {', '.join(LIST_OPS)})",
                )
            )
            ok = False
        elif isinstance(arg, str) or (scalars and canonical(arg) is not None):
            ops.append((op, str(canonical(arg))))
        else:
            problems.append(Problem(where, f"expected a string, got {describe(arg)}"))
            ok = False
    return ListMatcher(tuple(ops)) if ok else None
