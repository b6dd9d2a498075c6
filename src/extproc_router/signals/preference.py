"""Preference: what kind of work is asked for (creative, factual, analytical, code), from a head
on the shared embedding plus cues a head can miss (a code fence, "write a poem").

The reference design asks an external LLM for this on every request; a local head costs
microseconds.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence

import numpy as np

from extproc_router.encoder import Embeddings
from extproc_router.heads import LinearHead
from extproc_router.settings import PoolSettings
from extproc_router.signals.base import SignalResult, abstain, target_scores

__all__ = ["PreferenceSignal", "cue"]

_CUES = {
    "code": re.compile(
        r"```|\b(?:def|class|import|return|function|const|var|SELECT|FROM|WHERE)\b.*[(){};=]|"
        r"Traceback|Exception|stack trace|\bregex\b|\bSQL\b|\bbash\b",
        re.IGNORECASE,
    ),
    "creative": re.compile(
        r"\b(?:write|compose|make up|come up with)\b[^.?!]{0,40}\b(?:poem|haiku|limerick|"
        r"sonnet|story|song|lyrics|verse|rap|toast|joke|slogan|tagline|fable|screenplay)s?\b",
        re.IGNORECASE,
    ),
}
_CUE_WEIGHT = 0.35


def cue(text: str) -> str | None:
    for label, pattern in _CUES.items():
        if pattern.search(text[:4000]):
            return label
    return None


class PreferenceSignal:
    def __init__(self, head: LinearHead, targets: Mapping[str, str]) -> None:
        self.head = head
        self._targets = dict(targets)

    def evaluate(
        self, embedding: Embeddings, text: str, pools: Sequence[PoolSettings]
    ) -> SignalResult:
        started = time.perf_counter()
        if not self._targets:
            return abstain("preference", "no preference targets configured")
        probabilities = self.head.probabilities(embedding[None, :])[0]
        found = cue(text)
        if found is not None:
            boost = np.array([label == found for label in self.head.labels], np.float32)
            probabilities = (1 - _CUE_WEIGHT) * probabilities + _CUE_WEIGHT * boost
        scores = dict.fromkeys((pool.name for pool in pools), 0.0)
        covered = 0.0
        for label, probability in zip(self.head.labels, probabilities, strict=True):
            target = self._targets.get(label)
            if target is None:
                continue
            covered += float(probability)
            for name, score in target_scores(pools, target).items():
                scores[name] += float(probability) * score
        top = int(np.argmax(probabilities))
        evidence = {
            "preference": self.head.labels[top],
            "probability": round(float(probabilities[top]), 3),
            **({"cue": found} if found else {}),
        }
        elapsed = (time.perf_counter() - started) * 1000
        if covered == 0:
            return abstain("preference", f"{self.head.labels[top]} has no target", elapsed)
        return SignalResult(
            "preference", {k: round(v / covered, 4) for k, v in scores.items()}, evidence, elapsed
        )
