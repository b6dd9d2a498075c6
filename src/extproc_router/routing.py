"""The routing decision: which pool answers a parsed request, and a record of why.

Knows nothing of Envoy or protobuf. Order of work, cheapest first: an explicit model decides at
once; a short-circuit keyword rule decides before any model runs; otherwise the prompt is
embedded once and every signal reads that one embedding, and a weighted vote picks the pool.

The vote: score[pool] = Σ weight[signal] × signal[pool] / Σ weight[signal], over the signals that
did not abstain (an abstaining signal neither votes nor dilutes the others). Confidence is half
the winning score plus half its lead over the runner-up (a lead of 0.25 or more counts in full),
so a clear winner with middling scores and a high score with a near-tie both land mid-range.
Below `confidence_threshold` the request goes to the fallback pool. Ties go to the pool listed
first (the cheapest, by convention), so every decision is deterministic.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from extproc_router.batching import Batcher
from extproc_router.encoder import Embeddings
from extproc_router.exceptions import RequestError
from extproc_router.failures import guard, guard_async
from extproc_router.models import Models, ModelSignals
from extproc_router.request import ParsedRequest
from extproc_router.settings import PoolSettings, Settings, failover_cluster
from extproc_router.signals import complexity
from extproc_router.signals.base import SignalResult
from extproc_router.signals.keyword import KeywordMatcher
from extproc_router.tracing import stage

if TYPE_CHECKING:
    from extproc_router.spillover import Spillover

__all__ = ["Decision", "Router", "vote"]

_FULL_LEAD = 0.25
_EMBEDDING_SIGNALS = frozenset({"embedding", "domain", "preference"})
_HEADER_LIMIT = 512


@dataclass(frozen=True, slots=True)
class Decision:
    pool: PoolSettings
    # "model" (named in the request), "keyword" (short circuit), "vote", "fallback".
    method: str
    reason: str
    confidence: float | None = None
    scores: Mapping[str, float] = field(default_factory=dict)
    signals: tuple[SignalResult, ...] = ()
    latency_ms: float = 0.0
    # Which embedding fed the signals: "static" (the cascade's cheap stage decided) or
    # "transformer"; empty when no model ran.
    stage: str = ""
    # Set when the preferred pool's load moved the request (load-aware routing), with the
    # load of every pool that was considered.
    spillover: Spillover | None = None
    load: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # Where Envoy sends it if `pool` drops it mid-flight or has no healthy endpoint: a pool
    # that accepts `pool`'s model name and may take this request too.
    fallback: PoolSettings | None = None

    @property
    def cluster(self) -> str:
        """The cluster header's value: the pool's own cluster, or its failover cluster."""
        if self.fallback is None:
            return self.pool.name
        return failover_cluster(self.pool.name, self.fallback.name)

    @property
    def model(self) -> str:
        """The model name the chosen pool serves, written into the forwarded body."""
        return self.pool.model

    def explanation(self) -> dict[str, Any]:
        """The full record: every signal's scores, evidence and latency."""
        return {
            "pool": self.pool.name,
            "model": self.model,
            "method": self.method,
            "reason": self.reason,
            "confidence": self.confidence,
            "stage": self.stage or None,
            "scores": dict(self.scores),
            "latency_ms": round(self.latency_ms, 3),
            "signals": {
                s.name: {
                    "scores": dict(s.scores),
                    "evidence": dict(s.evidence),
                    "latency_ms": round(s.latency_ms, 3),
                    **({"excluded": sorted(s.excluded)} if s.excluded else {}),
                }
                for s in self.signals
            },
            **(
                {"load": {name: dict(load) for name, load in self.load.items()}}
                if self.load
                else {}
            ),
            **({"spillover": self.spillover.text()} if self.spillover else {}),
            **({"fallback": self.fallback.name} if self.fallback else {}),
        }

    def header(self) -> str:
        """The compact form for the `x-router-decision` response header (ASCII, one line)."""
        parts = [f"pool={self.pool.name}", f"method={self.method}"]
        if self.confidence is not None:
            parts.append(f"confidence={self.confidence:.2f}")
        if self.stage:
            parts.append(f"stage={self.stage}")
        if self.spillover is not None:
            parts.append(f"spillover={self.spillover.compact()}")
        if self.fallback is not None:
            parts.append(f"fallback={self.fallback.name}")
        for signal in self.signals:
            parts.append(f"{signal.name}={_brief(signal)}")
        text = "; ".join(parts)
        return text.encode("ascii", "replace").decode()[:_HEADER_LIMIT]


def _brief(signal: SignalResult) -> str:
    evidence = signal.evidence
    if "error" in evidence:
        return "error"
    if signal.abstained:
        return "-"
    if signal.name == "keyword":
        return str(evidence["rule"])
    if signal.name == "embedding":
        return f"{evidence['route']}:{evidence['similarity']:.2f}"
    if signal.name == "domain":
        label, probability = evidence["top"][0]
        return f"{label}:{probability:.2f}"
    if signal.name == "complexity":
        return f"{evidence['tier']}({evidence['tokens']}t,d{evidence['depth']})"
    if signal.name == "preference":
        return f"{evidence['preference']}:{evidence['probability']:.2f}"
    return "+"


def vote(
    results: Sequence[SignalResult],
    weights: Mapping[str, float],
    pools: Sequence[PoolSettings],
) -> tuple[dict[str, float], set[str]]:
    """Weighted mean of the voting signals' scores, and the pools some signal excluded."""
    totals = dict.fromkeys((pool.name for pool in pools), 0.0)
    weight_sum = 0.0
    excluded: set[str] = set()
    for result in results:
        excluded |= result.excluded
        weight = weights.get(result.name, 0.0)
        if result.abstained or weight == 0:
            continue
        weight_sum += weight
        for name in totals:
            totals[name] += weight * result.scores.get(name, 0.0)
    if weight_sum == 0:
        return {}, excluded
    return {name: round(total / weight_sum, 4) for name, total in totals.items()}, excluded


def _confidence(ranked: list[tuple[str, float]]) -> float:
    top = ranked[0][1]
    lead = top - ranked[1][1] if len(ranked) > 1 else top
    return round(0.5 * top + 0.5 * min(1.0, lead / _FULL_LEAD), 4)


class Router:
    def __init__(self, settings: Settings, models: Models | None = None) -> None:
        self.settings = settings
        self.models = models
        self._pools = settings.pools
        self._auto = frozenset(settings.routing.auto_models)
        self._by_model = {model: pool for pool in self._pools for model in pool.served_models}
        self._keywords = KeywordMatcher(settings.routing.keyword_rules)
        self._signals = models.signals(settings) if models is not None else None
        self._static = models.static if models is not None else None
        self._batcher = (
            Batcher(models.encoder.embed, max_batch=models.settings.max_batch)
            if models is not None
            else None
        )
        self._static_signals = models.static_signals(settings) if models is not None else None
        self._on_error = settings.on_error
        # The last text's complexity: a request the cascade's cheap stage was unsure of asks
        # again for the transformer's vote (replacing the tuple is atomic).
        self._last_complexity: tuple[str, SignalResult] | None = None

    def _signal(self, name: str, run: Callable[[], SignalResult]) -> SignalResult:
        """A signal that fails abstains, with the error as its evidence (or the request gets a
        503, as `on_error` says)."""
        with stage(f"router.signal.{name}"):
            return guard(
                name,
                self._on_error,
                run,
                lambda error: SignalResult(name, {}, {"abstained": "failed", "error": error}),
            )

    @property
    def known_models(self) -> list[str]:
        return sorted([*self._auto, *self._by_model])

    def classification_text(self, request: ParsedRequest) -> str:
        """The last user turn first (the encoder keeps the start of long text), then the system
        prompt and earlier turns when the config asks for them."""
        routing = self.settings.routing
        parts = [request.prompt]
        if routing.include_system_prompt and request.system:
            parts.append(request.system)
        if routing.context_chars and request.context:
            parts.append(request.context[-routing.context_chars :])
        return "\n".join(parts)

    async def embed(self, text: str) -> Embeddings | None:
        """The one MiniLM inference a request gets, off the event loop; None without models or
        text."""
        batcher = self._batcher
        if batcher is None or not text.strip():
            return None

        async def run() -> Embeddings | None:
            return await batcher.embed(text)

        return await guard_async("encoder", self._on_error, run, lambda _error: None)

    def plan(self, request: ParsedRequest) -> tuple[Decision | None, SignalResult]:
        """What can be decided without any model: a named model, or a short-circuit keyword
        rule. The decision is None when the signals (and so the embedding) are needed; the
        keyword result is kept for them."""
        started = time.perf_counter()
        if request.model is not None and request.model not in self._auto:
            pool = self._by_model.get(request.model)
            if pool is None:
                raise RequestError(
                    f"the model {request.model!r} does not exist; available models: "
                    + ", ".join(self.known_models),
                    status=404,
                    code="model_not_found",
                    param="model",
                )
            reason = f"model {request.model!r} is served by {pool.name}"
            empty = SignalResult("keyword", {})
            return Decision(pool, "model", reason, latency_ms=_since(started)), empty
        text = self.classification_text(request)
        keyword = self._signal("keyword", lambda: self._keywords.evaluate(text, self._pools))
        if not keyword.abstained and keyword.evidence["short_circuit"]:
            pool = max(self._pools, key=lambda p: keyword.scores[p.name])
            reason = f"keyword rule {keyword.evidence['rule']!r} decides at once"
            decision = Decision(
                pool, "keyword", reason, 1.0, keyword.scores, (keyword,), _since(started)
            )
            return decision, keyword
        return None, keyword

    def needs_embedding(self, planned: Decision | None, request: ParsedRequest) -> bool:
        return (
            planned is None
            and self.models is not None
            and bool(self.classification_text(request).strip())
        )

    def decide_static(
        self, request: ParsedRequest, planned: tuple[Decision | None, SignalResult]
    ) -> Decision | None:
        """The cascade's cheap stage: the signals on the static embedding. The decision when
        its vote is at least `model.cascade_confidence` sure, else None (the transformer's
        turn)."""
        threshold = self.models.settings.cascade_confidence if self.models else None
        if self._static is None or self._static_signals is None or threshold is None:
            return None
        started = time.perf_counter()
        text = self.classification_text(request)
        if not text.strip():
            return None
        encoder = self._static.encoder
        with stage("router.embed.static"):
            embedding = guard(
                "encoder", self._on_error, lambda: encoder.embed([text])[0], lambda _error: None
            )
        if embedding is None:
            return None
        results = [
            planned[1],
            self._complexity(text),
            *self._embedding_signals(text, embedding, self._static_signals),
        ]
        decision = self._elect(results, started)
        if decision.method != "vote" or (decision.confidence or 0.0) < threshold:
            return None
        return dataclasses.replace(decision, stage="static")

    async def decide(
        self,
        request: ParsedRequest,
        *,
        embedding: Embeddings | None = None,
        planned: tuple[Decision | None, SignalResult] | None = None,
    ) -> Decision:
        """`embedding`: the classification text's, when the caller already has it; `planned`:
        what `plan` said, when the caller already asked."""
        started = time.perf_counter()
        decision, keyword = planned or self.plan(request)
        if decision is not None:
            return decision
        text = self.classification_text(request)
        results = [keyword, *(await self._model_signals(text, embedding))]
        decision = self._elect(results, started)
        ran_model = any(r.name in _EMBEDDING_SIGNALS for r in results)
        return dataclasses.replace(decision, stage="transformer") if ran_model else decision

    async def _model_signals(self, text: str, embedding: Embeddings | None) -> list[SignalResult]:
        results = [self._complexity(text)]
        if self._signals is None or not text.strip():
            return results
        if embedding is None:
            embedding = await self.embed(text)
        if embedding is None:
            return results
        return [*results, *self._embedding_signals(text, embedding, self._signals)]

    def _complexity(self, text: str) -> SignalResult:
        """Real tokens with the models loaded, words without them."""
        last = self._last_complexity
        if last is not None and last[0] == text:
            return last[1]
        count = self.models.encoder.count_tokens if self.models else (lambda t: len(t.split()))
        config = self.settings.routing.complexity
        result = self._signal(
            "complexity", lambda: complexity.evaluate(text, self._pools, config, count)
        )
        self._last_complexity = (text, result)
        return result

    def _embedding_signals(
        self, text: str, embedding: Embeddings, signals: ModelSignals
    ) -> list[SignalResult]:
        pools = self._pools
        results = []
        routes = signals.routes
        if routes is not None:
            results.append(self._signal("embedding", lambda: routes.evaluate(embedding, pools)))
        results.append(self._signal("domain", lambda: signals.domain.evaluate(embedding, pools)))
        results.append(
            self._signal("preference", lambda: signals.preference.evaluate(embedding, text, pools))
        )
        return results

    def _elect(self, results: list[SignalResult], started: float) -> Decision:
        routing = self.settings.routing
        scores, excluded = vote(results, routing.weights, self._pools)
        fallback = self.settings.fallback_pool
        if not scores:
            return Decision(
                fallback, "fallback", "no signal voted", None, {}, tuple(results), _since(started)
            )
        allowed = [p for p in self._pools if p.name not in excluded] or list(self._pools)
        ranked = sorted(((p.name, scores[p.name]) for p in allowed), key=lambda item: -item[1])
        confidence = _confidence(ranked)
        winner = self.settings.pool(ranked[0][0])
        if confidence < routing.confidence_threshold and fallback.name not in excluded:
            reason = (
                f"confidence {confidence:.2f} < {routing.confidence_threshold:.2f} "
                f"(best {winner.name} {ranked[0][1]:.2f}); fallback pool"
            )
            return Decision(
                fallback, "fallback", reason, confidence, scores, tuple(results), _since(started)
            )
        reason = f"vote: {winner.name} {ranked[0][1]:.2f}"
        if len(ranked) > 1:
            reason += f" over {ranked[1][0]} {ranked[1][1]:.2f}"
        if excluded:
            reason += f"; excluded {', '.join(sorted(excluded))} (domain floor)"
        return Decision(winner, "vote", reason, confidence, scores, tuple(results), _since(started))


def _since(started: float) -> float:
    return (time.perf_counter() - started) * 1000
