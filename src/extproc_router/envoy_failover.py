"""What failover between pools adds to the rendered Envoy config: one aggregate cluster per
(pool, fallback) pair the config allows, and a retry priority that sends a request's last retry
to the fallback.

The router picks the pool and, per request, whether a fallback may take it (same PII policy,
allowed by the domain floor, not full); Envoy acts on that choice where the router cannot: a
request the pool dropped mid-flight is retried on the fallback, and a pool Envoy sees no
healthy endpoint in loses its traffic to the fallback before the router's next poll notices.
The fallback answers to the pool's model name (`pools[].accepts`): the body is not rewritten
again on the way there.
"""

from __future__ import annotations

from typing import Any

from extproc_router.settings import CircuitBreakerSettings, Settings, failover_cluster

__all__ = ["circuit_breakers", "failover_clusters", "retry_priority"]

_TYPE = "type.googleapis.com/"
_AGGREGATE = "envoy.extensions.clusters.aggregate.v3.ClusterConfig"
_PREVIOUS_PRIORITIES = (
    "envoy.extensions.retry.priority.previous_priorities.v3.PreviousPrioritiesConfig"
)


def circuit_breakers(breaker: CircuitBreakerSettings) -> dict[str, Any]:
    """Per cluster. Retries are bounded by a budget (a share of the requests in flight)
    rather than Envoy's default of 3 at once."""
    return {
        "thresholds": [
            {
                "max_connections": breaker.max_connections,
                "max_pending_requests": breaker.max_pending_requests,
                "max_requests": breaker.max_requests,
                "retry_budget": {
                    "budget_percent": {"value": breaker.retry_budget_percent},
                    "min_retry_concurrency": breaker.min_retry_concurrency,
                },
            }
        ]
    }


def failover_clusters(settings: Settings) -> list[dict[str, Any]]:
    """An aggregate cluster per pair: the pool's endpoints first, the fallback's as the next
    priority. Retries are counted against the aggregate, so it carries the pool's breaker."""
    return [
        {
            "name": failover_cluster(pool.name, fallback.name),
            "connect_timeout": "2s",
            "lb_policy": "CLUSTER_PROVIDED",
            "cluster_type": {
                "name": "envoy.clusters.aggregate",
                "typed_config": {
                    "@type": _TYPE + _AGGREGATE,
                    "clusters": [pool.name, fallback.name],
                },
            },
            "circuit_breakers": circuit_breakers(pool.circuit_breaker),
        }
        for pool, fallback in settings.failover_pairs()
    ]


def retry_priority(settings: Settings) -> dict[str, Any]:
    """Every attempt but the last stays on the first priority (the pool: another endpoint of
    it, when it has one); the last goes to the next (the fallback). Single-pool clusters have
    one priority, where this changes nothing."""
    retries = settings.envoy.retries
    if not settings.failover_pairs() or retries.num_retries == 0:
        return {}
    return {
        "retry_priority": {
            "name": "envoy.retry_priorities.previous_priorities",
            "typed_config": {
                "@type": _TYPE + _PREVIOUS_PRIORITIES,
                "update_frequency": retries.num_retries,
            },
        }
    }
