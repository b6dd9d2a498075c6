"""Keyword rules: the cheapest signal, and the one an operator can read at a glance.

All rules compile into one regular expression, so a prompt is scanned once however many rules
there are; rule order still decides between matches (the earliest rule wins, not the earliest
position in the text). Text is NFKC-normalised and matched case-insensitively, so full-width or
capital letters match their plain forms.
"""

from __future__ import annotations

import re
import time
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from extproc_router.settings import KeywordRule, PoolSettings
from extproc_router.signals.base import SignalResult, abstain, target_scores

__all__ = ["KeywordMatch", "KeywordMatcher", "normalize"]

_MAX_CHARS = 65_536


def normalize(text: str) -> str:
    return unicodedata.normalize("NFKC", text)


@dataclass(frozen=True, slots=True)
class KeywordMatch:
    rule: KeywordRule
    matched: str


class KeywordMatcher:
    def __init__(self, rules: Sequence[KeywordRule]) -> None:
        self._rules = tuple(rules)
        alternatives = []
        self._group_rule: dict[str, int] = {}
        for index, rule in enumerate(self._rules):
            words = [
                r"(?<!\w)" + r"\s+".join(map(re.escape, normalize(k).split())) + r"(?!\w)"
                for k in rule.keywords
            ]
            for number, expression in enumerate([*words, *rule.patterns]):
                group = f"_r{index}_{number}"
                self._group_rule[group] = index
                alternatives.append(f"(?P<{group}>{expression})")
        self._pattern = re.compile("|".join(alternatives), re.IGNORECASE) if alternatives else None

    def match(self, text: str) -> KeywordMatch | None:
        if self._pattern is None or not text:
            return None
        best: tuple[int, str] | None = None
        # Rules are about what is asked, which comes first; megabytes of pasted data after it
        # would only cost time.
        for found in self._pattern.finditer(normalize(text[:_MAX_CHARS])):
            index = self._group_rule[found.lastgroup or ""]
            if best is None or index < best[0]:
                best = (index, found.group())
                if index == 0:
                    break
        if best is None:
            return None
        return KeywordMatch(rule=self._rules[best[0]], matched=best[1])

    def evaluate(self, text: str, pools: Sequence[PoolSettings]) -> SignalResult:
        started = time.perf_counter()
        found = self.match(text)
        elapsed = (time.perf_counter() - started) * 1000
        if found is None:
            return abstain("keyword", "no rule matched", elapsed)
        evidence = {
            "rule": found.rule.name,
            "matched": found.matched[:64],
            "target": found.rule.target,
            "short_circuit": found.rule.short_circuit,
        }
        return SignalResult("keyword", target_scores(pools, found.rule.target), evidence, elapsed)
