"""Prometheus instruments. Labels are bounded: pool and model names come from the config and
error codes from the router's own list, never from what a client wrote."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import Counter, Gauge, Histogram

from extproc_router.usage import Usage, cost_usd

if TYPE_CHECKING:
    from extproc_router.routing import Decision
    from extproc_router.settings import PoolSettings, Price

__all__ = [
    "BATCH_SIZE",
    "BLOCKED",
    "CACHE_LATENCY",
    "CACHE_LOOKUPS",
    "CACHE_SAVED",
    "CACHE_STORES",
    "COST",
    "COST_SAVED",
    "DECISIONS",
    "DECISION_LATENCY",
    "FALLBACKS",
    "JAILBREAKS",
    "LOAD_POLLS",
    "PHASE_LATENCY",
    "PII_DETECTIONS",
    "POOL_RUNNING",
    "POOL_STATE",
    "POOL_WAITING",
    "REJECTED",
    "RELOADS",
    "REQUESTS",
    "REQUEST_DURATION",
    "SIGNAL_LATENCY",
    "SPILLOVERS",
    "STREAMS_ACTIVE",
    "STREAM_ERRORS",
    "TIME_TO_FIRST_TOKEN",
    "TOKEN_USAGE",
    "observe_decision",
    "observe_usage",
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
ASYNCIO_TASKS = Gauge(
    "router_asyncio_tasks",
    "asyncio tasks alive in the router's event loop (back to a few at rest).",
)
STREAM_ERRORS = Counter(
    "extproc_stream_errors",
    "ext_proc streams that ended abnormally: 'cancelled' by Envoy, or 'internal' faults.",
    ["kind"],
)


STAGE_ERRORS = Counter(
    "router_stage_errors",
    "Stages that failed (raised, or their model erred), by stage and the on_error action taken.",
    ["stage", "action"],
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

BLOCKED = Counter(
    "requests_blocked",
    "Requests the safety policy stopped before any pool, by reason.",
    ["reason"],
)
REQUESTS = Counter(
    "llm_requests",
    "Requests by the pool that answered ('none': answered by the router) and outcome: ok, "
    "upstream_4xx, upstream_5xx, blocked, rejected.",
    ["pool", "outcome"],
)
FALLBACKS = Counter(
    "routing_fallbacks",
    "Requests sent to the fallback pool, by reason: low_confidence or no_signal.",
    ["reason"],
)
PHASE_LATENCY = Histogram(
    "extproc_message_latency_ms",
    "Time the router took to answer one ext_proc message, by phase, in milliseconds.",
    ["phase"],
    buckets=_MS_BUCKETS,
)
RELOADS = Counter("config_reloads", "Config reloads by result: ok or failed.", ["result"])
BATCH_SIZE = Histogram(
    "model_inference_batch_size",
    "Texts per encoder inference.",
    buckets=(1, 2, 4, 8, 16, 32, 64),
)

# Cost and GenAI semantic conventions (gen_ai.client.token.usage and friends, in Prometheus
# spelling). `pool` and `gen_ai_response_model` come from the config, never from the client.
TOKEN_USAGE = Histogram(
    "gen_ai_client_token_usage",
    "Tokens per request, by pool and gen_ai_token_type (input or output).",
    ["pool", "gen_ai_response_model", "gen_ai_token_type"],
    buckets=(1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576),
)
REQUEST_DURATION = Histogram(
    "gen_ai_server_request_duration_seconds",
    "Request headers at the router to the response's last byte, by pool.",
    ["pool", "gen_ai_response_model"],
    buckets=tuple(0.01 * 2**i for i in range(14)),
)
TIME_TO_FIRST_TOKEN = Histogram(
    "gen_ai_server_time_to_first_token_seconds",
    "Request headers at the router to the first chunk of a streamed answer, by pool.",
    ["pool", "gen_ai_response_model"],
    buckets=(0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0),
)
COST = Counter("llm_cost_usd", "What answered requests cost, by pool, in US dollars.", ["pool"])
# A gauge, not a counter: the reference name has no `_total`, and routing up to a pool pricier
# than the baseline makes a saving negative.
COST_SAVED = Gauge(
    "total_cost_saved_usd",
    "The baseline model's price for the same tokens minus what they cost, summed, in US dollars.",
)


# Load-aware routing (pool_load.py, spillover.py). Pool names come from the config, states and
# poll results from the router's own short lists.
SPILLOVERS = Counter(
    "routing_spillovers",
    "Requests moved off the pool the decision preferred because of its load, by pool pair.",
    ["from_pool", "to_pool"],
)
LOAD_POLLS = Counter(
    "pool_load_polls",
    "Polls of pool endpoints' metrics, by pool and result: ok, timeout, refused, error.",
    ["pool", "result"],
)
POOL_STATE = Gauge(
    "pool_load_state",
    "1 for the state each pool is in (ok, busy, full, down, unknown, unmonitored), else 0.",
    ["pool", "state"],
)
POOL_WAITING = Gauge(
    "pool_load_waiting",
    "Requests waiting per endpoint of each pool (vllm:num_requests_waiting); -1 when unknown.",
    ["pool"],
)
POOL_RUNNING = Gauge(
    "pool_load_running",
    "Requests running per endpoint of each pool (vllm:num_requests_running); -1 when unknown.",
    ["pool"],
)


def observe_usage(pool: PoolSettings, usage: Usage, baseline: Price) -> None:
    labels = {"pool": pool.name, "gen_ai_response_model": pool.model}
    TOKEN_USAGE.labels(**labels, gen_ai_token_type="input").observe(usage.prompt_tokens)
    TOKEN_USAGE.labels(**labels, gen_ai_token_type="output").observe(usage.completion_tokens)
    cost = cost_usd(usage, pool.price)
    COST.labels(pool=pool.name).inc(cost)
    COST_SAVED.inc(cost_usd(usage, baseline) - cost)


def observe_decision(decision: Decision, seconds: float, stages: dict[str, float]) -> None:
    """`stages`: milliseconds of the stages outside the routing signals (embedding, safety)."""
    DECISIONS.labels(model=decision.model, method=decision.method).inc()
    if decision.method == "fallback":
        reason = "no_signal" if decision.confidence is None else "low_confidence"
        FALLBACKS.labels(reason=reason).inc()
    if decision.spillover is not None:
        SPILLOVERS.labels(
            from_pool=decision.spillover.from_pool, to_pool=decision.spillover.to_pool
        ).inc()
    DECISION_LATENCY.observe(seconds * 1000)
    for signal in decision.signals:
        SIGNAL_LATENCY.labels(signal=signal.name).observe(signal.latency_ms)
    for name, milliseconds in stages.items():
        SIGNAL_LATENCY.labels(signal=name).observe(milliseconds)


# The semantic cache (cache.py). `result`: hit, miss or error (a backend that failed or was
# too slow: the request goes on as a miss).
CACHE_LOOKUPS = Counter(
    "semantic_cache_lookups", "Semantic cache lookups of cacheable requests, by result.", ["result"]
)
CACHE_LATENCY = Histogram(
    "semantic_cache_lookup_latency_ms",
    "Time a semantic cache lookup took (embedding the prompt included), by result, in ms.",
    ["result"],
    buckets=_MS_BUCKETS,
)
CACHE_STORES = Counter(
    "semantic_cache_stores",
    "Answers offered to the semantic cache, by result: stored, unusable (an error, a tool "
    "call, too large) or error.",
    ["result"],
)
CACHE_SAVED = Counter(
    "semantic_cache_saved_usd",
    "What the answers served from the cache cost when a pool first wrote them, in US dollars.",
    ["pool"],
)
