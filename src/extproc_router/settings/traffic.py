"""Telemetry, load-aware routing, the semantic cache, shadow routing and experiments."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from extproc_router.settings.base import (
    ENDPOINT,
    Frozen,
    ModelName,
    Name,
    Unit,
    header_name,
)
from extproc_router.settings.envoy import (
    ListenAddress,
)
from extproc_router.settings.pools import (
    Price,
)

__all__ = [
    "BaselinePrice",
    "CacheRoute",
    "CacheSettings",
    "ExperimentSettings",
    "LoadSettings",
    "PolicySettings",
    "ShadowSettings",
    "TelemetrySettings",
    "TracingSettings",
]


class TracingSettings(Frozen):
    """OpenTelemetry traces; off costs nothing (no SDK is set up)."""

    enabled: bool = False
    # An OTLP collector, HOST:PORT. Unset: the standard OTEL_EXPORTER_OTLP_* variables decide.
    # `render-envoy` points Envoy's own tracer at it too (OTLP/gRPC), so the traces join.
    endpoint: str | None = None
    protocol: Literal["grpc", "http/protobuf"] = "grpc"
    service_name: str = "extproc-router"
    sample_ratio: Unit = 1.0
    # How long finished spans wait before they are sent in one batch.
    export_delay_ms: int = Field(default=2_000, ge=10, le=60_000)

    @field_validator("endpoint")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is not None and not ENDPOINT.match(value):
            raise ValueError(f"{value!r} is not HOST:PORT")
        return value


class BaselinePrice(Price):
    """The model every request would go to without the router."""

    model: ModelName
    # Its typical time to a whole answer (replay); unset: the `latency_s` of the pool serving
    # `model`, if one does.
    latency_s: float | None = Field(default=None, gt=0)


class TelemetrySettings(Frozen):
    log_format: Literal["json", "text"] = "json"
    # Read token usage from responses (the response body passes through the router, streamed
    # chunk by chunk, never buffered).
    usage: bool = True
    # `total_cost_saved_usd` compares each request's cost with this model's price for the same
    # tokens. Unset: the priciest pool.
    baseline: BaselinePrice | None = None
    tracing: TracingSettings = TracingSettings()


class LoadSettings(Frozen):
    """Load-aware routing: the router polls every pool endpoint's Prometheus metrics off the
    request path and moves traffic off a pool before it saturates (`pools[].load`). Off by
    default: turn it on where the pools export vLLM's metrics."""

    enabled: bool = False
    poll_interval_ms: int = Field(default=1_000, ge=50, le=60_000)
    # Per endpoint and poll; a late answer counts as a failed poll.
    timeout_ms: int = Field(default=500, ge=10, le=60_000)
    # Older readings are unknown, never idle. None: three poll intervals.
    stale_after_ms: int | None = Field(default=None, ge=50)
    # An endpoint that refuses connections is down at once; one that fails (times out, answers
    # garbage) this many polls in a row is down too. A pool with no endpoint up is skipped.
    down_after_failures: int = Field(default=3, ge=1, le=100)
    # Score a pool loses at its hard limit (linearly from the soft one): the vote's margin a
    # cheaper pool's queue may cost before the next pool wins.
    penalty: Unit = 0.5
    # An unknown pool (stale or missing readings) counts as this far from its soft limit to
    # its hard one: never as idle, never as full.
    unknown_pressure: Unit = 0.5
    # Seconds a client is told to wait when no allowed pool is left (503 `pools_unavailable`).
    retry_after_s: int = Field(default=2, ge=1, le=3_600)

    @model_validator(mode="after")
    def _timeout_within_interval(self) -> LoadSettings:
        if self.timeout_ms > self.poll_interval_ms:
            raise ValueError("timeout_ms must not exceed poll_interval_ms")
        return self

    @property
    def stale_after_s(self) -> float:
        stale = self.stale_after_ms
        return (stale if stale is not None else 3 * self.poll_interval_ms) / 1000


class CacheRoute(Frozen):
    """Requests the router sends to `pool` (and, when set, speak `api`) may be answered from
    the cache; the rest never are (opt-in per route)."""

    pool: Name
    api: Literal["chat_completions", "completions"] | None = None
    threshold: Unit | None = None
    ttl_s: int | None = Field(default=None, ge=1)


class CacheSettings(Frozen):
    """The semantic cache: a request whose prompt is at least `threshold` similar (cosine of
    the MiniLM embeddings) to an earlier one, with the same conversation before it, the same
    pool and the same parameters, is answered by the router without any pool."""

    # No routes: no cache (and no Redis connection).
    routes: tuple[CacheRoute, ...] = ()
    backend: Literal["memory", "redis"] = "memory"
    # Replicas that share one Redis share one cache.
    redis_url: str = Field(default="redis://127.0.0.1:6379/0", pattern=r"^rediss?://")
    # A Redis slower than this is a miss (and the answer is not stored): never a failure.
    redis_timeout_ms: int = Field(default=100, ge=1, le=10_000)
    key_prefix: str = Field(default="extproc-router:cache", min_length=1)
    # High by default: a near-duplicate must not get another question's answer.
    threshold: Unit = 0.95
    ttl_s: int = Field(default=3_600, ge=1)
    max_entries: int = Field(default=10_000, ge=1)
    # Sampled answers (temperature above 0, or unset: OpenAI's default is 1) differ on
    # purpose; serving one again would take that away.
    temperature_zero_only: bool = True
    # Larger answers are not stored.
    max_response_bytes: int = Field(default=256 * 1024, ge=1024, le=16 * 1024 * 1024)


class ShadowSettings(Frozen):
    """Shadow routing: a fraction of the routed requests is also sent to `pool` by Envoy's
    request mirroring; the client only ever gets the primary's answer. Both answers are logged
    (latency, tokens, an embedding of the text) for `extproc-router shadow-report`."""

    # None: no shadow traffic (and no shadow listener in the rendered Envoy config).
    pool: Name | None = None
    fraction: Unit = 0.0
    # Only requests routed to these pools are mirrored (empty: every pool but `pool`).
    from_pools: tuple[Name, ...] = ()
    # Envoy's internal listener the mirrored copies pass through, so the router sees the
    # shadow's answer too; `render-envoy` writes it. Loopback only.
    listen: ListenAddress = ListenAddress(port=8091)
    # JSON lines, one per answer (primary and shadow), joined by decision id; "-" for stdout.
    log_path: str = "shadow.jsonl"
    # A secret shared by the routers, so any of them accepts a copy another one sent (the
    # shadow listener refuses copies without a valid token). None: a random key per router,
    # enough for one router.
    key_file: Path | None = None


class PolicySettings(Frozen):
    """One arm of an A/B split: the config's routing with `routing`'s keys replaced."""

    name: Name
    weight: float = Field(gt=0)
    # Keys of the `routing` section this policy sets differently (e.g. confidence_threshold,
    # weights, keyword_rules); validated as a whole routing section.
    routing: dict[str, Any] = {}


class ExperimentSettings(Frozen):
    """Weighted splits between decision policies, sticky per user: the same `sticky_header`
    value always gets the same policy (a request without it: its decision id decides)."""

    # Empty: no experiment; every request is decided by the config's own routing.
    policies: tuple[PolicySettings, ...] = ()
    sticky_header: str = "x-user-id"
    # Changing it reshuffles who gets which policy.
    salt: str = ""

    @field_validator("sticky_header")
    @classmethod
    def _lowercase_header(cls, value: str) -> str:
        return header_name(value, "x-user-id")
