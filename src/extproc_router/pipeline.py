"""One request's way through the router: parsed request -> safety -> signals -> decision ->
PII policy -> what to send on. No Envoy and no protobuf here; the ext_proc processor and the
RouterService both call `Pipeline.run`, so grpcurl shows exactly what traffic gets.

The prompt is embedded once at most, and that embedding serves every routing signal; the
jailbreak check has its own fine-tuned transformer, asked only about text its n-gram screen is
unsure of. A blocked request raises `RequestError` (the client gets the JSON error, no pool sees
the request) and still leaves an audit record.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from extproc_router.audit import AuditLog
from extproc_router.cache import Lookup, SemanticCache
from extproc_router.encoder import Embeddings
from extproc_router.exceptions import RequestError
from extproc_router.failures import guard_async
from extproc_router.pool_load import LoadBoard, PoolLoad
from extproc_router.request import ParsedRequest
from extproc_router.routing import Decision, Router
from extproc_router.safety.gate import JailbreakVerdict, PIIVerdict, Safety, same_pii_policy
from extproc_router.settings import PoolSettings
from extproc_router.spillover import allowed_pools, apply_load, fallback_pool
from extproc_router.tracing import stage

if TYPE_CHECKING:
    from extproc_router.shadow import Shadow

__all__ = ["Outcome", "Pipeline"]

_INLINE_SCAN_BYTES = 16_384


@dataclass(frozen=True, slots=True)
class Outcome:
    decision: Decision
    # True when the body must be sent on re-encoded (a new `model`, or redacted PII).
    body_changed: bool
    jailbreak: JailbreakVerdict
    pii: PIIVerdict
    # The one MiniLM inference every model-based stage shares.
    embed_ms: float = 0.0
    # A cacheable request's cache lookup (with the answer on a hit); None: not cacheable.
    cache: Lookup | None = None

    @property
    def flagged(self) -> bool:
        return self.jailbreak.action == "flag"

    def explanation(self) -> dict[str, Any]:
        return {
            **self.decision.explanation(),
            "embed_ms": round(self.embed_ms, 3),
            "safety": {"jailbreak": self.jailbreak.evidence(), "pii": self.pii.evidence()},
        }


class Pipeline:
    def __init__(
        self,
        router: Router,
        safety: Safety,
        audit: AuditLog,
        load: LoadBoard | None = None,
        *,
        cache: SemanticCache | None = None,
        shadow: Shadow | None = None,
    ) -> None:
        """`load`: the pools' latest load readings, for load-aware routing (`load.enabled`)."""
        self.router = router
        self.safety = safety
        self.audit = audit
        self.load = load
        self.cache = cache
        # Read by the ext_proc processor: which routed requests Envoy also mirrors.
        self.shadow = shadow

    async def run(
        self,
        request: ParsedRequest,
        decision_id: str,
        *,
        dry_run: bool = False,
        received: float | None = None,
    ) -> Outcome:
        """`dry_run`: decide and explain, but leave no audit record (nothing is forwarded).
        `received`: when the body arrived (`time.monotonic()`); the request budget counts from
        there, as Envoy's message timeout does, so parsing a large body is inside it."""
        started = time.perf_counter()
        settings = self.router.settings
        deadline = (received or time.monotonic()) + settings.request_budget_s
        router = self.router
        planned = router.plan(request)
        embedding: Embeddings | None = None
        embed_ms = 0.0

        async def embed() -> Embeddings | None:
            nonlocal embed_ms
            embed_started = time.perf_counter()
            with stage("router.embed"):
                result = await router.embed(router.classification_text(request))
            embed_ms = (time.perf_counter() - embed_started) * 1000
            return result

        # No transformer at all when routing does not need it (a named model, a keyword fast
        # path, a confident static-embedding vote) and the jailbreak screen finds the text
        # clearly benign; the jailbreak transformer runs only on text the screen is unsure of.
        cheap = router.decide_static(request, planned) if planned[0] is None else None
        needs_embedding = cheap is None and router.needs_embedding(planned[0], request)

        async def check() -> JailbreakVerdict:
            verdict = self.safety.jailbreak_screen(request)
            if verdict is None:
                verdict = await asyncio.to_thread(self.safety.jailbreak, request, screened=True)
            return verdict

        with stage("router.safety.jailbreak"):
            jailbreak = await guard_async(
                "jailbreak",
                settings.on_error,
                check,
                lambda error: JailbreakVerdict(0.0, "allow", family="unchecked", matched=error),
            )
        audit = functools.partial(
            _no_record if dry_run else self.audit.record,
            decision_id,
            request=request,
            jailbreak=jailbreak,
        )
        if jailbreak.action == "block":
            audit("blocked_jailbreak")
            raise RequestError(
                "the request was blocked by the content policy (prompt injection or jailbreak)",
                status=400,
                code="content_policy_violation",
            )
        with stage("router.decide"):
            if cheap is not None:
                decision = cheap
            else:
                embedding = await embed() if needs_embedding else None
                decision = await router.decide(request, embedding=embedding, planned=planned)
        if jailbreak.action == "route" and settings.safety.jailbreak.route_pool is not None:
            pool = settings.pool(settings.safety.jailbreak.route_pool)
            decision = dataclasses.replace(
                decision,
                pool=pool,
                method="safety",
                reason=f"jailbreak score "
                f"{jailbreak.score:.2f}: hardened pool {pool.name}; was {decision.reason}",
            )
        candidates = (
            [decision.pool]  # the hardened pool, or nothing
            if decision.method == "safety"
            else allowed_pools(decision, settings.pools)
        )
        # One snapshot of the pools' load per request: spillover and fallback agree on it.
        view = self._load_view()
        decision = self._balance(decision, candidates, audit, view)
        decision, pii, redacted = await self._pii(request, decision, audit, deadline, view=view)
        decision = self._with_fallback(decision, pii, view)
        cached = None
        if self.cache is not None and not dry_run:
            cached = await self.cache.lookup(
                request, decision, pii, jailbreak, router=router, embedding=embedding
            )
        hit = cached is not None and cached.hit is not None
        audit("cache_hit" if hit else "forwarded", decision=decision, pii=pii)
        elapsed = (time.perf_counter() - started) * 1000
        decision = dataclasses.replace(decision, latency_ms=elapsed)
        body_changed = redacted or request.model != decision.model
        return Outcome(decision, body_changed, jailbreak, pii, embed_ms, cached)

    async def _pii(
        self,
        request: ParsedRequest,
        decision: Decision,
        audit: Callable[..., None],
        deadline: float,
        *,
        view: Mapping[str, PoolLoad] | None,
    ) -> tuple[Decision, PIIVerdict, bool]:
        """The PII policy for the pool chosen: redact in place, move to a compliant pool, or
        refuse."""
        scan = functools.partial(
            self.safety.pii,
            request.body,
            decision.pool.name,
            decision.pool.compliant,
            deadline,
        )
        # Megabytes of text take a while to scan: off the event loop, so other streams go on.
        # A short prompt scans in microseconds, less than the hop to a thread would cost.
        large = request.size > _INLINE_SCAN_BYTES

        async def run() -> tuple[PIIVerdict, bool]:
            return await asyncio.to_thread(scan) if large else scan()

        with stage("router.safety.pii"):
            pii, redacted = await guard_async(
                "pii",
                self.router.settings.on_error,
                run,
                lambda error: (PIIVerdict({}, "allow", {"unchecked": [error]}), False),
            )
        if pii.action == "block":
            audit("blocked_pii", decision=decision, pii=pii)
            raise RequestError(
                "the request carries personal data ("
                + ", ".join(sorted(pii.counts))
                + f") that the policy does not allow for pool {decision.pool.name}",
                status=400,
                code="pii_policy_violation",
            )
        if pii.action == "route":
            decision, pii, redacted = self._route_to_compliant(
                request, decision, pii, deadline, audit, view=view
            )
            if pii.action == "block":
                audit("blocked_pii", decision=decision, pii=pii)
                raise RequestError(
                    "the request carries personal data that no compliant pool may receive",
                    status=400,
                    code="pii_policy_violation",
                )
        return decision, pii, redacted

    def _route_to_compliant(
        self,
        request: ParsedRequest,
        decision: Decision,
        pii: PIIVerdict,
        deadline: float,
        audit: Callable[..., None],
        *,
        view: Mapping[str, PoolLoad] | None,
    ) -> tuple[Decision, PIIVerdict, bool]:
        """The best-scoring compliant pool (the vote's order, else config order); with
        load-aware routing, the best of those with room — never a non-compliant one."""
        pools = self.router.settings.pools
        compliant = sorted(
            (p for p in pools if p.compliant), key=lambda p: -decision.scores.get(p.name, 0.0)
        )
        kinds = ", ".join(sorted(pii.counts))
        reason = f"PII ({kinds}) goes to compliant pools only; was {decision.pool.name}"
        decision = dataclasses.replace(
            decision, pool=compliant[0], method="pii", reason=reason, spillover=None
        )
        candidates = [p for p in allowed_pools(decision, pools) if p.compliant]
        decision = self._balance(decision, candidates, audit, view)
        verdict, redacted = self.safety.pii(request.body, decision.pool.name, True, deadline)
        return decision, verdict, redacted

    def _load_view(self) -> dict[str, PoolLoad] | None:
        """Every pool's load now; None when load-aware routing is off."""
        settings = self.router.settings
        if self.load is None or not settings.load.enabled:
            return None
        return self.load.view(settings)

    def _balance(
        self,
        decision: Decision,
        candidates: list[PoolSettings],
        audit: Callable[..., None],
        view: Mapping[str, PoolLoad] | None,
    ) -> Decision:
        """Load-aware routing among `candidates` (the pools this request may go to). A named
        model is never moved; nothing allowed with room left is a 503 with retry-after."""
        if view is None or decision.method == "model":
            return decision
        try:
            return apply_load(decision, candidates, view, self.router.settings.load)
        except RequestError:
            audit("pools_unavailable", decision=decision)
            raise

    def _with_fallback(
        self, decision: Decision, pii: PIIVerdict, view: Mapping[str, PoolLoad] | None
    ) -> Decision:
        """Names the pool Envoy fails over to, among those this request may go to: none for
        a named model or the hardened pool, only compliant ones for PII the policy routed."""
        settings = self.router.settings
        if decision.method in ("model", "safety"):
            return decision
        candidates = allowed_pools(decision, settings.pools)
        # PII the policy routes (here, or to a pool that was compliant already).
        if decision.method == "pii" or "route" in pii.by_action:
            candidates = [p for p in candidates if p.compliant]
        kinds = list(pii.counts)

        def admits(pool: PoolSettings) -> bool:
            return same_pii_policy(settings.safety.pii, kinds, decision.pool.name, pool.name)

        fallback = fallback_pool(decision, candidates, view or {}, admits)
        return dataclasses.replace(decision, fallback=fallback) if fallback else decision


def _no_record(*args: object, **kwargs: object) -> None:
    """The audit log's stand-in for dry runs (RouterService/Classify, `extproc-router classify`)."""
