"""Keyword rules: the cheapest signal, and the one an operator can read at a glance.

All rules compile into one regular expression, so a prompt is scanned once however many rules
there are; rule order still decides between matches (the earliest rule wins, not the earliest
position in the text).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from extproc_router.settings import KeywordRule

__all__ = ["KeywordMatch", "KeywordMatcher", "normalize"]


def normalize(text: str) -> str:
    """Fold width, compatibility forms and case: full-width or capital letters match plain ones."""
    return unicodedata.normalize("NFKC", text).casefold()


@dataclass(frozen=True, slots=True)
class KeywordMatch:
    rule: KeywordRule
    keyword: str


class KeywordMatcher:
    def __init__(self, rules: Sequence[KeywordRule]) -> None:
        self._rules = tuple(rules)
        alternatives = []
        self._group_rule: dict[str, int] = {}
        for index, rule in enumerate(self._rules):
            for number, keyword in enumerate(rule.keywords):
                group = f"r{index}_{number}"
                self._group_rule[group] = index
                words = r"\s+".join(re.escape(part) for part in normalize(keyword).split())
                alternatives.append(f"(?P<{group}>{words})")
        self._pattern = (
            re.compile(r"(?<!\w)(?:" + "|".join(alternatives) + r")(?!\w)")
            if alternatives
            else None
        )

    def match(self, text: str) -> KeywordMatch | None:
        if self._pattern is None or not text:
            return None
        best: tuple[int, str] | None = None
        for found in self._pattern.finditer(normalize(text)):
            group = found.lastgroup
            if group is None:
                continue
            index = self._group_rule[group]
            if best is None or index < best[0]:
                best = (index, found.group())
                if index == 0:
                    break
        if best is None:
            return None
        return KeywordMatch(rule=self._rules[best[0]], keyword=best[1])
