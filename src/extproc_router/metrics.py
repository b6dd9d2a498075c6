"""Prometheus instruments. Labels are bounded: pool and model names come from the config and
error codes from the router's own list, never from what a client wrote."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import Counter, Gauge, Histogram

if TYPE_CHECKING:
    from extproc_router.routing import Decision

__all__ = [
    "DECISIONS",
    "DECISION_LATENCY",
    "JAILBREAKS",
    "PII_DETECTIONS",
    "REJECTED",
    "SIGNAL_LATENCY",
    "STREAMS_ACTIVE",
    "STREAM_ERRORS",
    "observe_decision",
]

_MS_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500)

DECISIONS = Counter(
    "routing_decisions", "Routing decisions by chosen model and method.", ["model", "method"]
)
DECISION_LATENCY = Histogram(
    "routing_decision_latency_ms",
    "Time from a buffered request body to a routing decision, in milliseconds.",
    buckets=_MS_BUCKETS,
)
REJECTED = Counter(
    "requests_rejected", "Requests answered with an error by the router, by error code.", ["code"]
)
STREAMS_ACTIVE = Gauge("extproc_streams_active", "ext_proc streams (HTTP requests) in flight.")
STREAM_ERRORS = Counter(
    "extproc_stream_errors",
    "ext_proc streams that ended abnormally: 'cancelled' by Envoy, or 'internal' faults.",
    ["kind"],
)


SIGNAL_LATENCY = Histogram(
    "signal_latency_ms",
    "Time each routing signal and safety stage took, in milliseconds.",
    ["signal"],
    buckets=_MS_BUCKETS,
)
JAILBREAKS = Counter(
    "jailbreak_detections", "Requests the jailbreak detector acted on, by action.", ["action"]
)
PII_DETECTIONS = Counter(
    "pii_detections",
    "PII findings by type and the action taken on the request.",
    ["type", "action"],
)


def observe_decision(decision: Decision, seconds: float, stages: dict[str, float]) -> None:
    """`stages`: milliseconds of the stages outside the routing signals (embedding, safety)."""
    DECISIONS.labels(model=decision.model, method=decision.method).inc()
    DECISION_LATENCY.observe(seconds * 1000)
    for signal in decision.signals:
        SIGNAL_LATENCY.labels(signal=signal.name).observe(signal.latency_ms)
    for name, milliseconds in stages.items():
        SIGNAL_LATENCY.labels(signal=name).observe(milliseconds)
