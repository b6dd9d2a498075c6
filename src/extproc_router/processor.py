"""Per-request processors: what the router does in each ext_proc phase of one HTTP request.

One processor lives for one ext_proc stream (one HTTP request). `PassThrough` answers every
phase with "continue" for paths the router does not understand; `LLMProcessor` parses OpenAI
requests, asks the `Router` for a decision and applies it.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
import uuid
from typing import Any, Protocol

from envoy.service.ext_proc.v3 import external_processor_pb2 as ext_proc

from extproc_router import metrics, mutations, occupancy, tracing
from extproc_router.cache import CachedAnswer, ResponseRecorder, render_answer
from extproc_router.exceptions import RequestError
from extproc_router.pipeline import Outcome, Pipeline
from extproc_router.request import Api, ParsedRequest, encode_body, gather, parse_body
from extproc_router.spillover import failed_over
from extproc_router.usage import ResponseMeter, ask_for_usage

__all__ = ["Headers", "LLMProcessor", "PassThrough", "Processor"]

logger = logging.getLogger(__name__)

Headers = dict[str, str]
_JSON_TYPES = ("application/json",)
# A JSON answer up to this size is read whole, in one message; larger ones chunk by chunk.
_BUFFERED_BODY_LIMIT = 256 * 1024
# The longest answer kept for the shadow log's embedding (the cache has its own limit).
_ANSWER_LIMIT = 1024 * 1024
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}\Z")
_OPERATIONS = {"chat_completions": "chat", "completions": "text_completion"}
# What a pool that is down or overwhelmed answers (through Envoy, after its retries): load-aware
# routing keeps the next requests off it until its next good poll.
_POOL_FAILURES = frozenset({502, 503, 504})
# Blocks by the safety policy, as opposed to requests refused as malformed.
_BLOCK_REASONS = {"content_policy_violation": "jailbreak", "pii_policy_violation": "pii"}


class Processor(Protocol):
    async def on_request_headers(
        self, headers: Headers, end_of_stream: bool
    ) -> ext_proc.ProcessingResponse: ...

    async def on_request_body(
        self, body: bytes, end_of_stream: bool
    ) -> ext_proc.ProcessingResponse: ...

    async def on_response_headers(self, headers: Headers) -> ext_proc.ProcessingResponse: ...

    async def on_response_body(
        self, body: bytes, end_of_stream: bool
    ) -> ext_proc.ProcessingResponse: ...

    def close(self) -> None:
        """The stream is over, however it ended: record what the request cost."""

    def trace_attributes(self) -> dict[str, Any]:
        """The request's span attributes: the decision, never prompt text or PII."""


class PassThrough:
    """Leaves the request as it is: Envoy's default route sends it to the default pool."""

    async def on_request_headers(
        self, headers: Headers, end_of_stream: bool
    ) -> ext_proc.ProcessingResponse:
        return mutations.continue_request_headers()

    async def on_request_body(
        self, body: bytes, end_of_stream: bool
    ) -> ext_proc.ProcessingResponse:
        return mutations.continue_request_body()

    async def on_response_headers(self, headers: Headers) -> ext_proc.ProcessingResponse:
        return mutations.continue_response_headers()

    async def on_response_body(
        self, body: bytes, end_of_stream: bool
    ) -> ext_proc.ProcessingResponse:
        return mutations.continue_response_body()

    def close(self) -> None:
        pass

    def trace_attributes(self) -> dict[str, Any]:
        return {}


class LLMProcessor:
    def __init__(
        self, api: Api, pipeline: Pipeline, *, cluster_header: str, policy: str = ""
    ) -> None:
        self._api = api
        # The A/B policy (experiments.py) whose pipeline decides; "" when none runs.
        self._policy = policy
        self._pipeline = pipeline
        self._cluster_header = cluster_header
        self._decision_id = ""
        self._outcome: Outcome | None = None
        self._chunks: list[bytes] = []
        self._started = time.perf_counter()
        # The router asked the pool for a usage chunk the client did not ask for.
        self._strip_usage = False
        self._meter: ResponseMeter | None = None
        self._first_chunk = True
        self._closed = False
        self._error_code = ""
        # The semantic cache: the answer is being kept to store (a miss), or came from it.
        self._recorder: ResponseRecorder | None = None
        self._cache_hit = False
        # Shadow routing: Envoy mirrors this request; its answer is logged beside the shadow's.
        self._shadowed = False
        self._status = 0
        self._answer: CachedAnswer | None = None

    @property
    def decision_id(self) -> str:
        return self._decision_id

    def identify(self, headers: Headers) -> None:
        """Envoy's request id names the decision, so logs, audit and access log line up; a
        client can send its own, so one that could forge a log line is replaced."""
        self._started = time.perf_counter()
        request_id = headers.get("x-request-id", "")
        self._decision_id = request_id if _REQUEST_ID.match(request_id) else uuid.uuid4().hex

    async def on_request_headers(
        self, headers: Headers, end_of_stream: bool
    ) -> ext_proc.ProcessingResponse:
        if not self._decision_id:
            self.identify(headers)
        content_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if content_type not in _JSON_TYPES:
            shown = content_type or "none"
            return self._reject(
                RequestError(
                    f"the content-type must be application/json, not {shown}",
                    status=415,
                    code="unsupported_media_type",
                )
            )
        if end_of_stream:
            return self._reject(
                RequestError("the request body is empty; expected a JSON object", code="empty_body")
            )
        return mutations.continue_request_headers()

    async def on_request_body(
        self, body: bytes, end_of_stream: bool
    ) -> ext_proc.ProcessingResponse:
        raw = gather(self._chunks, body, end_of_stream)
        if raw is None:
            return mutations.continue_request_body()
        received = time.monotonic()
        started = time.perf_counter()
        try:
            with tracing.stage("router.parse"):
                request = parse_body(self._api, raw)
            with occupancy.deciding():
                outcome = await self._pipeline.run(request, self._decision_id, received=received)
            decision = outcome.decision
            new_body = None
            if self._pipeline.router.settings.telemetry.usage:
                self._strip_usage = ask_for_usage(request.body)
            if outcome.body_changed or self._strip_usage:
                request.body["model"] = decision.model
                with tracing.stage("router.mutation"):
                    new_body = encode_body(request.body)
        except RequestError as error:
            return self._reject(error)
        self._outcome = outcome
        if outcome.cache is not None and outcome.cache.hit is not None:
            return self._answer_from_cache(request, outcome, time.perf_counter() - started)
        metrics.observe_decision(
            decision,
            time.perf_counter() - started,
            {
                "embedding_model": outcome.embed_ms,
                "jailbreak": outcome.jailbreak.latency_ms,
                "pii": outcome.pii.latency_ms,
            },
        )
        logger.info(
            "decision %s -> %s (%s)",
            request.model,
            decision.pool.name,
            decision.reason,
            extra={
                "pool": decision.pool.name,
                "method": decision.method,
                "confidence": decision.confidence,
                "latency_ms": round(decision.latency_ms, 3),
                "signals": decision.header(),
            },
        )
        headers = {
            self._cluster_header: decision.cluster,
            "x-router-decision-id": self._decision_id,
            "x-router-model": decision.model,
        }
        if outcome.flagged:
            headers["x-router-safety"] = f"flagged; jailbreak={outcome.jailbreak.score:.2f}"
        if self._policy:
            headers["x-router-policy"] = self._policy
        if self._pipeline.shadow is not None:
            mirror = self._pipeline.shadow.plan(self._decision_id, outcome)
            self._shadowed = bool(mirror)
            headers |= mirror
        return mutations.route_request(headers, new_body)

    async def on_response_headers(self, headers: Headers) -> ext_proc.ProcessingResponse:
        if self._outcome is None:
            return mutations.continue_response_headers()
        chosen = self._outcome.decision
        moved = failed_over(chosen, headers.get(mutations.SERVED_BY_HEADER, ""))
        if moved is not None:
            # Answered by the fallback: its name, model, metrics and price from here on.
            metrics.SPILLOVERS.labels(from_pool=chosen.pool.name, to_pool=moved.pool.name).inc()
            self._outcome = dataclasses.replace(self._outcome, decision=moved)
        decision = self._outcome.decision
        status = int(headers.get(":status", "0") or 0)
        outcome = "ok" if status < 400 else f"upstream_{status // 100}xx"
        metrics.REQUESTS.labels(pool=decision.pool.name, outcome=outcome).inc()
        load = self._pipeline.load
        if status in _POOL_FAILURES and load is not None:
            load.report_failure(decision.pool.name)
        tags = {
            "x-router-pool": decision.pool.name,
            "x-router-model": decision.model,
            "x-router-decision-id": self._decision_id,
            "x-router-decision": decision.header(),
        }
        if self._outcome.pii.counts:
            tags["x-router-pii"] = self._outcome.pii.action
        if self._outcome.flagged:
            tags["x-router-safety"] = "flagged"
        if self._policy:
            tags["x-router-policy"] = self._policy
        content_type = headers.get("content-type", "")
        event_stream = content_type.startswith("text/event-stream")
        self._status = status
        caching = self._outcome.cache is not None and self._pipeline.cache is not None
        if self._outcome.cache is not None:
            tags["x-router-cache"] = "miss"
        if status == 200 and (caching or self._shadowed):
            cache = self._pipeline.cache
            self._recorder = ResponseRecorder(
                chat=self._api == "chat_completions",
                event_stream=event_stream,
                limit=cache.settings.max_response_bytes if cache else _ANSWER_LIMIT,
            )
        usage = self._pipeline.router.settings.telemetry.usage
        served = (mutations.SERVED_BY_HEADER,)
        if status >= 300 or not (usage or self._recorder):
            return mutations.continue_response_headers(tags, remove=served)
        if usage:
            self._meter = ResponseMeter(event_stream=event_stream, strip=self._strip_usage)
        # Removing a chunk changes the length; SSE rarely has one, but then it must go.
        remove = (*served, "content-length") if self._strip_usage and event_stream else served
        # A small JSON answer comes whole in one message; anything else (SSE, or no length, or
        # larger than Envoy would buffer) chunk by chunk.
        length = headers.get("content-length", "")
        small = not event_stream and length.isdigit() and int(length) <= _BUFFERED_BODY_LIMIT
        return mutations.continue_response_headers(
            tags, remove=remove, body="buffered" if small else "streamed"
        )

    async def on_response_body(
        self, body: bytes, end_of_stream: bool
    ) -> ext_proc.ProcessingResponse:
        if self._meter is None and self._recorder is None:
            return mutations.continue_response_body()
        if self._first_chunk and self._outcome is not None:
            self._first_chunk = False
            pool = self._outcome.decision.pool
            metrics.TIME_TO_FIRST_TOKEN.labels(
                pool=pool.name, gen_ai_response_model=pool.model
            ).observe(time.perf_counter() - self._started)
        if self._recorder is not None:
            self._recorder.feed(body)
        replaced = self._meter.feed(body, end_of_stream) if self._meter is not None else None
        if end_of_stream:
            self._finish_answer()
            self.close()
        return mutations.continue_response_body(replaced)

    def _finish_answer(self) -> None:
        """A whole 2xx answer: offer it to the cache (a miss), keep it for the shadow log."""
        recorder, self._recorder = self._recorder, None
        if recorder is None:
            return
        self._answer = recorder.answer()
        cache = self._pipeline.cache
        lookup = self._outcome.cache if self._outcome is not None else None
        if cache is not None and lookup is not None:
            cache.store(lookup, self._answer)

    def _answer_from_cache(
        self, request: ParsedRequest, outcome: Outcome, seconds: float
    ) -> ext_proc.ProcessingResponse:
        """The router answers in the pool's place: no pool sees the request."""
        self._cache_hit = True
        decision = outcome.decision
        lookup = outcome.cache
        if lookup is None or lookup.hit is None:
            raise ValueError("not a cache hit")
        metrics.observe_decision(decision, seconds, {"embedding_model": outcome.embed_ms})
        metrics.REQUESTS.labels(pool=decision.pool.name, outcome="cache_hit").inc()
        logger.info(
            "answered from the cache (%s, similarity %.3f)",
            decision.pool.name,
            lookup.similarity,
            extra={"pool": decision.pool.name, "method": decision.method},
        )
        content_type, body = render_answer(lookup.hit, request, decision.model)
        headers = {
            "content-type": content_type,
            "x-router-cache": "hit",
            "x-router-cache-similarity": f"{lookup.similarity:.3f}",
            "x-router-pool": decision.pool.name,
            "x-router-model": decision.model,
            "x-router-decision-id": self._decision_id,
            "x-router-decision": decision.header(),
        }
        if self._policy:
            headers["x-router-policy"] = self._policy
        return mutations.immediate_response(200, headers, body, details="extproc_router_cache_hit")

    def close(self) -> None:
        if self._closed or self._outcome is None or self._cache_hit:
            return
        self._closed = True
        pool = self._outcome.decision.pool
        seconds = time.perf_counter() - self._started
        metrics.REQUEST_DURATION.labels(pool=pool.name, gen_ai_response_model=pool.model).observe(
            seconds
        )
        shadow = self._pipeline.shadow
        if self._shadowed and shadow is not None and self._status:
            shadow.record(
                self._pipeline.router,
                side="primary",
                decision_id=self._decision_id,
                pool=pool,
                status=self._status,
                latency_s=seconds,
                answer=self._answer,
            )
        if self._meter is not None and self._meter.usage is not None:
            metrics.observe_usage(
                pool, self._meter.usage, self._pipeline.router.settings.baseline_price
            )

    def trace_attributes(self) -> dict[str, Any]:
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": _OPERATIONS[self._api],
            "router.decision_id": self._decision_id,
            "router.blocked": self._error_code in _BLOCK_REASONS,
        }
        if self._policy:
            attributes["router.policy"] = self._policy
        if self._error_code:
            attributes["error.type"] = self._error_code
        if self._outcome is not None:
            decision = self._outcome.decision
            attributes |= {
                "router.cache": _cache_state(self._outcome),
                "gen_ai.response.model": decision.model,
                "router.pool": decision.pool.name,
                "router.method": decision.method,
                "router.fallback": decision.method == "fallback",
                "router.jailbreak.action": self._outcome.jailbreak.action,
                "router.pii.action": self._outcome.pii.action,
            }
            if decision.confidence is not None:
                attributes["router.confidence"] = round(decision.confidence, 4)
        usage = self._meter.usage if self._meter is not None else None
        if usage is not None:
            attributes["gen_ai.usage.input_tokens"] = usage.prompt_tokens
            attributes["gen_ai.usage.output_tokens"] = usage.completion_tokens
        return attributes

    def _reject(self, error: RequestError) -> ext_proc.ProcessingResponse:
        self._error_code = error.code
        metrics.REJECTED.labels(code=error.code).inc()
        blocked = _BLOCK_REASONS.get(error.code)
        if blocked is not None:
            metrics.BLOCKED.labels(reason=blocked).inc()
        outcome = "blocked" if blocked else "rejected"
        metrics.REQUESTS.labels(pool="none", outcome=outcome).inc()
        logger.info("rejected: %s %s", error.status, error.code)
        return mutations.immediate_error(
            error, {**error.headers, "x-router-decision-id": self._decision_id}
        )


def _cache_state(outcome: Outcome) -> str:
    if outcome.cache is None:
        return "none"
    return "hit" if outcome.cache.hit is not None else "miss"
