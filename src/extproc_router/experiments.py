"""A/B splits between decision policies: e.g. 90% of users on the current routing, 10% on a
candidate, each user on the same policy every time (sticky by a user or session header), so a
user's experience stays consistent and per-policy outcomes can be compared.

Each policy is a whole `Pipeline` over the config with that policy's routing; they share the
models, the safety checks, the audit log, the cache and shadow routing. The chosen policy's
name goes to the pool and the client (`x-router-policy`), to the metrics
(`routing_policy_requests_total{policy}`, names from the config only) and to the trace
(`router.policy`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from prometheus_client import Counter

from extproc_router.models import Models
from extproc_router.pipeline import Pipeline
from extproc_router.routing import Router
from extproc_router.settings import ExperimentSettings, Settings

__all__ = ["POLICY_REQUESTS", "Experiments", "choose"]

POLICY_REQUESTS = Counter(
    "routing_policy_requests",
    "Requests decided by each A/B policy (`experiments.policies`).",
    ["policy"],
)


def choose(experiments: ExperimentSettings, key: str) -> str:
    """The policy for `key` (a user id): a stable point in [0, 1) against the weights."""
    digest = hashlib.sha256(f"{experiments.salt}\0{key}".encode()).hexdigest()
    point = int(digest[:12], 16) / 16**12
    total = sum(policy.weight for policy in experiments.policies)
    upto = 0.0
    for policy in experiments.policies:
        upto += policy.weight / total
        if point < upto:
            return policy.name
    return experiments.policies[-1].name


class Experiments:
    """The pipelines of one config's policies; empty when it runs no experiment."""

    def __init__(self, settings: Settings, models: Models | None, base: Pipeline) -> None:
        self.settings = settings.experiments
        self.pipelines: dict[str, Pipeline] = {
            policy.name: Pipeline(
                Router(settings.for_policy(policy.name), models),
                base.safety,
                base.audit,
                base.load,
                cache=base.cache,
                shadow=base.shadow,
            )
            for policy in settings.experiments.policies
        }
        self._base = base

    def pipeline_for(self, headers: Mapping[str, str]) -> tuple[str, Pipeline]:
        """("", the config's own pipeline) when no experiment runs."""
        if not self.pipelines:
            return "", self._base
        key = headers.get(self.settings.sticky_header) or headers.get("x-request-id", "")
        name = choose(self.settings, key)
        POLICY_REQUESTS.labels(policy=name).inc()
        return name, self.pipelines[name]
