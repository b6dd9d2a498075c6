"""Complexity: how hard the request is, from its length in real tokens and its structure.

Length alone misjudges both a long pasted document with one easy question and a short proof
request, so the tier is the larger of a token tier and a depth tier, where depth counts the
parts of the task: separate questions, clauses joined by "and how / then / compare", list items,
conditions, code blocks and distinct task verbs. "What is X?" has depth 1; "What is X and how
does it differ from Y?" depth 2; "Explain X" depth 2 (a task verb is a part); multi-part tasks
4 and more. A long text with a single ask is held at moderate.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from extproc_router.settings import TIERS, ComplexitySettings, PoolSettings
from extproc_router.signals.base import SignalResult, abstain, tier_scores

__all__ = ["Structure", "measure_depth", "tier_for"]

_MAX_DEPTH = 12
_QUESTION = re.compile(r"\?+(?=\s|$)")
_JOINER = re.compile(
    r"\b(?:and (?:then|how|why|what|when|where|which|explain|also)|then|afterwards|compare|"
    r"contrast|versus|vs\.?|difference between|as well as|in addition|additionally|also|"
    r"finally|trade-?offs?)\b",
    re.IGNORECASE,
)
_LIST_ITEM = re.compile(r"^\s*(?:\d+[.)]|[a-z][.)]|[-*•])\s+\S", re.MULTILINE | re.IGNORECASE)
_CONDITION = re.compile(
    r"\b(?:if|unless|otherwise|assuming|given that|provided that|suppose|whenever|edge cases?)\b",
    re.IGNORECASE,
)
_CODE_BLOCK = re.compile(r"```")
# Verbs asking for work to be produced: each is a part of the task; the heavy ones (a proof,
# a design, an implementation) count twice.
_TASK_VERB = re.compile(
    r"\b(?:analy[sz]e|explain|compare|evaluate|calculate|compute|justify|list|summari[sz]e|"
    r"outline|critique|estimate|plan|debug|write|solve|show|describe|discuss|recommend|"
    r"identify|assess|propose)\b",
    re.IGNORECASE,
)
_HEAVY_VERB = re.compile(
    r"\b(?:prove|derive|design|implement|architect|optimi[sz]e|refactor|formali[sz]e)\b",
    re.IGNORECASE,
)
_COMMA = re.compile(r",\s")


@dataclass(frozen=True, slots=True)
class Structure:
    questions: int
    joiners: int
    list_items: int
    conditions: int
    code_blocks: int
    task_verbs: int
    heavy_verbs: int
    commas: int

    @property
    def depth(self) -> int:
        parts = (
            1
            + max(self.questions - 1, 0)
            + self.joiners
            + self.list_items
            + min(self.conditions, 2)
            + self.code_blocks
            + self.task_verbs
            + 2 * self.heavy_verbs
            # An inline enumeration ("cover the model, retries, limits and tests") is parts too.
            + min(self.commas, 6) // 2
        )
        return min(parts, _MAX_DEPTH)


def measure_depth(text: str) -> Structure:
    # Structure lives in the words, not in pasted data: look at a bounded prefix.
    sample = text[:4000]
    return Structure(
        questions=len(_QUESTION.findall(sample)),
        joiners=len(_JOINER.findall(sample)),
        list_items=min(len(_LIST_ITEM.findall(sample)), 6),
        conditions=len(_CONDITION.findall(sample)),
        code_blocks=len(_CODE_BLOCK.findall(sample)) // 2,
        task_verbs=len({m.lower() for m in _TASK_VERB.findall(sample)}),
        heavy_verbs=len({m.lower() for m in _HEAVY_VERB.findall(sample)}),
        commas=len(_COMMA.findall(sample)),
    )


def _band(value: int, thresholds: tuple[int, int]) -> int:
    return 0 if value < thresholds[0] else 1 if value < thresholds[1] else 2


def tier_for(tokens: int, depth: int, settings: ComplexitySettings) -> str:
    token_band = _band(tokens, settings.token_thresholds)
    depth_band = _band(depth, settings.depth_thresholds)
    if depth <= settings.depth_thresholds[0]:
        # One ask (one task verb) about a long pasted text is moderate work, not complex.
        token_band = min(token_band, 1)
    return TIERS[max(depth_band, token_band)]


def evaluate(
    text: str,
    pools: Sequence[PoolSettings],
    settings: ComplexitySettings,
    count_tokens: Callable[[str], int],
) -> SignalResult:
    started = time.perf_counter()
    if not text.strip():
        return abstain("complexity", "empty prompt")
    # Tokenising megabytes costs more than it tells: count a prefix, scale by characters.
    head = text[:4000]
    tokens = count_tokens(head)
    if len(text) > len(head):
        tokens = int(tokens * len(text) / len(head))
    structure = measure_depth(text)
    tier = tier_for(tokens, structure.depth, settings)
    evidence = {"tier": tier, "tokens": tokens, "depth": structure.depth}
    elapsed = (time.perf_counter() - started) * 1000
    return SignalResult("complexity", tier_scores(pools, tier), evidence, elapsed)
