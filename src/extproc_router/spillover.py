"""Load-aware choice among the pools a request may go to: the decision's pool while it has
room, else the next-best allowed one, else a clear 503 — never a quieter policy.

The decision ranks the pools (its own pool first, then by the vote's scores, then in config
order); a pool above its soft queue limit loses up to `load.penalty` of its score (more the
nearer it is to the hard limit), and one at the hard limit or with no endpoint up is skipped.
Which pools are *allowed* is the caller's business and never widened here: the pools the domain
floor did not exclude, only compliant pools for PII the policy routes, only the hardened pool
for a suspected jailbreak. A request that names its model is never moved.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from extproc_router.exceptions import RequestError
from extproc_router.pool_load import PoolLoad
from extproc_router.routing import Decision
from extproc_router.settings import LoadSettings, PoolSettings

__all__ = [
    "Spillover",
    "allowed_pools",
    "apply_load",
    "failed_over",
    "fallback_pool",
    "ranked",
]


@dataclass(frozen=True, slots=True)
class Spillover:
    from_pool: str
    to_pool: str
    # What made the preferred pool lose: `waiting=37`, `down`, `unknown`.
    cause: str

    def text(self) -> str:
        return f"spillover: {self.from_pool}\u2192{self.to_pool}, {self.cause}"

    def compact(self) -> str:
        """For the ASCII `x-router-decision` header."""
        return f"{self.from_pool}->{self.to_pool},{self.cause}"


def allowed_pools(decision: Decision, pools: Sequence[PoolSettings]) -> list[PoolSettings]:
    """The decision's pool, and every pool no signal excluded (the domain capability floor)."""
    excluded: set[str] = set()
    for signal in decision.signals:
        excluded |= signal.excluded
    return [p for p in pools if p.name == decision.pool.name or p.name not in excluded]


def ranked(decision: Decision, candidates: Sequence[PoolSettings]) -> list[PoolSettings]:
    """The decision's pool first, then by score, ties (and unscored pools) in config order."""
    others = [p for p in candidates if p.name != decision.pool.name]
    others.sort(key=lambda p: -decision.scores.get(p.name, 0.0))
    first = [p for p in candidates if p.name == decision.pool.name]
    return first + others


def apply_load(
    decision: Decision,
    candidates: Sequence[PoolSettings],
    view: Mapping[str, PoolLoad],
    settings: LoadSettings,
) -> Decision:
    """The decision, moved to another of `candidates` if its pool's load says so, with the
    load of every candidate as evidence. Raises a 503 RequestError (with `retry-after`) when
    every candidate is full or down."""
    order = ranked(decision, candidates)
    loads = {p.name: view.get(p.name) or PoolLoad(p.name, "unmonitored") for p in order}
    evidence = {name: load.evidence() for name, load in loads.items()}
    top = max(decision.scores.values(), default=0.0)

    def effective(pool: PoolSettings) -> float:
        score = decision.scores.get(pool.name, 0.0)
        # The decision's own pool keeps its lead while it has room, even where the vote's
        # runner-up scored higher (a fallback pool, a keyword rule's target).
        base = max(top, score) if pool.name == decision.pool.name else score
        return base - settings.penalty * loads[pool.name].pressure

    eligible = [p for p in order if not loads[p.name].skipped]
    if not eligible:
        raise _unavailable(order, loads, settings)
    # max() keeps the first of equals: ties go to the decision's pool, then the ranking.
    best = max(eligible, key=effective)
    if best.name == decision.pool.name:
        return dataclasses.replace(decision, load=evidence)
    spill = Spillover(decision.pool.name, best.name, loads[decision.pool.name].brief())
    return dataclasses.replace(
        decision,
        pool=best,
        reason=f"{decision.reason}; {spill.text()}",
        spillover=spill,
        load=evidence,
    )


def fallback_pool(
    decision: Decision,
    candidates: Sequence[PoolSettings],
    view: Mapping[str, PoolLoad],
    admits: Callable[[PoolSettings], bool],
) -> PoolSettings | None:
    """The best-ranked other candidate that answers to the decision's model name, is not full
    or down, and `admits` the request as prepared (its PII policy is the same): where Envoy
    sends it if the decision's pool drops it. None leaves Envoy only the pool's own retries."""
    for pool in ranked(decision, candidates):
        if pool.name == decision.pool.name or decision.pool.model not in pool.accepts:
            continue
        load = view.get(pool.name)
        if (load is None or not load.skipped) and admits(pool):
            return pool
    return None


def failed_over(decision: Decision, served_by: str) -> Decision | None:
    """The decision as it turned out when Envoy failed it over (`served_by`: the pool whose
    endpoint answered, from the response), else None. Only the named fallback counts."""
    fallback = decision.fallback
    if fallback is None or served_by != fallback.name:
        return None
    spill = Spillover(decision.pool.name, fallback.name, "envoy_failover")
    return dataclasses.replace(
        decision,
        pool=fallback,
        fallback=None,
        reason=f"{decision.reason}; {spill.text()}",
        spillover=spill,
    )


def _unavailable(
    order: Sequence[PoolSettings], loads: Mapping[str, PoolLoad], settings: LoadSettings
) -> RequestError:
    states = ", ".join(f"{p.name}: {loads[p.name].brief()}" for p in order)
    return RequestError(
        f"no pool this request may go to has room now ({states}); "
        f"retry after {settings.retry_after_s} s",
        status=503,
        code="pools_unavailable",
        error_type="server_error",
        headers={"retry-after": str(settings.retry_after_s)},
    )
