"""The model pools: their endpoints, prices, queue limits, circuit breakers and the names they
answer to."""

from __future__ import annotations

from typing import Annotated

from pydantic import (
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from extproc_router.settings.base import (
    Frozen,
    ModelName,
    Name,
    Tier,
    host_ports,
)

__all__ = [
    "CircuitBreakerSettings",
    "DemoCapacity",
    "PoolLoadSettings",
    "PoolSettings",
    "Price",
    "failover_cluster",
]


class Price(Frozen):
    """US dollars per 1,000 tokens."""

    input_per_1k: float = Field(default=0.0, ge=0)
    output_per_1k: float = Field(default=0.0, ge=0)


class PoolLoadSettings(Frozen):
    """How the router reads a pool's load (`routing.load`) and what it tolerates: vLLM's queue
    (`vllm:num_requests_waiting`, per endpoint, averaged over the endpoints that answer)."""

    # The Prometheus path on each endpoint (vLLM serves it on the API port). None: not polled,
    # so the router never penalises nor skips the pool (Envoy's breakers still apply).
    metrics_path: Annotated[str, StringConstraints(pattern=r"^/")] | None = "/metrics"
    # Above this many waiting requests the pool's score is penalised, more the nearer it gets
    # to the hard limit; at or above the hard limit it is skipped.
    soft_waiting: int = Field(default=8, ge=0)
    hard_waiting: int = Field(default=32, ge=1)

    @model_validator(mode="after")
    def _soft_below_hard(self) -> PoolLoadSettings:
        if self.soft_waiting >= self.hard_waiting:
            raise ValueError("soft_waiting must be below hard_waiting")
        return self


class CircuitBreakerSettings(Frozen):
    """Envoy's circuit breaker for one pool cluster. Generations are long-lived: Envoy's
    defaults (1,024 requests, 3 concurrent retries) would turn a burst into 503s long before
    the model servers' queues are full, so the queue limits above do the shaping."""

    max_connections: int = Field(default=10_000, ge=1)
    max_pending_requests: int = Field(default=10_000, ge=1)
    max_requests: int = Field(default=10_000, ge=1)
    # Retries in flight may be at most this share of the requests in flight (at least
    # `min_retry_concurrency`): a pool that fails everything is not hammered twice over.
    retry_budget_percent: float = Field(default=20.0, gt=0, le=100)
    min_retry_concurrency: int = Field(default=3, ge=1)


class DemoCapacity(Frozen):
    """What the demo pools (`extproc-router demo-pools`) simulate for this pool; nothing else
    reads it. vLLM's batch size and decode speed, so load can be tested without a GPU."""

    # Requests served at once; more wait in a queue (`vllm:num_requests_waiting`). 0: no limit.
    max_running: int = Field(default=0, ge=0)
    # Time per output token (the demo answers with the prompt's words, one token each).
    token_ms: float = Field(default=0.0, ge=0, le=10_000)


def failover_cluster(pool: str, fallback: str) -> str:
    """Envoy's name for the cluster that sends to `pool` and fails over to `fallback` (`~` is
    not allowed in a pool name, so it never collides with one)."""
    return f"{pool}~{fallback}"


class PoolSettings(Frozen):
    """A pool of identical model servers; Envoy load-balances across its endpoints."""

    name: Name
    model: ModelName
    aliases: tuple[ModelName, ...] = ()
    # Other pools' model names this pool's servers also answer to (vLLM: more names after
    # `--served-model-name`), never routed to by name. A request routed to such a pool may
    # fail over here inside Envoy: the retry of one that pool dropped mid-flight, or all of
    # its traffic while Envoy sees none of its endpoints healthy.
    accepts: tuple[ModelName, ...] = ()
    endpoints: tuple[str, ...] = Field(min_length=1)
    # The hardest requests this pool answers well; the vote prefers the cheapest pool that fits.
    tier: Tier = "moderate"
    # May receive personal data (e.g. a HIPAA-covered deployment): PII policy `route` sends
    # requests carrying PII only to pools marked so.
    compliant: bool = False
    # What its tokens cost: `llm_cost_usd_total` and, against the baseline, the savings.
    price: Price = Price()
    load: PoolLoadSettings = PoolLoadSettings()
    circuit_breaker: CircuitBreakerSettings = CircuitBreakerSettings()
    demo: DemoCapacity = DemoCapacity()
    # Its typical time to a whole answer, in seconds: what `extproc-router replay` expects a
    # request routed here to take (the router never measures against it).
    latency_s: float | None = Field(default=None, gt=0)

    @field_validator("endpoints")
    @classmethod
    def _host_port(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return host_ports(value)

    @property
    def served_models(self) -> tuple[str, ...]:
        return (self.model, *self.aliases)
