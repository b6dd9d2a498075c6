"""Domain: which of the 14 MMLU-Pro subjects a prompt is about, and how able each pool is there.

The score of a pool is its capability averaged over the predicted domain distribution, relative
to the best pool for each domain, so a pool that is nearly as good as the best still scores
nearly 1 and the cheaper pool can win the vote. A pool below the configured floor for a
confidently predicted domain is excluded outright.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from extproc_router.encoder import Embeddings
from extproc_router.heads import LinearHead
from extproc_router.settings import DomainSettings, PoolSettings
from extproc_router.signals.base import SignalResult

__all__ = ["DomainSignal"]

_NEUTRAL = 0.75  # capability of a pool the table says nothing about


class DomainSignal:
    def __init__(
        self, head: LinearHead, settings: DomainSettings, pools: Sequence[PoolSettings]
    ) -> None:
        self.head = head
        self._settings = settings
        self._names = [pool.name for pool in pools]
        table = np.array(
            [[self._capability(pool.name, domain) for domain in head.labels] for pool in pools],
            dtype=np.float32,
        )  # (pools, domains)
        self._capabilities = table
        self._relative = table / np.maximum(table.max(axis=0, keepdims=True), 1e-9)

    def _capability(self, pool: str, domain: str) -> float:
        row = self._settings.capabilities.get(pool, {})
        return row.get(domain, row.get("default", _NEUTRAL))

    def evaluate(self, embedding: Embeddings, pools: Sequence[PoolSettings]) -> SignalResult:
        started = time.perf_counter()
        probabilities = self.head.probabilities(embedding[None, :])[0]
        scores = self._relative @ probabilities
        order = np.argsort(-probabilities)
        top = int(order[0])
        excluded: set[str] = set()
        if probabilities[top] >= self._settings.floor_min_probability:
            for row, name in enumerate(self._names):
                if self._capabilities[row, top] < self._settings.floor:
                    excluded.add(name)
        evidence = {
            "top": [[self.head.labels[i], round(float(probabilities[i]), 3)] for i in order[:3]],
            **({"below_floor": sorted(excluded)} if excluded else {}),
        }
        elapsed = (time.perf_counter() - started) * 1000
        return SignalResult(
            "domain",
            {name: round(float(s), 4) for name, s in zip(self._names, scores, strict=True)},
            evidence,
            elapsed,
            frozenset(excluded),
        )
