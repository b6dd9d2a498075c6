"""Per-request processors: what the router does in each ext_proc phase of one HTTP request.

One processor lives for one ext_proc stream (one HTTP request). `PassThrough` answers every
phase with "continue" for paths the router does not understand; `LLMProcessor` parses OpenAI
requests, asks the `Router` for a decision and applies it.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Protocol

from envoy.service.ext_proc.v3 import external_processor_pb2 as ext_proc

from extproc_router import metrics, mutations
from extproc_router.exceptions import RequestError
from extproc_router.pipeline import Outcome, Pipeline
from extproc_router.request import Api, encode_body, parse_body

__all__ = ["Headers", "LLMProcessor", "PassThrough", "Processor"]

logger = logging.getLogger(__name__)

Headers = dict[str, str]
_JSON_TYPES = ("application/json",)


class Processor(Protocol):
    async def on_request_headers(
        self, headers: Headers, end_of_stream: bool
    ) -> ext_proc.ProcessingResponse: ...

    async def on_request_body(
        self, body: bytes, end_of_stream: bool
    ) -> ext_proc.ProcessingResponse: ...

    async def on_response_headers(self, headers: Headers) -> ext_proc.ProcessingResponse: ...


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


class LLMProcessor:
    def __init__(self, api: Api, pipeline: Pipeline, *, cluster_header: str) -> None:
        self._api = api
        self._pipeline = pipeline
        self._cluster_header = cluster_header
        self._decision_id = ""
        self._outcome: Outcome | None = None
        self._chunks: list[bytes] = []

    async def on_request_headers(
        self, headers: Headers, end_of_stream: bool
    ) -> ext_proc.ProcessingResponse:
        self._decision_id = headers.get("x-request-id") or uuid.uuid4().hex
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
        # In BUFFERED mode Envoy sends the whole body in one message; gather anyway, so a
        # chunked configuration costs a copy rather than a wrong decision.
        self._chunks.append(body)
        if not end_of_stream:
            return mutations.continue_request_body()
        raw = b"".join(self._chunks)
        self._chunks.clear()
        started = time.perf_counter()
        try:
            request = parse_body(self._api, raw)
            outcome = await self._pipeline.run(request, self._decision_id)
            decision = outcome.decision
            new_body = None
            if outcome.body_changed:
                request.body["model"] = decision.model
                new_body = encode_body(request.body)
        except RequestError as error:
            return self._reject(error)
        self._outcome = outcome
        metrics.observe_decision(
            decision,
            time.perf_counter() - started,
            {
                "embedding_model": outcome.embed_ms,
                "jailbreak": outcome.jailbreak.latency_ms,
                "pii": outcome.pii.latency_ms,
            },
        )
        logger.debug(
            "decision %s: %s -> %s (%s)",
            self._decision_id,
            request.model,
            decision.pool.name,
            decision.reason,
        )
        headers = {
            self._cluster_header: decision.pool.name,
            "x-router-decision-id": self._decision_id,
            "x-router-model": decision.model,
        }
        if outcome.flagged:
            headers["x-router-safety"] = f"flagged; jailbreak={outcome.jailbreak.score:.2f}"
        return mutations.route_request(headers, new_body)

    async def on_response_headers(self, headers: Headers) -> ext_proc.ProcessingResponse:
        if self._outcome is None:
            return mutations.continue_response_headers()
        decision = self._outcome.decision
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
        return mutations.continue_response_headers(tags)

    def _reject(self, error: RequestError) -> ext_proc.ProcessingResponse:
        metrics.REJECTED.labels(code=error.code).inc()
        logger.info("rejected %s: %s %s", self._decision_id, error.status, error.code)
        return mutations.immediate_error(error, {"x-router-decision-id": self._decision_id})
