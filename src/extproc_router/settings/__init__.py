"""The router's configuration: one YAML file, validated in one place.

Every other module receives a frozen `Settings`; none reads files or the environment. A bad file
fails with one `ConfigError` that lists every problem, each named by its dotted key and the file,
so an operator fixes them all in one pass.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    Field,
    ValidationError,
    model_validator,
)

from extproc_router.exceptions import ConfigError
from extproc_router.settings.base import (
    DOMAINS,
    PREFERENCES,
    SIGNALS,
    TIERS,
    Frozen,
    ModelName,
    Name,
    Phrase,
    Port,
    Tier,
    Unit,
)
from extproc_router.settings.envoy import (
    EnvoySettings,
    GuardedRoute,
    ListenAddress,
    OnError,
    OnErrorSettings,
    OutlierSettings,
    RetrySettings,
    ServerSettings,
    TLSSettings,
)
from extproc_router.settings.pools import (
    CircuitBreakerSettings,
    DemoCapacity,
    PoolLoadSettings,
    PoolSettings,
    Price,
    failover_cluster,
)
from extproc_router.settings.routing import (
    ComplexitySettings,
    DomainSettings,
    EmbeddingRoute,
    KeywordRule,
    ModelSettings,
    RoutingSettings,
)
from extproc_router.settings.safety import (
    PII_KINDS,
    AuditSettings,
    JailbreakSettings,
    PIIAction,
    PIISettings,
    SafetySettings,
)
from extproc_router.settings.traffic import (
    BaselinePrice,
    CacheRoute,
    CacheSettings,
    ExperimentSettings,
    LoadSettings,
    PolicySettings,
    ShadowSettings,
    TelemetrySettings,
    TracingSettings,
)

__all__ = [
    "DOMAINS",
    "EXAMPLE_CONFIG",
    "PII_KINDS",
    "PREFERENCES",
    "SIGNALS",
    "TIERS",
    "AuditSettings",
    "BaselinePrice",
    "CacheRoute",
    "CacheSettings",
    "CircuitBreakerSettings",
    "ComplexitySettings",
    "DemoCapacity",
    "DomainSettings",
    "EmbeddingRoute",
    "EnvoySettings",
    "ExperimentSettings",
    "GuardedRoute",
    "JailbreakSettings",
    "KeywordRule",
    "ListenAddress",
    "LoadSettings",
    "ModelName",
    "ModelSettings",
    "Name",
    "OnError",
    "OnErrorSettings",
    "OutlierSettings",
    "PIIAction",
    "PIISettings",
    "Phrase",
    "PolicySettings",
    "PoolLoadSettings",
    "PoolSettings",
    "Port",
    "Price",
    "RetrySettings",
    "RoutingSettings",
    "SafetySettings",
    "ServerSettings",
    "Settings",
    "ShadowSettings",
    "TLSSettings",
    "TelemetrySettings",
    "Tier",
    "TracingSettings",
    "Unit",
    "failover_cluster",
    "load_settings",
    "override",
    "parse_settings",
]

EXAMPLE_CONFIG = Path(__file__).parent.parent / "example.yaml"


class Settings(Frozen):
    server: ServerSettings = ServerSettings()
    envoy: EnvoySettings = EnvoySettings()
    model: ModelSettings = ModelSettings()
    pools: tuple[PoolSettings, ...] = Field(min_length=1)
    routing: RoutingSettings
    safety: SafetySettings = SafetySettings()
    telemetry: TelemetrySettings = TelemetrySettings()
    on_error: OnErrorSettings = OnErrorSettings()
    load: LoadSettings = LoadSettings()
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    cache: CacheSettings = CacheSettings()
    shadow: ShadowSettings = ShadowSettings()
    experiments: ExperimentSettings = ExperimentSettings()

    @model_validator(mode="after")
    def _cross_references(self) -> Settings:
        problems = _reference_problems(self) + _traffic_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def pool(self, name: str) -> PoolSettings:
        for pool in self.pools:
            if pool.name == name:
                return pool
        raise KeyError(name)

    def failover_pairs(self) -> list[tuple[PoolSettings, PoolSettings]]:
        """(pool, fallback) for every pool another one `accepts` the model name of: Envoy
        has a cluster for each pair, the router names it when both may take the request."""
        return [
            (pool, other)
            for pool in self.pools
            for other in self.pools
            if other is not pool and pool.model in other.accepts
        ]

    def for_policy(self, name: str) -> Settings:
        """These settings with an experiment policy's routing; raises KeyError for no policy."""
        policy = next(p for p in self.experiments.policies if p.name == name)
        routing = RoutingSettings.model_validate(
            {**self.routing.model_dump(mode="json"), **policy.routing}
        )
        return self.model_copy(update={"routing": routing})

    @property
    def request_budget_s(self) -> float:
        budget = self.server.request_budget_ms
        return (budget if budget is not None else self.envoy.message_timeout_ms * 0.6) / 1000

    @property
    def fallback_pool(self) -> PoolSettings:
        return self.pool(self.routing.fallback_pool or self.routing.default_pool)

    @property
    def baseline_price(self) -> BaselinePrice:
        if self.telemetry.baseline is not None:
            return self.telemetry.baseline
        priciest = max(self.pools, key=lambda p: p.price.input_per_1k + p.price.output_per_1k)
        return BaselinePrice(
            model=priciest.model, latency_s=priciest.latency_s, **priciest.price.model_dump()
        )


def _reference_problems(settings: Settings) -> list[str]:
    """Every name that points at a pool or tier must exist; served names must not collide."""
    problems: list[str] = []
    names = [pool.name for pool in settings.pools]
    for name in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"pools: the name {name!r} is used twice")
    owner: dict[str, str] = {}
    for pool in settings.pools:
        for model in pool.served_models:
            if model in owner and owner[model] != pool.name:
                problems.append(
                    f"pools.{pool.name}: model {model!r} is also served by {owner[model]!r}"
                )
            owner.setdefault(model, pool.name)
    written = {pool.model: pool.name for pool in settings.pools}
    for pool in settings.pools:
        for model in pool.accepts:
            if written.get(model, pool.name) == pool.name:
                problems.append(f"pools.{pool.name}.accepts: {model!r} is not another pool's model")
    routing = settings.routing
    for alias in routing.auto_models:
        if alias in owner:
            problems.append(f"routing.auto_models: {alias!r} is a served model name")
    for key, pool_name in (
        ("default_pool", routing.default_pool),
        ("fallback_pool", routing.fallback_pool),
    ):
        if pool_name is not None and pool_name not in names:
            problems.append(f"routing.{key}: no pool named {pool_name!r}")
    targets = {*names, *TIERS}
    checked = [
        *(f"keyword_rules.{i}.target" for i in range(len(routing.keyword_rules))),
        *(f"embedding_routes.{i}.target" for i in range(len(routing.embedding_routes))),
        *(f"preferences.{name}" for name in routing.preferences),
    ]
    values = [
        *(rule.target for rule in routing.keyword_rules),
        *(route.target for route in routing.embedding_routes),
        *routing.preferences.values(),
    ]
    for key, target in zip(checked, values, strict=True):
        if target not in targets:
            problems.append(f"routing.{key}: {target!r} is neither a pool nor a tier")
    for pool_name in routing.domains.capabilities:
        if pool_name not in names:
            problems.append(f"routing.domains.capabilities: no pool named {pool_name!r}")
    safety = settings.safety
    if safety.jailbreak.route_pool is not None and safety.jailbreak.route_pool not in names:
        problems.append(
            f"safety.jailbreak.route_pool: no pool named {safety.jailbreak.route_pool!r}"
        )
    for pool_name in safety.pii.pool_actions:
        if pool_name not in names:
            problems.append(f"safety.pii.pool_actions: no pool named {pool_name!r}")
    routes_pii = "route" in {
        safety.pii.default_action,
        *safety.pii.actions.values(),
        *(a for t in safety.pii.pool_actions.values() for a in t.values()),
    }
    if routes_pii and not any(pool.compliant for pool in settings.pools):
        problems.append("safety.pii: action 'route' needs a pool marked compliant: true")
    budget = settings.server.request_budget_ms
    if budget is not None and budget >= settings.envoy.message_timeout_ms:
        problems.append(
            "server.request_budget_ms: must be below envoy.message_timeout_ms "
            f"({settings.envoy.message_timeout_ms}), or Envoy gives up on the router first"
        )
    return problems


def _traffic_problems(settings: Settings) -> list[str]:
    """Pools named by the cache, shadow and experiment sections must exist."""
    names = {pool.name for pool in settings.pools}
    problems = [
        f"cache.routes.{index}.pool: no pool named {route.pool!r}"
        for index, route in enumerate(settings.cache.routes)
        if route.pool not in names
    ]
    shadow = settings.shadow
    if shadow.pool is not None and shadow.pool not in names:
        problems.append(f"shadow.pool: no pool named {shadow.pool!r}")
    problems += [
        f"shadow.from_pools: no pool named {name!r}"
        for name in shadow.from_pools
        if name not in names
    ]
    problems += _policy_problems(settings)
    if shadow.pool is not None and shadow.listen.port in (
        settings.envoy.listen.port,
        settings.envoy.admin.port,
    ):
        problems.append("shadow.listen: the port is one of Envoy's own")
    return problems


def _policy_problems(settings: Settings) -> list[str]:
    """Each policy's routing must be a valid routing section for these pools."""
    policies = settings.experiments.policies
    problems = []
    names = [policy.name for policy in policies]
    for name in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"experiments.policies: the name {name!r} is used twice")
    for index, policy in enumerate(policies):
        key = f"experiments.policies.{index}.routing"
        try:
            variant = settings.for_policy(policy.name)
        except ValidationError as error:
            problems += [f"{key}.{line}" for line in _format_errors(error)]
            continue
        problems += [
            f"{key}: {problem.removeprefix('routing.')}"
            for problem in _reference_problems(variant)
            if problem.startswith("routing.")
        ]
    return problems


def _format_errors(error: ValidationError) -> list[str]:
    lines = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"{key}: {message}")
    return lines


def parse_settings(data: Any, *, source: str = "<config>") -> Settings:
    """Validate already-loaded YAML data; `source` names the file in errors."""
    if not isinstance(data, dict):
        raise ConfigError(source, ["(top level): expected a mapping of settings"])
    try:
        return Settings.model_validate(data)
    except ValidationError as error:
        raise ConfigError(source, _format_errors(error)) from None


def load_settings(path: str | Path | None = None) -> Settings:
    """Read and validate a YAML config; `None` means the embedded example config."""
    file = Path(path) if path is not None else EXAMPLE_CONFIG
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(str(file), [f"cannot read: {error}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(str(file), [f"invalid YAML: {error}"]) from None
    return parse_settings(data, source=str(file))


def override(settings: Settings, values: dict[str, Any], *, source: str = "overrides") -> Settings:
    """A copy with dotted keys replaced (`{"envoy.listen.port": 8081}`), validated again."""
    data = settings.model_dump(mode="json")
    for dotted, value in values.items():
        *parents, leaf = dotted.split(".")
        node: Any = data
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if isinstance(node, list):
            node[int(leaf)] = value
        else:
            node[leaf] = value
    return parse_settings(data, source=source)
