"""OpenTelemetry traces: one `router.process` span per request, the child of the span Envoy
opens for its ext_proc call, with a child span per stage (parse, embedding, each signal, safety,
decision, mutation).

Envoy sends its trace context in the gRPC stream's initial metadata (and, with its OpenTelemetry
tracer, in the request's `traceparent` header); the router continues that trace, so one trace
shows Envoy's and the router's spans together.

Off by default, and then nothing of the SDK is loaded: `stage()` hands out one shared no-op
context manager and `request_span()` returns None.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

    from extproc_router.settings import TracingSettings

__all__ = ["request_span", "setup_tracing", "shutdown_tracing", "stage", "use_span"]

_NOTHING = contextlib.nullcontext()


class _State:
    """The process's tracer; None while tracing is off."""

    tracer: Tracer | None = None
    provider: TracerProvider | None = None


_state = _State()


def setup_tracing(settings: TracingSettings) -> None:
    """Start exporting spans (in batches, off the request path) when the config says so."""
    if not settings.enabled:
        return
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    provider = TracerProvider(
        resource=Resource.create({"service.name": settings.service_name}),
        sampler=ParentBased(TraceIdRatioBased(settings.sample_ratio)),
    )
    provider.add_span_processor(
        BatchSpanProcessor(_exporter(settings), schedule_delay_millis=settings.export_delay_ms)
    )
    _state.provider = provider
    _state.tracer = provider.get_tracer("extproc_router")


def shutdown_tracing() -> None:
    """Send what is left and stop (at server shutdown)."""
    if _state.provider is not None:
        _state.provider.shutdown()
    _state.tracer = _state.provider = None


def _exporter(settings: TracingSettings) -> Any:
    endpoint = settings.endpoint
    if settings.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        if endpoint is None:
            return OTLPSpanExporter()
        return OTLPSpanExporter(endpoint=f"http://{endpoint}", insecure=True)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HTTPSpanExporter,
    )

    if endpoint is None:
        return HTTPSpanExporter()
    return HTTPSpanExporter(endpoint=f"http://{endpoint}/v1/traces")


def request_span(carriers: tuple[Mapping[str, str], ...]) -> Span | None:
    """Start `router.process` under the first carrier (gRPC metadata, request headers) that
    holds a W3C trace context; a new trace when none does. None when tracing is off."""
    tracer = _state.tracer
    if tracer is None:
        return None
    from opentelemetry.trace import SpanKind
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    propagator = TraceContextTextMapPropagator()
    parent = None
    for carrier in carriers:
        if "traceparent" in carrier:
            parent = propagator.extract(carrier)
            break
    return tracer.start_span("router.process", context=parent, kind=SpanKind.SERVER)


@contextlib.contextmanager
def _in_span(span: Span) -> Iterator[None]:
    from opentelemetry.trace import use_span as otel_use_span

    with otel_use_span(span, end_on_exit=False):
        yield


def use_span(span: Span | None) -> contextlib.AbstractContextManager[None]:
    """Make `span` the parent of the stages run inside (one ext_proc message at a time)."""
    return _NOTHING if span is None else _in_span(span)


def stage(name: str) -> contextlib.AbstractContextManager[Any]:
    """A child span of the current one for one stage of the work."""
    if _state.tracer is None:
        return _NOTHING
    return _state.tracer.start_as_current_span(name)
