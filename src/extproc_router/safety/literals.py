"""Strings every match of a regular expression must contain, read from its parse tree.

Python's `re` tries a pattern at every position of the text; a substring test runs at C speed.
A pattern whose matches all contain one of a few literal words ("ignore", "instructions") need
not run at all on a text that contains none of them — and most text does not. The analysis is
conservative: where it cannot prove a literal is required it returns nothing, and the pattern
always runs.
"""

from __future__ import annotations

import importlib
import re
from typing import Any

__all__ = ["required_literals"]

# The regex parser's own modules (Python 3.11+); typeshed does not describe them.
sre: Any = importlib.import_module("re._constants")
sre_parse: Any = importlib.import_module("re._parser")

# Shorter literals would match nearly any text and save nothing.
_MIN_LENGTH = 3


def required_literals(pattern: re.Pattern[str]) -> tuple[str, ...]:
    """Alternatives of which every match contains at least one; () when none are known (or the
    pattern ignores case, where a literal test would need case folding)."""
    if pattern.flags & re.IGNORECASE:
        return ()
    try:
        parsed = sre_parse.parse(pattern.pattern, pattern.flags)
    except re.error:
        return ()
    found = _sequence(list(parsed))
    return tuple(sorted(found)) if found else ()


def _sequence(items: Any) -> set[str] | None:
    """The most selective required set among the sequence's elements (the one whose shortest
    literal is longest), literal runs joined into words."""
    candidates: list[set[str]] = []
    run: list[str] = []

    def flush() -> None:
        if run:
            candidates.append({"".join(run)})
            run.clear()

    for op, value in items:
        if op is sre.LITERAL:
            run.append(chr(value))
            continue
        flush()
        found = _element(op, value)
        if found:
            candidates.append(found)
    flush()
    usable = [c for c in candidates if min(map(len, c)) >= _MIN_LENGTH]
    if not usable:
        return None
    return max(usable, key=lambda c: (min(map(len, c)), -len(c)))


def _element(op: Any, value: Any) -> set[str] | None:
    """The parse tree is the `re` module's own, untyped; its shapes are documented only in
    `re/_parser.py`."""
    if op is sre.SUBPATTERN:
        return _sequence(list(value[-1]))
    if op is sre.BRANCH:
        alternatives = [_sequence(list(branch)) for branch in value[1]]
        if any(alternative is None for alternative in alternatives):
            return None
        return {literal for alternative in alternatives if alternative for literal in alternative}
    if op in (sre.MAX_REPEAT, sre.MIN_REPEAT, sre.POSSESSIVE_REPEAT):
        low, _high, body = value
        return _sequence(list(body)) if low >= 1 else None
    if op is sre.ATOMIC_GROUP:
        return _sequence(list(value))
    return None  # character classes, anchors, lookarounds, backreferences: no literal known
