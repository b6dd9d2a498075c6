"""The ext_proc protocol adapter: Envoy's `ExternalProcessor.Process` stream, one per request.

Picks a processor from the request's `:method` and `:path`, hands each phase to it, and makes
sure every way a stream can end is answered at once: a client error becomes an immediate
response, an internal fault a gRPC error (so Envoy's `failure_mode_allow` decides), and a stream
Envoy cancels ends quietly.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as ext_proc
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ext_proc_grpc

from extproc_router import metrics
from extproc_router.live import LiveConfig
from extproc_router.processor import Headers, LLMProcessor, PassThrough, Processor
from extproc_router.request import api_for_path

__all__ = ["ExternalProcessor", "header_map"]

logger = logging.getLogger(__name__)


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
        # A stream keeps the router it started with, whatever a reload does meanwhile.
        return LLMProcessor(api, self._live.pipeline, cluster_header=self._cluster_header)

    async def Process(
        self,
        request_iterator: AsyncIterator[ext_proc.ProcessingRequest],
        context: grpc.aio.ServicerContext[ext_proc.ProcessingRequest, ext_proc.ProcessingResponse],
    ) -> AsyncIterator[ext_proc.ProcessingResponse]:
        metrics.STREAMS_ACTIVE.inc()
        processor: Processor = PassThrough()
        try:
            async for message in request_iterator:
                if message.WhichOneof("request") == "request_headers":
                    headers = header_map(message.request_headers.headers)
                    processor = self.processor_for(headers)
                    response = await processor.on_request_headers(
                        headers, message.request_headers.end_of_stream
                    )
                else:
                    response = await _dispatch(processor, message)
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


async def _dispatch(
    processor: Processor, message: ext_proc.ProcessingRequest
) -> ext_proc.ProcessingResponse:
    phase = message.WhichOneof("request")
    if phase == "request_body":
        body = message.request_body
        return await processor.on_request_body(body.body, body.end_of_stream)
    if phase == "response_headers":
        return await processor.on_response_headers(header_map(message.response_headers.headers))
    # Phases the shipped Envoy config does not send; answered so a different config never
    # leaves Envoy waiting for its message timeout.
    if phase == "response_body":
        return ext_proc.ProcessingResponse(response_body=ext_proc.BodyResponse())
    if phase == "request_trailers":
        return ext_proc.ProcessingResponse(request_trailers=ext_proc.TrailersResponse())
    if phase == "response_trailers":
        return ext_proc.ProcessingResponse(response_trailers=ext_proc.TrailersResponse())
    raise ValueError(f"ext_proc message with no known phase: {phase!r}")
