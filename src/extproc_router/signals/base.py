"""What every signal returns, and how a target (a pool or a tier) turns into per-pool scores."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from extproc_router.settings import TIERS, PoolSettings

__all__ = ["SignalResult", "abstain", "target_scores", "tier_scores"]

# How well a pool of tier t suits a request of tier r, by t - r: a pool one tier too strong
# still answers well (it only costs more); one too weak often does not.
_TIER_FIT = {0: 1.0, 1: 0.6, 2: 0.35, -1: 0.25, -2: 0.05}


@dataclass(frozen=True, slots=True)
class SignalResult:
    name: str
    # Suitability of each pool in [0, 1]; empty when the signal abstains.
    scores: Mapping[str, float]
    # What the signal saw, for the explanation (matched rule, nearest route, top domains...).
    evidence: Mapping[str, Any] = field(default_factory=dict)
    latency_ms: float = 0.0
    # Pools this signal rules out whatever the vote says (the domain capability floor).
    excluded: frozenset[str] = frozenset()

    @property
    def abstained(self) -> bool:
        return not self.scores


def abstain(name: str, reason: str, latency_ms: float = 0.0) -> SignalResult:
    return SignalResult(name, {}, {"abstained": reason}, latency_ms)


def tier_scores(pools: Sequence[PoolSettings], tier: str) -> dict[str, float]:
    wanted = TIERS.index(tier)
    return {pool.name: _TIER_FIT[TIERS.index(pool.tier) - wanted] for pool in pools}


def target_scores(pools: Sequence[PoolSettings], target: str) -> dict[str, float]:
    """A tier scores every pool by fit; a pool name scores that pool 1 and the others by how
    close their tier is to its tier."""
    if target in TIERS:
        return tier_scores(pools, target)
    named = next(pool for pool in pools if pool.name == target)
    scores = tier_scores(pools, named.tier)
    # Another pool of the same tier fits as well, but the config named this one.
    return {name: 1.0 if name == target else min(score, 0.9) for name, score in scores.items()}
