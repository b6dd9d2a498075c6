"""The ext_proc protocol adapter: Envoy's `ExternalProcessor.Process` stream, one per request.

Picks a processor from the request's `:method` and `:path`, hands each phase to it, and makes
sure every way a stream can end is answered at once: a client error becomes an immediate
response, an internal fault a gRPC error (so Envoy's `failure_mode_allow` decides), and a stream
Envoy cancels ends quietly.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as ext_proc
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ext_proc_grpc

from extproc_router import metrics, tracing
from extproc_router.live import LiveConfig
from extproc_router.logs import DECISION_ID, TRACE_ID, trace_id_from
from extproc_router.processor import Headers, LLMProcessor, PassThrough, Processor
from extproc_router.request import api_for_path
from extproc_router.shadow import SHADOW_OF, ShadowProcessor

if TYPE_CHECKING:
    from opentelemetry.trace import Span

__all__ = ["ExternalProcessor", "header_map"]

logger = logging.getLogger(__name__)

_PHASES = ("request_headers", "request_body", "response_headers", "response_body")
_PHASE_LATENCY = {phase: metrics.PHASE_LATENCY.labels(phase=phase) for phase in _PHASES}


def header_map(headers: base_pb2.HeaderMap) -> Headers:
    """Envoy sends values in `raw_value` (bytes) or, from older versions, in `value`."""
    return {
        header.key.lower(): (
            header.raw_value.decode("utf-8", "replace") if header.raw_value else header.value
        )
        for header in headers.headers
    }


class ExternalProcessor(ext_proc_grpc.ExternalProcessorServicer):  # type: ignore[misc]
    def __init__(self, live: LiveConfig) -> None:
        self._live = live
        # Envoy's config names the header, so it changes only with a restart.
        self._cluster_header = live.settings.envoy.cluster_header

    def processor_for(self, headers: Headers) -> Processor:
        api = api_for_path(headers.get(":method", ""), headers.get(":path", ""))
        if api is None:
            return PassThrough()
        pipeline = self._live.pipeline
        # Envoy strips x-router-* from clients: only a mirrored copy, on the shadow listener,
        # arrives with it (and its token is checked before anything else).
        if SHADOW_OF in headers and pipeline.shadow is not None:
            return ShadowProcessor(
                pipeline.shadow, pipeline.router, cluster_header=self._cluster_header
            )
        # A stream keeps the router it started with, whatever a reload does meanwhile.
        policy, chosen = self._live.pipeline_for(headers)
        return LLMProcessor(api, chosen, cluster_header=self._cluster_header, policy=policy)

    async def Process(
        self,
        request_iterator: AsyncIterator[ext_proc.ProcessingRequest],
        context: grpc.aio.ServicerContext[ext_proc.ProcessingRequest, ext_proc.ProcessingResponse],
    ) -> AsyncIterator[ext_proc.ProcessingResponse]:
        metrics.STREAMS_ACTIVE.inc()
        processor: Processor = PassThrough()
        span = None
        try:
            async for message in request_iterator:
                phase = message.WhichOneof("request")
                started = time.perf_counter()
                if phase == "request_headers":
                    headers = header_map(message.request_headers.headers)
                    processor = self.processor_for(headers)
                    if isinstance(processor, LLMProcessor):
                        span = self._begin(processor, headers, context)
                with tracing.use_span(span):
                    if phase == "request_headers":
                        response = await processor.on_request_headers(
                            headers, message.request_headers.end_of_stream
                        )
                    else:
                        response = await _dispatch(processor, message)
                if phase in _PHASE_LATENCY:
                    _PHASE_LATENCY[phase].observe((time.perf_counter() - started) * 1000)
                yield response
                if response.HasField("immediate_response"):
                    return
        except asyncio.CancelledError:
            # Envoy cancels the stream when the client goes away or the request ends early.
            metrics.STREAM_ERRORS.labels(kind="cancelled").inc()
            raise
        except Exception:
            metrics.STREAM_ERRORS.labels(kind="internal").inc()
            logger.exception("ext_proc stream failed")
            await context.abort(grpc.StatusCode.INTERNAL, "extproc-router internal error")
        finally:
            metrics.STREAMS_ACTIVE.dec()
            processor.close()
            if span is not None:
                span.set_attributes(processor.trace_attributes())
                span.end()

    def _begin(
        self,
        processor: LLMProcessor,
        headers: Headers,
        context: grpc.aio.ServicerContext[ext_proc.ProcessingRequest, ext_proc.ProcessingResponse],
    ) -> Span | None:
        """Name the request in logs (decision id, trace id) and open its span."""
        metadata = {key: str(value) for key, value in context.invocation_metadata() or ()}
        processor.identify(headers)
        DECISION_ID.set(processor.decision_id)
        span = tracing.request_span((metadata, headers))
        if span is not None:
            TRACE_ID.set(format(span.get_span_context().trace_id, "032x"))
        else:
            parent = metadata.get("traceparent") or headers.get("traceparent", "")
            TRACE_ID.set(trace_id_from(parent))
        return span


async def _dispatch(
    processor: Processor, message: ext_proc.ProcessingRequest
) -> ext_proc.ProcessingResponse:
    phase = message.WhichOneof("request")
    if phase == "request_body":
        body = message.request_body
        return await processor.on_request_body(body.body, body.end_of_stream)
    if phase == "response_headers":
        return await processor.on_response_headers(header_map(message.response_headers.headers))
    if phase == "response_body":
        body = message.response_body
        return await processor.on_response_body(body.body, body.end_of_stream)
    # Phases the shipped Envoy config does not send; answered so a different config never
    # leaves Envoy waiting for its message timeout.
    if phase == "request_trailers":
        return ext_proc.ProcessingResponse(request_trailers=ext_proc.TrailersResponse())
    if phase == "response_trailers":
        return ext_proc.ProcessingResponse(response_trailers=ext_proc.TrailersResponse())
    raise ValueError(f"ext_proc message with no known phase: {phase!r}")
